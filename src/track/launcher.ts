// Runs a command under the allocation tracker: limits in force before exec (RLIMIT_AS, RLIMIT_DATA, a
// memory cgroup), LD_PRELOAD and a private record directory set, output streamed, the process group
// killed on timeout, the cgroup always removed, and the records read back (they survive a SIGKILL).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Limits } from '../core/limits';
import { execHelper, preloadLibrary } from './binaries';
import { ChildCgroup, createChildCgroup, readChildCgroup, removeCgroup } from './cgroup';
import { ProgramKind, programKind } from './program';
import { AllocationRecord, finalRecordOf, listRecords, readRecord } from './record';
import { isUnknown, known } from '../core/field';
import { readProcessStatus } from '../probe/proc';

export interface TraceOptions {
  command: string[];
  limits?: Limits;
  /** Kill the child's whole process group after this long. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** CLIPMEM_FAIL fault injection, e.g. "malloc:nth=3" or "mmap:above=1048576". */
  failRule?: string;
  /** Called with the child's output as it comes (trace passes its own stdout/stderr). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Called while the child runs with its latest record (about every `pollMs`). */
  onRecord?: (record: AllocationRecord) => void;
  pollMs?: number;
}

export interface CgroupOutcome {
  version: 1 | 2;
  path: string;
  limit: number;
  /** OOM kills inside the group during the run. */
  oomKills: number | null;
  /** v1 memory.max_usage_in_bytes / v2 memory.peak. */
  peak: number | null;
  /** True once the group is removed (it always is; false only if removal failed, see removeError). */
  removed: boolean;
  removeError?: string;
}

export interface TraceRun {
  command: string[];
  limits: Limits;
  pid: number;
  exit: { code: number | null; signal: NodeJS.Signals | null };
  timedOut: boolean;
  /** The timeout it ran under, when one was set. */
  timeoutMs?: number;
  durationMs: number;
  /** The record of the program the child finally ran (after its execs); undefined if it never loaded the tracker. */
  record?: AllocationRecord;
  /** Records of forked or spawned descendants that loaded the tracker. */
  descendants: AllocationRecord[];
  program: ProgramKind;
  /** Why the child has no record, when it has none ("static binary", "never loaded the interposer"). */
  notTracked?: string;
  /** Set when the last tracked program exec'd something the interposer did not enter (or left by _exit). */
  lostTrack?: string;
  cgroup?: CgroupOutcome;
  /**
   * The child's RSS and VmSize as last read from outside (/proc/PID/statm every 100 ms): pages touched
   * without an allocation call (e.g. filling a buffer) show here before a kill, not in the record.
   */
  lastSeen: { rss: number; vmSize: number; atMs: number } | null;
  /** Kernel OOM kills anywhere on the host during the run (/proc/vmstat oom_kill). */
  hostOomKills: number | null;
  /** Last 64 KiB of the child's stderr and stdout, for the diagnosis. */
  stderrTail: string;
  stdoutTail: string;
}

const tailBytes = 64 * 1024;

