// Runs a command under the allocation tracker: limits in force before exec (RLIMIT_AS, RLIMIT_DATA, a
// memory cgroup), LD_PRELOAD and a private record directory set, output streamed, the process group
// killed on timeout, the cgroup always removed, and the records read back (they survive a SIGKILL).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Limits } from '../core/limits';
import { formatBytes } from '../core/units';
import { execHelper, preloadLibrary } from './binaries';
import { ChildCgroup, createChildCgroup, readChildCgroup, removeCgroup } from './cgroup';
import { ProgramKind, programKind } from './program';
import { AllocationRecord, finalRecordOf, listRecords, readRecord, recordBytes } from './record';
import { describeError, known } from '../core/field';
import { inHostPidNamespace, kernelLogCursor, oomKillsSince } from './kernel-log';
import {
  pageCacheBytes,
  readSharedMemory,
  userspaceOomKillers,
  type OomKillerProcess,
  type SharedMemoryWatch,
} from '../probe/proc';
import { killedOrTerminated } from '../core/ending';
import {
  readCgroups,
  readTaskCgroup,
  rereadCgroup,
  type LimitedGroupKills,
  type MemoryCgroup,
  type TaskCgroup,
  type TaskLimit,
} from '../probe/cgroup';
import { RecordSpace } from './record-space';
import {
  adoptOrphans,
  carriesMark,
  ProcessTreeWatch,
  runMark,
  type TreeSample,
  type WatchedProcess,
} from './process-tree';
import { SlurmStepOutcome, slurmOutcome, watchSlurmJob } from './slurm';
import { isAlive, staleEntries } from './stale';

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

/** A process the kernel's OOM killer killed during the run, inside the run's cgroup or of the run's tree. */
export interface OomKilledProcess {
  pid: number;
  /** Its name as the kernel logged it (comm), and its executable when a record of that pid names it. */
  comm: string;
  exe?: string;
  /** True: the traced command's own process; false: another one; null: not known (a pid namespace hides it). */
  main: boolean | null;
  /** The cgroup whose limit the kill enforced ('' when the kernel did not say, e.g. a host-wide OOM). */
  cgroup: string;
  /** True for a kill at a memory cgroup's limit ("Memory cgroup out of memory"), false for the host's. */
  cgroupLimit: boolean;
  /** Resident bytes when killed (anon + file + shmem RSS, as the kernel logged them). */
  rss: number | null;
  /** Where this came from. */
  source: 'kernel log';
}

