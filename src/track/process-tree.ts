// The traced command's process tree as seen from outside, every 100 ms: which processes it started (by
// parent pid, and the run's cgroup), their command lines, RSS and VmSize over time, their exit status when
// caught as a zombie, and the tree's summed RSS. Untracked programs (static, setuid) show here too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isUnknown } from '../core/field';
import { loadAddon } from '../core/native';
import { readProcessStatus } from '../probe/proc';

export interface ProcessSample {
  /** Milliseconds since the run started. */
  tMs: number;
  rss: number;
  vmSize: number;
}

export interface WatchedProcess {
  pid: number;
  ppid: number;
  /** Its executable and command line (NULs as spaces) as last read while it ran. */
  exe: string;
  command: string;
  /** First and last time seen alive (ms since the run started). */
  firstMs: number;
  lastMs: number;
  /** Readings, kept when they change. */
  samples: ProcessSample[];
  /** Its wait status, read from /proc/PID/stat while it was a zombie (its parent had not reaped it yet). */
  zombieExit?: { code: number | null; signal: number | null };
}

/** One reading of the whole tree: the RSS of every process alive then, summed. */
export interface TreeSample {
  tMs: number;
  rss: number;
  processes: number;
}

/** Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses). */
function statFields(pid: number): string[] | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function readLink(file: string): string | undefined {
  try {
    return fs.readlinkSync(file);
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') || undefined;
  } catch {
    return undefined;
  }
}

/** The mark a run's processes carry in their environment (inherited, tracked or not): its record directory. */
export function runMark(recordDir: string): string {
  return `\0CLIPMEM_RECORD_DIR=${recordDir}\0`;
}

/** True when the process's environment carries `mark` (false when gone or not ours to read). */
export function carriesMark(pid: number, mark: string): boolean {
  try {
    return `\0${fs.readFileSync(`/proc/${pid}/environ`, 'latin1')}`.includes(mark);
  } catch {
    return false;
  }
}

interface ChildrenAddon {
  becomeChildSubreaper(): boolean;
  reapChild(pid: number): boolean;
}

/**
 * Makes this process the child subreaper of what it runs from now on (native/addon/children.cc): an orphan
 * of a traced run becomes clip-mem's child instead of init's, so its exit status can still be read.
 */
export function adoptOrphans(): boolean {
  return loadAddon<ChildrenAddon>().becomeChildSubreaper();
}

export class ProcessTreeWatch {
  readonly processes = new Map<number, WatchedProcess>();
  readonly combined: TreeSample[] = [];
  /** The highest summed RSS, and when. */
  peak: TreeSample | null = null;
  /** Pids seen outside the tree, not read again while they exist. */
  private readonly foreign = new Set<number>();
  /** Pids alive at the last poll. */
  alive = new Set<number>();

  constructor(
    private readonly root: number,
    /** process.hrtime.bigint() when the run started (CLOCK_MONOTONIC, as the records' times). */
    private readonly startedNs: bigint,
    private readonly cgroupDirectory?: string,
    /** The run's mark (runMark): an orphan handed to clip-mem that carries it joins the tree. */
    private readonly mark?: string,
  ) {}

  /** An orphan of this run, now clip-mem's child (adoptOrphans). */
  private adopted(pid: number, ppid: number): boolean {
    return ppid === process.pid && pid !== this.root && this.mark !== undefined && carriesMark(pid, this.mark);
  }

  private now(): number {
    return Number(process.hrtime.bigint() - this.startedNs) / 1e6;
  }

  private cgroupPids(): Set<number> {
    const pids = new Set<number>();
    if (this.cgroupDirectory === undefined) return pids;
    try {
      const text = fs.readFileSync(path.join(this.cgroupDirectory, 'cgroup.procs'), 'utf8');
      for (const line of text.split('\n')) if (line) pids.add(Number(line));
    } catch {
      // removed, or not yet there
    }
    return pids;
  }

  /** Reads the tree once: new processes (a parent in the tree, or in the run's cgroup), then each one's figures. */
  poll(): void {
    const tMs = this.now();
    let listed: number[] = [];
    try {
      listed = fs
        .readdirSync('/proc')
        .filter((name) => /^\d+$/.test(name))
        .map(Number);
    } catch {
      return;
    }
    const present = new Set(listed);
    for (const pid of this.foreign) if (!present.has(pid)) this.foreign.delete(pid);
    const inGroup = this.cgroupPids();
    // New pids only: one outside the tree stays outside (a pid is reparented only to init or a subreaper).
    const fresh = listed.filter((pid) => !this.processes.has(pid) && !this.foreign.has(pid));
    const parents = new Map<number, number>();
    for (const pid of fresh) {
      const fields = statFields(pid);
      if (fields) parents.set(pid, Number(fields[1]));
      else this.foreign.add(pid); // gone already, or not ours to read: not read again
    }
    // A child found in the same poll as its parent joins through the parent's entry.
    const inTree = (pid: number, depth = 0): boolean =>
      pid === this.root ||
      this.processes.has(pid) ||
      inGroup.has(pid) ||
      (depth < 64 && parents.has(pid) && inTree(parents.get(pid)!, depth + 1));
    for (const [pid, ppid] of parents) {
      if (!inTree(pid) && !this.adopted(pid, ppid)) {
        this.foreign.add(pid);
        continue;
      }
      this.processes.set(pid, { pid, ppid, exe: '', command: '', firstMs: tMs, lastMs: tMs, samples: [] });
    }
    const alive = new Set<number>();
    let sum = 0;
    for (const entry of this.processes.values()) {
      if (!present.has(entry.pid) || entry.zombieExit) continue;
      const fields = statFields(entry.pid);
      if (!fields) continue;
      if (fields[0] === 'Z' || fields[0] === 'X') {
        // exit_code (field 52 of stat): the wait status the parent will reap.
        const status = Number(fields[49]);
        if (Number.isFinite(status))
          entry.zombieExit =
            status & 0x7f ? { code: null, signal: status & 0x7f } : { code: (status >> 8) & 0xff, signal: null };
        // An orphan clip-mem adopted: read, now reaped (its own child, the root, is libuv's to reap).
        if (Number(fields[1]) === process.pid && entry.pid !== this.root)
          loadAddon<ChildrenAddon>().reapChild(entry.pid);
        continue;
      }
      entry.ppid = Number(fields[1]);
      entry.exe = readLink(`/proc/${entry.pid}/exe`) ?? entry.exe;
      entry.command = commandLine(entry.pid) ?? entry.command;
      const status = readProcessStatus(`/proc/${entry.pid}/status`);
      if (isUnknown(status.vmRss) || isUnknown(status.vmSize)) continue;
      alive.add(entry.pid);
      entry.lastMs = tMs;
      sum += status.vmRss;
      const previous = entry.samples[entry.samples.length - 1];
      if (!previous || previous.rss !== status.vmRss || previous.vmSize !== status.vmSize)
        entry.samples.push({ tMs, rss: status.vmRss, vmSize: status.vmSize });
    }
    this.alive = alive;
    if (alive.size === 0) return;
    const sample = { tMs, rss: sum, processes: alive.size };
    const previous = this.combined[this.combined.length - 1];
    if (!previous || previous.rss !== sum || previous.processes !== alive.size) this.combined.push(sample);
    if (!this.peak || sum > this.peak.rss) this.peak = sample;
  }
}