function hostOomKillCount(): number | null {
  try {
    const match = /^oom_kill (\d+)$/m.exec(fs.readFileSync('/proc/vmstat', 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

function appendTail(tail: Buffer, chunk: Buffer): Buffer {
  const joined = Buffer.concat([tail, chunk]);
  return joined.length > tailBytes ? joined.subarray(joined.length - tailBytes) : joined;
}

function readAll(dir: string): AllocationRecord[] {
  const records: AllocationRecord[] = [];
  for (const entry of listRecords(dir)) {
    try {
      records.push(readRecord(entry.file));
    } catch {
      // a record the process was still creating when it died: nothing in it
    }
  }
  return records;
}

export async function traceCommand(options: TraceOptions): Promise<TraceRun> {
  const [command, ...args] = options.command;
  if (!command) throw new Error('trace: no command given (write it after --, e.g. clip-mem trace -- node app.js)');
  const limits = options.limits ?? {};
  const program = programKind(command);
  const helper = execHelper();
  const preload = preloadLibrary();
  const recordDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipmem-record-')); // 0700, ours alone
  let cgroup: ChildCgroup | undefined;
  let outcome: CgroupOutcome | undefined;
  const helperArgs: string[] = ['--preload', preload];
  if (limits.as !== undefined) helperArgs.push('--as', String(limits.as));
  if (limits.data !== undefined) helperArgs.push('--data', String(limits.data));
  try {
    if (limits.mem !== undefined) {
      cgroup = createChildCgroup(limits.mem);
      helperArgs.push('--cgroup-procs', cgroup.procsFile);
    }
    const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env), CLIPMEM_RECORD_DIR: recordDir };
    if (options.failRule) env.CLIPMEM_FAIL = options.failRule;
    else delete env.CLIPMEM_FAIL;
    const hostOomBefore = hostOomKillCount();
    const started = Date.now();
    const child = spawn(helper, [...helperArgs, '--', command, ...args], {
      cwd: options.cwd,
      env,
      stdio: ['inherit', 'pipe', 'pipe'],
      detached: true, // its own process group, so that a timeout kills every descendant
    });
    let stdoutTail: Buffer = Buffer.alloc(0);
    let stderrTail: Buffer = Buffer.alloc(0);
    child.stdout!.on('data', (chunk: Buffer) => {
      stdoutTail = appendTail(stdoutTail, chunk);
      options.onStdout?.(chunk);
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      stderrTail = appendTail(stderrTail, chunk);
      options.onStderr?.(chunk);
    });
    let timedOut = false;
    const timer =
      options.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            try {
              process.kill(-child.pid!, 'SIGKILL');
            } catch {
              // already gone
            }
          }, options.timeoutMs)
        : undefined;
    let lastSeen: TraceRun['lastSeen'] = null;
    const watcher = setInterval(() => {
      // In kB, whatever the page size; unknown once the child has exited.
      const status = readProcessStatus(`/proc/${child.pid}/status`);
      if (!isUnknown(status.vmSize) && !isUnknown(status.vmRss) && status.vmSize > 0) {
        lastSeen = { rss: status.vmRss, vmSize: status.vmSize, atMs: Date.now() - started };
      }
    }, 100);
    const poller = options.onRecord
      ? setInterval(() => {
          const file = finalRecordOf(recordDir, child.pid!);
          if (!file) return;
          try {
            options.onRecord!(readRecord(file));
          } catch {
            // being created
          }
        }, options.pollMs ?? 500)
      : undefined;
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    if (timer) clearTimeout(timer);
    if (poller) clearInterval(poller);
    clearInterval(watcher);
    const durationMs = Date.now() - started;
    const hostOomAfter = hostOomKillCount();

    const all = readAll(recordDir);
    const rootFile = finalRecordOf(recordDir, child.pid!);
    const record = all.find((r) => r.path === rootFile);
    const descendants = all.filter((r) => r.pid !== child.pid);
    let notTracked: string | undefined;
    if (!record) {
      if (program.kind === 'static') {
        notTracked = `${program.file} is statically linked: it never reads LD_PRELOAD, so its allocations cannot be tracked`;
      } else if (program.kind === 'not-found') {
        notTracked = `${command} was not found`;
      } else if (exit.code === 126 || exit.code === 127) {
        notTracked = `${command} could not be started (exit ${exit.code})`;
      } else {
        notTracked =
          `${program.file} never loaded the interposer (no record was written): it cleared LD_PRELOAD, ` +
          'is setuid, or was killed before its first allocation';
      }
    }

    // A normal exit without the tracker's exit handler: the tracked image was replaced by exec.
    const lostTrack =
      record && record.state === 'running' && exit.signal === null
        ? `${record.exe} never reached its exit handlers: it exec'd a program that did not load the interposer ` +
          '(a static binary, or LD_PRELOAD cleared), or left through _exit; what ran after that is not tracked'
        : undefined;
    if (cgroup) {
      const figures = readChildCgroup(cgroup);
      outcome = {
        version: cgroup.version,
        path: cgroup.path,
        limit: cgroup.limit,
        oomKills: known(figures.oomKills) ?? null,
        peak: known(figures.peak) ?? null,
        removed: false,
      };
    }
    return {
      command: options.command,
      limits,
      pid: child.pid!,
      exit,
      timedOut,
      timeoutMs: options.timeoutMs,
      durationMs,
      record,
      descendants,
      program,
      notTracked,
      lostTrack,
      cgroup: outcome,
      lastSeen,
      hostOomKills: hostOomBefore !== null && hostOomAfter !== null ? hostOomAfter - hostOomBefore : null,
      stderrTail: stderrTail.toString('utf8'),
      stdoutTail: stdoutTail.toString('utf8'),
    };
  } finally {
    fs.rmSync(recordDir, { recursive: true, force: true });
    if (cgroup) {
      try {
        removeCgroup(cgroup.directory);
        if (outcome) outcome.removed = true;
      } catch (error) {
        if (outcome) outcome.removeError = (error as Error).message;
        // No outcome means the run itself failed before it: that error is lost, and this one says why the
        // cgroup is still there, which the user must know to remove it.
        // eslint-disable-next-line no-unsafe-finally
        else throw error;
      }
    }
  }
}
