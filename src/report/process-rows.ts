// Every process of a traced run, one row each: the command's own and each it started (from the records
// and from /proc seen from outside), how each ended with the evidence that says so, its peaks and failures;
// and the tree's combined RSS.
import * as os from 'node:os';
import type { TraceRun } from '../track/launcher';
import type { AllocationRecord } from '../track/record';
import type { WatchedProcess } from '../track/process-tree';
import { phaseLabel } from '../track/phases';
import { errnoName } from '../core/errno';

export interface ProcessEnding {
  /** 'still running': it outlived the command and clip-mem left it running. */
  how: 'exited' | 'killed' | 'still running' | 'unknown';
  /** The exit code, when known. */
  code: number | null;
  /** The signal that killed it (SIGKILL), when known. */
  signal: string | null;
  /** Who sent the signal: null when not known. */
  by: 'kernel OOM killer' | 'clip-mem' | null;
  /** For an OOM kill: the cgroup whose limit the kernel enforced ('' when it named none). */
  cgroup: string | null;
  /** The evidence this rests on ("exit status", "kernel log", ...; "none" when there is none). */
  evidence: string;
  /** In words. */
  text: string;
}

export interface ProcessRow {
  pid: number;
  /** Parent pid (from the record of a forked child, or /proc); null when not seen. */
  ppid: number | null;
  /** True for the command's own process. */
  main: boolean;
  exe: string;
  /** Its command line as /proc showed it; null when never seen alive by a poll. */
  command: string | null;
  /** Milliseconds since the run started; null when not known. */
  startMs: number | null;
  endMs: number | null;
  ending: ProcessEnding;
  tracked: boolean;
  /** Bytes; null when not known. */
  peaks: { rss: number | null; vmSize: number | null; heap: number | null };
  failures: number;
  /** Its latest recorded failures (up to 256 per program it ran), in order. */
  latestFailures: { tMs: number; fn: string; size: number; errnoName: string }[];
  /** Readings over time: the record's samples (heap and phase too) and /proc's every 100 ms (heap, phase null). */
  timeline: { tMs: number; rss: number | null; vmSize: number | null; heap: number | null; phase: string | null }[];
}

/** The tree's summed RSS: each poll of /proc sums the RSS of every process of the run alive then. */
export interface TreeFigures {
  processes: number;
  rssPeak: number | null;
  rssPeakAtMs: number | null;
  /** The process with the highest RSS peak of its own. */
  largest: { pid: number; rss: number } | null;
  timeline: { tMs: number; rss: number; processes: number }[];
  /** The page cache of clip-mem's record files at the end, part of a memory cgroup's charge; null: not known. */
  recordsPageCache: number | null;
  /** The most disk clip-mem's record files held at once; null: no records. */
  recordsDiskPeak: number | null;
}

/** The largest known value (> 0), or null when none is known. */
export function highest(values: (number | null | undefined)[]): number | null {
  let top: number | null = null;
  for (const value of values)
    if (value !== null && value !== undefined && value > 0 && (top === null || value > top)) top = value;
  return top;
}

function signalName(number: number): string {
  const entry = Object.entries(os.constants.signals).find(([, n]) => n === number);
  return entry ? entry[0] : `signal ${number}`;
}

const ms = (value: number) => Math.round(value * 10) / 10;

function clipMemKill(run: TraceRun): string {
  return run.stoppedBy ? `clip-mem (stopped by ${run.stoppedBy})` : "clip-mem's --timeout";
}