/** A process that was still running when the command's own process had ended (a daemon, a background job). */
export interface OutlivedProcess {
  pid: number;
  exe: string;
  /** Its command line (NULs as spaces). */
  command: string;
  /** What became of it: still running, or killed when clip-mem removed the run's cgroup. */
  fate: 'still running' | 'killed with the cgroup';
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
  /** Set when the last tracked program exec'd something the interposer did not enter. */
  lostTrack?: string;
  cgroup?: CgroupOutcome;
  /** Set when the run was inside a Slurm job: its request and what its memory cgroup saw. */
  slurm?: SlurmStepOutcome;
  /**
   * The child's RSS and VmSize as last read from outside (/proc/PID/statm every 100 ms): pages touched
   * without an allocation call (e.g. filling a buffer) show here before a kill, not in the record.
   */
  lastSeen: { rss: number; vmSize: number; atMs: number } | null;
  /** Kernel OOM kills anywhere on the host during the run (/proc/vmstat oom_kill). */
  hostOomKills: number | null;
  /**
   * The memory cgroups with a limit that clip-mem itself runs in (a container's, a service's, a Slurm
   * job's), the run's own excepted: each holds the run too. `oomKills`: the kills each counted during the
   * run (null: not read), the word of a kill where the kernel log cannot be read (a container).
   */
  memoryCgroups: LimitedGroupKills[];
  /**
   * /dev/shm (a tmpfs): its size and the most of it in use at the start and at any read during the run
   * (every SHARED_MEMORY_READ_MS); null where it is not a tmpfs. A write past its size kills the writer (SIGBUS).
   */
  sharedMemory: SharedMemoryWatch | null;
  /**
   * User-space OOM killers running at the end (earlyoom, systemd-oomd), looked for only when the command was
   * killed or terminated: they kill by signal, unseen by the kernel's counters.
   */
  userspaceOomKillers: OomKillerProcess[];
  /** The pids cgroup the run was in (null: none shows), and the new tasks its limit refused during the run. */
  tasks: TaskLimit | null;
  /**
   * The processes the kernel log (/dev/kmsg) says its OOM killer killed during the run, in the run's cgroup
   * or with a pid of the run; empty when none or when the log could not be read (then kernelLog says why).
   */
  oomKilled: OomKilledProcess[];
  /** Why the kernel log could not be read, when it could not. */
  kernelLog?: string;
  /**
   * Descendants whose record ends without a clean exit and that were gone at the end: killed (by whom is
   * not in the record), or replaced by an exec of an untracked program. Named as possible OOM victims
   * when the kernel log cannot say.
   */
  endedUnclean: { pid: number; exe: string }[];
  /** Set when clip-mem itself was told to stop (SIGINT, SIGTERM, SIGHUP) and killed the process group. */
  stoppedBy?: NodeJS.Signals;
  /** Processes of the run still alive when the command's own process had ended. */
  outlived: OutlivedProcess[];
  /**
   * Every process of the tree seen from outside (/proc every 100 ms, the command's own included): parent,
   * command line, RSS and VmSize over time. A process shorter than a poll may be missing (its record is not).
   */
  watched: WatchedProcess[];
  /** The tree's summed RSS over time (each poll's processes), and its highest. */
  treeRss: { timeline: TreeSample[]; peak: TreeSample | null };
  /** The record files' pages in the page cache at the end (the pages the tracker wrote); null: not read. */
  recordsPageCache: number | null;
  /** The most disk the record files held at once (each reserves 4 MiB while its process runs); null: no records. */
  recordsDiskPeak: number | null;
  /** The processes alive when clip-mem killed the process group (--timeout, or a signal to clip-mem). */
  killedByClipMem: number[];
  /** CLOCK_MONOTONIC nanoseconds at the start (the records' clock), to place records on the run's time. */
  startNs: number;
  /** Set when the record directory could not be removed: what is left, and why. */
  recordDirLeft?: string;
  /** Last 64 KiB of the child's stderr and stdout, for the diagnosis. */
  stderrTail: string;
  stdoutTail: string;
}

const tailBytes = 64 * 1024;
/** How often /dev/shm's use is read while the command runs. */
const SHARED_MEMORY_READ_MS = 5;

/** The OOM kills a memory cgroup counted between two reads of it; null where either read failed. */
function cgroupOomKillsSince(before: MemoryCgroup, after: MemoryCgroup): number | null {
  return typeof before.oomKills === 'number' && typeof after.oomKills === 'number'
    ? after.oomKills - before.oomKills
    : null;
}

/** The refusals counted during the run: the largest increase of any group on the chain (each counts them once). */
function taskLimitOutcome(before: TaskCgroup | null, after: TaskCgroup | null): TaskLimit | null {
  if (!before || !after) return null;
  let refused = 0;
  for (const [directory, count] of after.refusals) {
    const earlier = before.refusals.get(directory);
    if (earlier !== undefined) refused = Math.max(refused, count - earlier);
  }
  return { cgroup: after.path, limit: after.limit, limitedAt: after.limitedAt, refused };
}

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

function readAll(dir: string | undefined): AllocationRecord[] {
  const records: AllocationRecord[] = [];
  if (dir === undefined) return records;
  for (const entry of listRecords(dir)) {
    try {
      records.push(readRecord(entry.file));
    } catch {
      // a record the process was still creating when it died: nothing in it
    }
  }
  return records;
}

/** fs.watch of a directory, or undefined where the kernel refuses one (inotify limits): polling still runs. */
function watchDirectory(dir: string, onChange: () => void): fs.FSWatcher | undefined {
  try {
    return fs.watch(dir, onChange);
  } catch {
    return undefined;
  }
}

/** The page cache the record files hold: charged to the run's memory cgroup with the rest of its file pages. */
function recordPageCache(dir: string): number | null {
  let total = 0;
  for (const entry of listRecords(dir)) {
    const bytes = pageCacheBytes(entry.file);
    if (bytes === null) return null;
    total += bytes;
  }
  return total;
}