function endingOf(
  run: TraceRun,
  pid: number,
  main: boolean,
  records: AllocationRecord[],
  watched: WatchedProcess | undefined,
): ProcessEnding {
  const oom = run.oomKilled.find((v) => v.pid === pid && v.main !== null);
  const byClipMem = main ? run.timedOut || run.stoppedBy !== undefined : run.killedByClipMem.includes(pid);
  const killed = (signal: string, evidence: string): ProcessEnding => {
    if (oom)
      return {
        how: 'killed',
        code: null,
        signal: 'SIGKILL',
        by: 'kernel OOM killer',
        cgroup: oom.cgroup,
        evidence: `${evidence}; kernel log`,
        text: `OOM-killed by the kernel${oom.cgroup ? ` in cgroup ${oom.cgroup}` : ''}`,
      };
    if (byClipMem && signal === 'SIGKILL')
      return {
        how: 'killed',
        code: null,
        signal,
        by: 'clip-mem',
        cgroup: null,
        evidence: `${evidence}; alive when clip-mem killed the process group`,
        text: `killed by ${clipMemKill(run)}`,
      };
    return {
      how: 'killed',
      code: null,
      signal,
      by: null,
      cgroup: null,
      evidence,
      text: `killed by ${signal}, sender not known`,
    };
  };
  if (main) {
    if (run.exit.signal) return killed(run.exit.signal, 'exit status');
    return {
      how: 'exited',
      code: run.exit.code,
      signal: null,
      by: null,
      cgroup: null,
      evidence: 'exit status',
      text: `exited ${run.exit.code}`,
    };
  }
  if (oom) return killed('SIGKILL', watched?.zombieExit ? 'zombie /proc/PID/stat' : 'no exit status');
  const status = watched?.zombieExit;
  if (status) {
    if (status.signal !== null) return killed(signalName(status.signal), 'zombie /proc/PID/stat');
    return {
      how: 'exited',
      code: status.code,
      signal: null,
      by: null,
      cgroup: null,
      evidence: 'zombie /proc/PID/stat',
      text: `exited ${status.code}`,
    };
  }
  if (byClipMem) return killed('SIGKILL', 'no exit status');
  const outlived = run.outlived.find((p) => p.pid === pid);
  if (outlived?.fate === 'still running')
    return {
      how: 'still running',
      code: null,
      signal: null,
      by: null,
      cgroup: null,
      evidence: '/proc at the end',
      text: 'still running (outlived the command)',
    };
  if (outlived)
    return {
      how: 'killed',
      code: null,
      signal: 'SIGKILL',
      by: 'clip-mem',
      cgroup: null,
      evidence: '/proc at the end; removing the cgroup kills what is left in it',
      text: 'outlived the command, killed with the cgroup by clip-mem',
    };
  const last = records[records.length - 1];
  if (last?.state === 'exited')
    return {
      how: 'exited',
      code: last.exitCode,
      signal: null,
      by: null,
      cgroup: null,
      evidence: "the record's exit mark",
      text: `exited ${last.exitCode ?? '(code not known)'}`,
    };
  if (last)
    return {
      how: 'unknown',
      code: null,
      signal: null,
      by: null,
      cgroup: null,
      evidence: 'its record has no exit mark',
      // Without the kernel log, a kill the cgroup counted cannot be pinned on a process: at most "possibly".
      text:
        'ended without exit() or _exit() (killed, or a raw exit system call): how not known' +
        (run.kernelLog !== undefined && (run.cgroup?.oomKills ?? 0) > 0
          ? `; possibly OOM-killed (the cgroup counted ${run.cgroup!.oomKills} kill(s); ${run.kernelLog})`
          : ''),
    };
  return {
    how: 'unknown',
    code: null,
    signal: null,
    by: null,
    cgroup: null,
    evidence: 'none',
    text: 'ended: how not known',
  };
}

/**
 * The rows, the command's own process first, then by start. `mainPeaks`: the command's own peaks as the
 * report computed them (they take every reading into account), so that its row says the same.
 */
export function processRows(
  run: TraceRun,
  mainPeaks: { rss: number | null; vmSize: number | null; heap: number | null },
): ProcessRow[] {
  const byPid = new Map<number, AllocationRecord[]>();
  for (const record of [...(run.record ? [run.record] : []), ...run.descendants])
    byPid.set(record.pid, [...(byPid.get(record.pid) ?? []), record]);
  const watched = new Map(run.watched.map((w) => [w.pid, w]));
  const pids = new Set([run.pid, ...byPid.keys(), ...watched.keys()]);
  const relative = (ns: number) => ms((ns - run.startNs) / 1e6);
  const rows = [...pids].map((pid): ProcessRow => {
    const records = (byPid.get(pid) ?? []).sort((a, b) => a.execGeneration - b.execGeneration);
    const seen = watched.get(pid);
    const main = pid === run.pid;
    const last = records[records.length - 1];
    const timeline = [
      ...records.flatMap((r) =>
        r.timeline.map((s) => ({
          tMs: relative(s.timeNs),
          rss: s.rss,
          vmSize: s.vmSize,
          heap: s.heap,
          phase: phaseLabel(r, s.phaseIndex),
        })),
      ),
      ...(seen?.samples ?? []).map((s) => ({ tMs: ms(s.tMs), rss: s.rss, vmSize: s.vmSize, heap: null, phase: null })),
    ].sort((a, b) => a.tMs - b.tMs);
    const oomRss = run.oomKilled.find((v) => v.pid === pid && v.main !== null)?.rss;
    const peaks = main
      ? mainPeaks
      : {
          rss: highest([...records.map((r) => r.counters.rssPeak), ...timeline.map((s) => s.rss), oomRss]),
          vmSize: highest([...records.map((r) => r.counters.vmPeak), ...timeline.map((s) => s.vmSize)]),
          heap: records.length
            ? (highest(records.flatMap((r) => [r.counters.heapPeak, ...r.timeline.map((s) => s.heap)])) ?? 0)
            : null,
        };
    const ends = records.filter((r) => r.endNs > 0).map((r) => relative(r.endNs));
    return {
      pid,
      ppid: seen?.ppid ?? (records[0]?.parentPid || null),
      main,
      exe: last?.exe || seen?.exe || (main ? (run.command[0] ?? '') : '?'),
      command: seen?.command || (main ? run.command.join(' ') : null),
      startMs: lowest([...records.map((r) => relative(r.startNs)), seen?.firstMs]),
      endMs: main
        ? ms(highest([seen?.lastMs, ...ends]) ?? run.durationMs)
        : (lowest([highest([seen?.lastMs, ...ends])]) ?? null),
      ending: endingOf(run, pid, main, records, seen),
      tracked: records.length > 0,
      peaks,
      failures: records.reduce((sum, r) => sum + r.failuresTotal, 0),
      latestFailures: records.flatMap((r) =>
        r.failures.map((f) => ({ tMs: relative(f.timeNs), fn: f.fn, size: f.size, errnoName: errnoName(f.errno) })),
      ),
      timeline,
    };
  });
  return rows.sort(
    (a, b) => Number(b.main) - Number(a.main) || (a.startMs ?? Infinity) - (b.startMs ?? Infinity) || a.pid - b.pid,
  );
}

function lowest(values: (number | null | undefined)[]): number | null {
  const known = values.filter((v): v is number => v !== null && v !== undefined);
  return known.length ? ms(Math.min(...known)) : null;
}

export function treeFigures(run: TraceRun, rows: readonly ProcessRow[]): TreeFigures {
  let largest: TreeFigures['largest'] = null;
  for (const row of rows)
    if (row.peaks.rss !== null && (!largest || row.peaks.rss > largest.rss))
      largest = { pid: row.pid, rss: row.peaks.rss };
  const peak = run.treeRss.peak;
  return {
    processes: rows.length,
    rssPeak: peak?.rss ?? null,
    rssPeakAtMs: peak ? ms(peak.tMs) : null,
    largest,
    timeline: run.treeRss.timeline.map((s) => ({ tMs: ms(s.tMs), rss: s.rss, processes: s.processes })),
    recordsPageCache: run.recordsPageCache,
    recordsDiskPeak: run.recordsDiskPeak,
  };
}