/** The children of every traceCommand in flight, so that a signal to clip-mem can stop them (stopTraces). */
const inFlight = new Map<number, (signal: NodeJS.Signals) => void>();

/**
 * Stops every traced command in flight, as clip-mem's own SIGINT, SIGTERM or SIGHUP handlers do: each
 * child's process group is killed, and its traceCommand returns with `stoppedBy` set, so that the caller
 * still reports what ran so far and the cgroup and record directory are removed. Returns how many.
 */
export function stopTraces(signal: NodeJS.Signals): number {
  stopRequested ??= signal; // a command about to start is stopped as soon as it has a process group
  for (const stop of inFlight.values()) stop(signal);
  return inFlight.size;
}

let stopRequested: NodeJS.Signals | undefined;

/** The signal stopTraces was called for, if any: a loop of runs (run, fit, estimate) ends at its next check. */
export function stopSignal(): NodeJS.Signals | undefined {
  return stopRequested;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Record directories are named after the clip-mem that made them, so that the next run removes a killed one's. */
const recordDirPattern = /^clipmem-record-(\d+)-/;

/** Removes record directories in `tmp` left by clip-mem runs that were killed; returns them. */
export function removeStaleRecordDirs(tmp = os.tmpdir()): string[] {
  const stale = staleEntries(tmp, recordDirPattern);
  for (const dir of stale) fs.rmSync(dir, { recursive: true, force: true });
  return stale;
}

function readLink(file: string): string {
  try {
    return fs.readlinkSync(file);
  } catch {
    return '?';
  }
}

function commandLineOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

/**
 * The processes of the run still alive: those whose environment names this run's record directory (they
 * inherited it, tracked or not) and those in the run's cgroup. A daemon that left the process group and
 * the session (setsid) is found either way.
 */
function survivors(recordDir: string | undefined, cgroup: ChildCgroup | undefined): number[] {
  const found = new Set<number>();
  if (recordDir !== undefined) {
    const mark = runMark(recordDir);
    let names: string[] = [];
    try {
      names = fs.readdirSync('/proc');
    } catch {
      // no /proc: nothing to find
    }
    for (const name of names) {
      if (/^\d+$/.test(name) && Number(name) !== process.pid && carriesMark(Number(name), mark))
        found.add(Number(name));
    }
  }
  if (cgroup) {
    for (const file of ['cgroup.procs', 'tasks']) {
      try {
        for (const pid of fs.readFileSync(path.join(cgroup.directory, file), 'utf8').split('\n').filter(Boolean))
          found.add(Number(pid));
      } catch {
        // v2 has no tasks file
      }
    }
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * Removes the record directory even while a process that outlived the command still creates records in
 * it: the directory is first renamed, so that the name those processes hold leads nowhere (their next
 * record cannot be created, and they run on untracked), then removed, retried while a record created
 * just before the rename lands. The files a living process has mapped are freed when it exits.
 */
function removeRecordDir(dir: string): string | undefined {
  let target = dir;
  try {
    const retired = `${dir}-done`;
    fs.renameSync(dir, retired);
    target = retired;
  } catch {
    // remove it where it is
  }
  try {
    fs.rmSync(target, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
    return undefined;
  } catch (error) {
    return `the record directory ${target} could not be removed (${describeError(error)}); remove it with rm -r`;
  }
}

/** What the tracker said on stderr when it could not create a record (lifecycle.cc), if it did. */
function recordProblem(stderr: string, pid: number): string | undefined {
  const lines = [
    ...stderr.matchAll(/^clip-mem tracker \(pid (\d+)\): (cannot (?:create|size|map) (?:a |the )?record.*)$/gm),
  ];
  const own = lines.find((m) => Number(m[1]) === pid) ?? lines[0];
  return own?.[2];
}

export async function traceCommand(options: TraceOptions): Promise<TraceRun> {
  const [command, ...args] = options.command;
  if (!command) throw new Error('trace: no command given (write it after --, e.g. clip-mem trace -- node app.js)');
  const limits = options.limits ?? {};
  const program = programKind(command);
  const helper = execHelper();
  const preload = preloadLibrary();
  // 0700, ours alone. Where it cannot be made (TMPDIR read-only, full, missing) the command still runs,
  // untracked, and the report says why.
  let recordDir: string | undefined;
  let recordDirProblem: string | undefined;
  try {
    removeStaleRecordDirs();
    recordDir = fs.mkdtempSync(path.join(os.tmpdir(), `clipmem-record-${process.pid}-`));
  } catch (error) {
    recordDirProblem =
      `clip-mem could not create its record directory in ${os.tmpdir()} (${describeError(error)}), so no ` +
      'allocation could be recorded; set TMPDIR to a writable directory with space';
  }
  let cgroup: ChildCgroup | undefined;
  let outcome: CgroupOutcome | undefined;
  let result: TraceRun | undefined;
  const helperArgs: string[] = ['--preload', preload];
  if (limits.as !== undefined) helperArgs.push('--as', String(limits.as));
  if (limits.data !== undefined) helperArgs.push('--data', String(limits.data));
  let childPid: number | undefined;
  try {
    if (limits.mem !== undefined) {
      cgroup = createChildCgroup(limits.mem);
      helperArgs.push('--cgroup-procs', cgroup.procsFile);
    }
    const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) };
    if (recordDir !== undefined) env.CLIPMEM_RECORD_DIR = recordDir;
    else delete env.CLIPMEM_RECORD_DIR; // the interposer then forwards every call and records nothing
    if (options.failRule) env.CLIPMEM_FAIL = options.failRule;
    else delete env.CLIPMEM_FAIL;
    const slurmWatch = watchSlurmJob(env);
    const hostOomBefore = hostOomKillCount();
    const tasksBefore = readTaskCgroup();
    const limitedGroups = readCgroups()
      .hierarchies.flatMap((h) => h.groups)
      .filter((g): g is MemoryCgroup & { limit: number } => typeof g.limit === 'number');
    const kernelBefore = kernelLogCursor();
    const started = Date.now();
    const startNs = process.hrtime.bigint();
    adoptOrphans();
    const child = spawn(helper, [...helperArgs, '--', command, ...args], {
      cwd: options.cwd,
      env,
      stdio: ['inherit', 'pipe', 'pipe'],
      detached: true, // its own process group, so that a timeout kills every descendant
    });
    childPid = child.pid;
    const watch = new ProcessTreeWatch(
      child.pid ?? -1,
      startNs,
      cgroup?.directory,
      recordDir !== undefined ? runMark(recordDir) : undefined,
    );
    let killedByClipMem: number[] = [];
    // Who was alive when clip-mem killed the group: those it killed (a process that left the group lives on, in outlived).
    const killTree = () => {
      watch.poll();
      killedByClipMem = [...watch.alive];
      killGroup(child.pid!);
    };
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    let stoppedBy: NodeJS.Signals | undefined;
    if (child.pid !== undefined) {
      const stop = (signal: NodeJS.Signals) => {
        stoppedBy ??= signal;
        killTree();
      };
      inFlight.set(child.pid, stop);
      if (stopRequested) stop(stopRequested);
    }
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
            if (stoppedBy) return;
            timedOut = true;
            killTree();
          }, options.timeoutMs)
        : undefined;
    watch.poll();
    const space = recordDir !== undefined ? new RecordSpace(recordDir) : undefined;
    const shmAtStart = readSharedMemory();
    let shmPeak = shmAtStart?.used ?? 0;
    const readShm = () => (shmPeak = Math.max(shmPeak, readSharedMemory()?.used ?? 0));
    // A DataLoader worker that fills /dev/shm dies of it within milliseconds, and its pages go with it: a
    // read every 100 ms missed the full moment in 4 runs of 5, a read every 5 ms (one statfs) saw it in 8 of 8.
    const shmWatcher = shmAtStart ? setInterval(readShm, SHARED_MEMORY_READ_MS) : undefined;
    const watcher = setInterval(() => {
      watch.poll();
      space?.pass();
    }, 100);
    // A new record is a process started: a loop of short ones starts hundreds a second, so the space of
    // those that ended is given back at each, not only every 100 ms.
    let spacePass: NodeJS.Immediate | undefined;
    const recordEvents =
      space &&
      watchDirectory(
        recordDir!,
        () =>
          (spacePass ??= setImmediate(() => {
            spacePass = undefined;
            space.pass();
          })),
      );
    const poller =
      options.onRecord && recordDir !== undefined
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
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    // The rest of its output: the pipes close when the last process holding them ends. A process that
    // outlived the command (a daemon that kept them) is not waited for.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (grace = setTimeout(resolve, 1000)))]);
    clearTimeout(grace);
    clearInterval(watcher);
    clearInterval(shmWatcher);
    readShm();
    recordEvents?.close();
    if (spacePass) clearImmediate(spacePass);
    watch.poll();
    child.stdout!.destroy();
    child.stderr!.destroy();
    if (timer) clearTimeout(timer);
    if (poller) clearInterval(poller);
    const durationMs = Date.now() - started;
    const hostOomAfter = hostOomKillCount();
    const tasksAfter = readTaskCgroup();

    // Before reading them: the reader's own page faults would count.
    const recordsPageCache = recordDir === undefined ? null : recordPageCache(recordDir);
    space?.pass();
    const all = readAll(recordDir);
    const rootFile = recordDir !== undefined ? finalRecordOf(recordDir, child.pid!) : undefined;
    const record = all.find((r) => r.path === rootFile);
    const descendants = all.filter((r) => r.pid !== child.pid);
    const stderrText = stderrTail.toString('utf8');
    let notTracked: string | undefined;
    if (!record) {
      const problem = recordDir === undefined ? undefined : recordProblem(stderrText, child.pid!);
      const limitText = [
        limits.as !== undefined ? `RLIMIT_AS ${formatBytes(limits.as)}` : '',
        limits.data !== undefined ? `RLIMIT_DATA ${formatBytes(limits.data)}` : '',
      ]
        .filter(Boolean)
        .join(' and ');
      const preloadRefused = /libclipmem_preload\.so' from LD_PRELOAD cannot be preloaded \(([^)]*)\)/.exec(stderrText);
      if (recordDirProblem) {
        notTracked = recordDirProblem;
      } else if (preloadRefused) {
        notTracked =
          `the dynamic loader could not load clip-mem's tracker ("${preloadRefused[1]}")` +
          (limitText ? ` under ${limitText}: the limit leaves too little even for the tracker's library` : '') +
          ', so the program ran untracked; to trace it, raise the limit by a few MiB';
      } else if (problem && limitText && /Cannot allocate memory/.test(problem)) {
        notTracked =
          `no record could be written: the tracker said "${problem}": under ${limitText} there was no room for ` +
          `the tracker's ${formatBytes(recordBytes())} record, so no allocation could be recorded; to trace it, ` +
          `raise the limit by ${formatBytes(Math.ceil(recordBytes() / 2 ** 20 + 1) * 2 ** 20)}`;
      } else if (problem) {
        notTracked =
          `no record could be written: the tracker said "${problem}", so no allocation could be recorded; ` +
          `set TMPDIR to a writable directory with space (a record takes ${formatBytes(recordBytes())} per process)`;
      } else if (program.kind === 'static') {
        notTracked = `${program.file} is statically linked: it never reads LD_PRELOAD, so its allocations cannot be tracked`;
      } else if (program.kind === 'not-found') {
        notTracked = `${command} was not found`;
      } else if (exit.code === 126 || exit.code === 127) {
        notTracked = `${command} could not be started (exit ${exit.code})`;
      } else if (isSetuid(program.file)) {
        notTracked =
          `${program.file} is setuid or setgid: the dynamic loader ignores LD_PRELOAD for it, so its allocations ` +
          'cannot be tracked';
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
          '(a static binary, or LD_PRELOAD cleared); what ran after that is not tracked'
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

    // Who the OOM killer killed, in the kernel's words: kills in this run's cgroup, or of this run's pids.
    const pidsOfRun = new Set([child.pid!, ...all.map((r) => r.pid)]);
    const samePids = inHostPidNamespace();
    const logged = oomKillsSince(kernelBefore);
    const groupName = cgroup ? `/${path.basename(cgroup.directory)}` : undefined;
    const slurm = slurmWatch && slurmOutcome(slurmWatch);
    const jobGroup = slurm?.stepCgroup ?? slurm?.cgroup ?? undefined; // kills of this step only
    const oomKilled: OomKilledProcess[] = Array.isArray(logged)
      ? logged
          .filter(
            (kill) =>
              (groupName !== undefined && (kill.taskMemcg.endsWith(groupName) || kill.memcg.endsWith(groupName))) ||
              (jobGroup !== undefined && kill.taskMemcg.startsWith(`${jobGroup}/`)) ||
              (samePids && pidsOfRun.has(kill.pid)),
          )
          .map((kill) => ({
            pid: kill.pid,
            comm: kill.comm,
            exe: samePids ? [...all].reverse().find((r) => r.pid === kill.pid)?.exe : undefined,
            main: samePids ? kill.pid === child.pid : null,
            cgroup: kill.memcg,
            cgroupLimit: kill.cgroupLimit,
            rss: kill.rss,
            source: 'kernel log' as const,
          }))
      : [];

    // Processes still alive now that the command's own process has ended.
    const outlivedPids = survivors(recordDir, cgroup).filter((pid) => pid !== child.pid && isAlive(pid));
    const outlived: OutlivedProcess[] = outlivedPids.map((pid) => ({
      pid,
      exe: readLink(`/proc/${pid}/exe`),
      command: commandLineOf(pid),
      fate: cgroup ? 'killed with the cgroup' : 'still running',
    }));
    const endedUnclean = descendants
      .filter((r) => r.state === 'running' && finalRecordOf(recordDir!, r.pid) === r.path)
      .filter((r) => !outlivedPids.includes(r.pid))
      .map((r) => ({ pid: r.pid, exe: r.exe }));

    result = {
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
      ...(slurm ? { slurm } : {}),
      lastSeen: lastSeenOf(watch.processes.get(child.pid!)),
      hostOomKills: hostOomBefore !== null && hostOomAfter !== null ? hostOomAfter - hostOomBefore : null,
      tasks: taskLimitOutcome(tasksBefore, tasksAfter),
      userspaceOomKillers: killedOrTerminated(exit) ? userspaceOomKillers() : [],
      sharedMemory: shmAtStart && {
        size: shmAtStart.size,
        usedAtStart: shmAtStart.used,
        peakUsed: shmPeak,
        readEveryMs: SHARED_MEMORY_READ_MS,
      },
      memoryCgroups: limitedGroups.map((before) => ({
        path: before.path,
        limit: before.limit,
        oomKills: cgroupOomKillsSince(before, rereadCgroup(before)),
      })),
      oomKilled,
      kernelLog: Array.isArray(logged) ? undefined : logged.unreadable,
      endedUnclean,
      stoppedBy,
      outlived,
      watched: [...watch.processes.values()],
      treeRss: { timeline: watch.combined, peak: watch.peak },
      recordsPageCache,
      recordsDiskPeak: space ? space.peak : null,
      killedByClipMem: killedByClipMem.filter((pid) => !outlivedPids.includes(pid)),
      startNs: Number(startNs),
      stderrTail: stderrText,
      stdoutTail: stdoutTail.toString('utf8'),
    };
    return result;
  } finally {
    if (childPid !== undefined) inFlight.delete(childPid);
    if (recordDir !== undefined) {
      const left = removeRecordDir(recordDir);
      if (result && left) result.recordDirLeft = left;
    }
    if (cgroup) {
      try {
        removeCgroup(cgroup.directory);
        if (outcome) outcome.removed = true;
      } catch (error) {
        for (const survivor of result?.outlived ?? []) survivor.fate = 'still running';
        if (outcome) outcome.removeError = (error as Error).message;
        // No outcome means the run itself failed before it: that error is lost, and this one says why the
        // cgroup is still there, which the user must know to remove it.
        // eslint-disable-next-line no-unsafe-finally
        else throw error;
      }
    }
  }
}

/** The command's own process as last read from outside. */
function lastSeenOf(main: WatchedProcess | undefined): TraceRun['lastSeen'] {
  const last = main?.samples[main.samples.length - 1];
  return last && main ? { rss: last.rss, vmSize: last.vmSize, atMs: Math.round(main.lastMs) } : null;
}

function isSetuid(file: string): boolean {
  try {
    return (fs.statSync(file).mode & 0o6000) !== 0;
  } catch {
    return false;
  }
}
