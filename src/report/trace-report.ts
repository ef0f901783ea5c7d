// A traced run as scripts read it (`trace --json`) and as people read it (the terminal summary).
// The JSON names exit / failures / peaks / diagnosis are a contract: keep them.
import * as os from 'node:os';
import { errnoName } from '../core/errno';
import { diagnose, explainFailure, type Diagnosis } from '../diagnose';
import { diagnosisInput, effectiveLimits } from '../diagnose/input';
import { phaseLabel } from '../track/phases';
import { formatBytes } from '../core/units';
import type { Limits } from '../core/limits';
import type { TraceRun } from '../track/launcher';
import { RecordFailure } from '../track/record';
import { SymbolizedFrame, formatFrame, symbolize } from '../track/symbolize';
import { highest, processRows, treeFigures, type ProcessRow, type TreeFigures } from './process-rows';

export interface TraceFailure {
  fn: string;
  /** Bytes exactly as requested (calloc: nmemb*size). */
  size: number;
  errno: number;
  errnoName: string;
  phase: string;
  /** Innermost first: "name (file:line)" or "name (module+0xoffset)". */
  stack: string[];
  sizeOverflow: boolean;
  injected: boolean;
  /** The limit this failure hit, with the arithmetic; absent if none explains it. */
  limit?: Diagnosis;
  /** Process state at the failure (bytes; null where /proc could not be read). */
  vmSize: number | null;
  vmData: number | null;
  rss: number | null;
  /** Milliseconds since the process's record started, to place it on the timeline. */
  tMs: number;
  tid: number;
  /** Everything the record holds about it (mmap prot/flags/fd path/offset, alignment, ...). */
  detail: Omit<RecordFailure, 'stack'>;
}

/** Bumped when a field of `trace --json` changes meaning or disappears (schema/trace.schema.json). */
export const TRACE_SCHEMA = 'clip-mem-trace/2';

export interface TraceReport {
  schema: typeof TRACE_SCHEMA;
  command: string[];
  pid: number;
  limits: Limits;
  exit: { code: number | null; signal: string | null };
  timedOut: boolean;
  /** The timeout it ran under (ms), when one was set. */
  timeoutMs: number | null;
  /** The signal clip-mem was stopped by (it then killed the process group), when it was. */
  stoppedBy: string | null;
  /** How the command's own process ended, in words: the headline ("exited with code 3", "timed out after 10 s, killed by clip-mem"). */
  ending: string;
  durationMs: number;
  tracked: boolean;
  notTracked?: string;
  lostTrack?: string;
  failuresTotal: number;
  failures: TraceFailure[];
  /** Bytes; null where unknown (no record). */
  peaks: {
    heap: number | null;
    anon: number | null;
    file: number | null;
    /** Mapped PROT_NONE (reserved address space; V8 and wasm reserve this way and commit with mprotect, which moves bytes to anon). */
    reserved: number | null;
    rss: number | null;
    vmSize: number | null;
  };
  /** Counters at the end (or at the kill); rss as last read from outside, every 100 ms. */
  last: { heap: number; anon: number; file: number; reserved: number; phase: string; rss: number | null } | null;
  calls: Record<string, number> | null;
  phases: { label: string; heap: number; anon: number; file: number }[];
  /** Samples over time (ms since the record started; bytes): on activity every 10 ms or 64 MiB of change. */
  timeline: { tMs: number; heap: number; anon: number; file: number; rss: number; vmSize: number; phase: string }[];
  cgroup?: TraceRun['cgroup'];
  hostOomKills: number | null;
  /** Processes the kernel log says the OOM killer killed during the run (its own process or others). */
  oomKilled: TraceRun['oomKilled'];
  /** Why the kernel log could not be read, when it could not (then who was OOM-killed is not known). */
  kernelLog?: string;
  /** Every process of the run, the command's own first: parent, command line, times, ending, peaks, failures. */
  processes: ProcessRow[];
  /** The tree's combined figures: summed RSS over time and its peak, next to the largest single process. */
  tree: TreeFigures;
  /** Processes of the run still alive when its own process ended (daemons, background jobs). */
  outlived: TraceRun['outlived'];
  /** Set when the record directory could not be removed. */
  recordDirLeft?: string;
  diagnosis: Diagnosis;
  /** What the run needed at least of the limit that bound it, and the command that proves the real minimum. */
  fix: TraceFix | null;
}

export interface TraceFix {
  /** Bytes the limit must allow at least (what was in use + what was refused), or null when not known. */
  needAtLeast: number | null;
  /** The sentence with the arithmetic. */
  text: string;
  /** `clip-mem fit --for ... -- <the command>`: bisects the limit to the smallest that passes. */
  command: string;
}

/** A command line as a shell takes it back: arguments with spaces or shell characters single-quoted. */
function shellWords(words: readonly string[]): string {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/**
 * The fix for the limit that bound the run: the least it needed (the failed request on top of what the
 * process held) and the `fit` command that finds the real minimum by running it. Only for a limit clip-mem
 * can size: address space, data segment, a cgroup.
 */
export function traceFix(
  command: readonly string[],
  diagnosis: Diagnosis,
  failures: readonly TraceFailure[],
  cgroup: TraceRun['cgroup'],
): TraceFix | null {
  const fit = (target: string) => `clip-mem fit --for ${target} -- ${shellWords(command)}`;
  const failure = failures.find((f) => !f.injected && f.limit?.cause === diagnosis.cause);
  if (diagnosis.cause === 'address-space' || diagnosis.cause === 'data-limit') {
    const as = diagnosis.cause === 'address-space';
    const held = failure ? (as ? failure.vmSize : failure.vmData) : null;
    const ulimit = as ? '`ulimit -v`' : '`ulimit -d`';
    if (!failure || held === null) {
      return {
        needAtLeast: null,
        text: `${ulimit} must allow more; how much is not known (no reading at the failure)`,
        command: fit(as ? 'as' : 'data'),
      };
    }
    const need = held + failure.size;
    return {
      needAtLeast: need,
      text:
        `${as ? 'VmSize' : 'VmData'} ${formatBytes(held)} + ${formatBytes(failure.size)} requested: ${ulimit} needs at least ` +
        `${Math.ceil(need / 1024)} KiB (${formatBytes(need)}); later steps may need more`,
      command: fit(as ? 'as' : 'data'),
    };
  }
  if (diagnosis.cause === 'cgroup-oom-kill' && cgroup) {
    return {
      needAtLeast: cgroup.limit + 1,
      text: `the cgroup's ${formatBytes(cgroup.limit)} was not enough: the job needs more (a Slurm --mem, a container's --memory)`,
      command: fit('mem'),
    };
  }
  return null;
}

function signalWithNumber(signal: string): string {
  const number = os.constants.signals[signal as keyof typeof os.constants.signals];
  return `${signal}${number ? ` (${number})` : ''}`;
}

/**
 * How the command's own process ended, first and truthfully: a kill clip-mem sent is clip-mem's, an OOM
 * kill is named only when the diagnosis found the process itself killed (not another of its group).
 */
function describeEnding(run: TraceRun, diagnosis: Diagnosis): string {
  const { code, signal } = run.exit;
  const took = `after ${(run.durationMs / 1000).toFixed(1)} s`;
  if (run.stoppedBy) return `stopped by ${run.stoppedBy} to clip-mem ${took}, killed by clip-mem`;
  if (run.timedOut) return `timed out after ${(run.timeoutMs ?? 0) / 1000} s, killed by clip-mem`;
  const own = diagnosis.evidence[0] ?? '';
  if (
    signal === 'SIGKILL' &&
    diagnosis.cause === 'cgroup-oom-kill' &&
    own.startsWith('killed by the kernel OOM killer')
  )
    return `${own} ${took}`;
  if (signal) return `killed by ${signalWithNumber(signal)} ${took}`;
  return `exited with code ${code} ${took}`;
}

/** The record writes -1 where /proc could not be read; reports write null. */
const knownBytes = (value: number): number | null => (value < 0 ? null : value);

/**
 * The report of one traced run: what `trace` prints, and what `run` reads each scenario's result from.
 * `reportedError`: see diagnosisInput.
 */
export function buildTraceReport(run: TraceRun, reportedError?: string | null): TraceReport {
  const record = run.record;
  const limits = effectiveLimits(run);
  const recordFailures = record?.failures ?? [];
  const stacks = symbolize(recordFailures.map((f) => f.stack));
  const failures: TraceFailure[] = recordFailures.map((f, i) => {
    const { stack: _stack, ...detail } = f;
    return {
      fn: f.fn,
      size: f.size,
      errno: f.errno,
      errnoName: errnoName(f.errno),
      phase: f.phase,
      stack: (stacks[i] as SymbolizedFrame[]).map(formatFrame),
      sizeOverflow: f.sizeOverflow,
      injected: f.injected,
      limit: explainFailure(f, limits),
      vmSize: knownBytes(f.vmSize),
      vmData: knownBytes(f.vmData),
      rss: knownBytes(f.rss),
      tMs: (f.timeNs - record!.startNs) / 1e6,
      tid: f.tid,
      detail,
    };
  });
  const input = diagnosisInput(run, reportedError);
  const last = record
    ? {
        heap: record.counters.heapCurrent,
        anon: record.counters.anonMapped,
        file: record.counters.fileMapped,
        reserved: record.counters.reservedMapped,
        phase: input.last?.phase ?? '',
        rss: input.last?.rss ?? null,
      }
    : null;
  const diagnosis = diagnose(input);
  // Peaks that are peaks: the record's own high-water marks can miss pages touched without an allocation
  // call (a killed process never reads VmHWM), so each is also at least every sample and the last value.
  const samples = record?.timeline ?? [];
  const c = record?.counters;
  const peakOf = (own: (number | undefined)[], key: 'heap' | 'anon' | 'file' | 'reserved' | 'rss' | 'vmSize') =>
    record ? highest([...own, ...samples.map((sample) => sample[key])]) : null;
  const peaks = {
    heap: peakOf([c?.heapPeak, c?.heapCurrent], 'heap'),
    anon: peakOf([c?.anonPeak, c?.anonMapped], 'anon'),
    file: peakOf([c?.filePeak, c?.fileMapped], 'file'),
    reserved: peakOf([c?.reservedPeak, c?.reservedMapped], 'reserved'),
    // The kernel's own figure when it OOM-killed this process (anon + file + shmem RSS at the kill).
    rss: peakOf([c?.rssPeak, run.lastSeen?.rss, ...run.oomKilled.filter((v) => v.main).map((v) => v.rss ?? 0)], 'rss'),
    vmSize: peakOf([c?.vmPeak, run.lastSeen?.vmSize], 'vmSize'),
  };
  // A figure the record holds as exactly 0 stays 0 (e.g. no file mapping at all), not unknown.
  for (const key of ['heap', 'anon', 'file', 'reserved'] as const) if (record && peaks[key] === null) peaks[key] = 0;
  const processes = processRows(run, { rss: peaks.rss, vmSize: peaks.vmSize, heap: peaks.heap });
  return {
    schema: TRACE_SCHEMA,
    command: run.command,
    pid: run.pid,
    limits: run.limits,
    exit: run.exit,
    timedOut: run.timedOut,
    timeoutMs: run.timeoutMs ?? null,
    stoppedBy: run.stoppedBy ?? null,
    ending: describeEnding(run, diagnosis),
    durationMs: run.durationMs,
    tracked: record !== undefined,
    notTracked: run.notTracked,
    lostTrack: run.lostTrack,
    failuresTotal: record?.failuresTotal ?? 0,
    failures,
    peaks,
    last,
    calls: record ? { ...record.calls } : null,
    phases: (record?.phases ?? []).map((p) => ({ label: p.label, heap: p.heap, anon: p.anon, file: p.file })),
    timeline: (record?.timeline ?? []).map((sample) => ({
      tMs: Math.round((sample.timeNs - record!.startNs) / 1e6),
      heap: sample.heap,
      anon: sample.anon,
      file: sample.file,
      rss: sample.rss,
      vmSize: sample.vmSize,
      phase: phaseLabel(record!, sample.phaseIndex),
    })),
    cgroup: run.cgroup,
    hostOomKills: run.hostOomKills,
    oomKilled: run.oomKilled,
    ...(run.kernelLog !== undefined ? { kernelLog: run.kernelLog } : {}),
    processes,
    tree: treeFigures(run, processes),
    outlived: run.outlived,
    ...(run.recordDirLeft !== undefined ? { recordDirLeft: run.recordDirLeft } : {}),
    diagnosis,
    fix: traceFix(run.command, diagnosis, failures, run.cgroup),
  };
}

function bytes(value: number | null): string {
  return value === null || value < 0 ? '?' : formatBytes(value);
}

function requested(f: TraceFailure): string {
  if (f.sizeOverflow) return `${BigInt(f.detail.nmemb)} x ${BigInt(f.detail.elemSize)} bytes (more than 2^64)`;
  return `${f.size} bytes (${formatBytes(f.size)})`;
}

const shownProcesses = 20;

/** A row per process (the first 20; all in the JSON), and the tree's combined RSS next to the largest process. */
function formatProcesses(report: TraceReport): string[] {
  if (report.processes.length < 2) return [];
  const lines = [`  processes (${report.processes.length}):`];
  const seconds = (value: number | null) => (value === null ? '?' : (value / 1000).toFixed(1));
  for (const p of report.processes.slice(0, shownProcesses)) {
    const name = (p.command ?? p.exe).replace(/\s+/g, ' ');
    lines.push(
      `    pid ${p.pid}${p.ppid !== null ? ` (parent ${p.ppid})` : ''} ${name.length > 48 ? `${name.slice(0, 47)}…` : name}: ` +
        `${seconds(p.startMs)}-${seconds(p.endMs)} s, RSS peak ${bytes(p.peaks.rss)}` +
        (p.peaks.heap !== null ? `, heap ${bytes(p.peaks.heap)}` : '') +
        (p.failures ? `, ${p.failures} failed allocation(s)` : '') +
        (p.tracked ? '' : ', untracked') +
        `; ${p.ending.text} [${p.ending.evidence}]`,
    );
  }
  if (report.processes.length > shownProcesses)
    lines.push(`    ... ${report.processes.length - shownProcesses} more (see --json)`);
  const tree = report.tree;
  if (tree.rssPeak !== null)
    lines.push(
      `  tree: summed RSS peak ${bytes(tree.rssPeak)} at ${seconds(tree.rssPeakAtMs)} s` +
        (tree.largest ? `; largest single process: pid ${tree.largest.pid}, RSS ${bytes(tree.largest.rss)}` : '') +
        (report.cgroup?.peak != null ? `; the cgroup's own peak ${bytes(report.cgroup.peak)}` : ''),
    );
  return lines;
}

/** The terminal summary printed after the child's own output. */
export function formatTraceReport(report: TraceReport): string {
  const lines: string[] = [];
  lines.push(`clip-mem trace: ${report.command.join(' ')} (pid ${report.pid}) ${report.ending}`);
  const limits = [
    report.limits.as !== undefined ? `RLIMIT_AS ${formatBytes(report.limits.as)}` : '',
    report.limits.data !== undefined ? `RLIMIT_DATA ${formatBytes(report.limits.data)}` : '',
    report.limits.mem !== undefined ? `cgroup memory ${formatBytes(report.limits.mem)}` : '',
  ].filter(Boolean);
  if (limits.length) lines.push(`  limits: ${limits.join(', ')}`);
  if (!report.tracked) {
    lines.push(`  not tracked: ${report.notTracked}`);
  } else {
    const p = report.peaks;
    lines.push(
      `  peaks: heap ${bytes(p.heap)}, anonymous mappings ${bytes(p.anon)}, file mappings ${bytes(p.file)}, ` +
        `reserved (PROT_NONE) ${bytes(p.reserved)}, ` +
        `RSS ${bytes(p.rss)}, VmSize ${bytes(p.vmSize)}`,
    );
    if (report.last && (report.exit.signal || report.diagnosis.cause === 'cgroup-oom-kill')) {
      lines.push(
        `  last counters: RSS ${bytes(report.last.rss)}, heap ${bytes(report.last.heap)}, anonymous ${bytes(report.last.anon)}, file ${bytes(report.last.file)}` +
          (report.last.phase ? `, phase "${report.last.phase}"` : ''),
      );
    }
    if (report.lostTrack) lines.push(`  note: ${report.lostTrack}`);
    if (report.failuresTotal === 0) lines.push('  no allocation failed');
    else {
      const shown =
        report.failures.length < report.failuresTotal ? ` (the latest ${report.failures.length} shown)` : '';
      lines.push(`  ${report.failuresTotal} failed allocation(s)${shown}:`);
    }
    report.failures.forEach((f, i) => {
      const flags = [f.injected ? 'injected' : ''].filter(Boolean);
      lines.push(
        `  #${i + 1} ${f.fn} of ${requested(f)} failed: ${f.errnoName} (${f.errno})` +
          (f.phase ? ` in phase "${f.phase}"` : '') +
          (flags.length ? ` [${flags.join(', ')}]` : ''),
      );
      if (f.detail.fdPath) lines.push(`      file ${f.detail.fdPath} at offset ${f.detail.offset}`);
      for (const sentence of f.limit?.evidence ?? []) lines.push(`      ${f.limit!.cause}: ${sentence}`);
      for (const frame of f.stack.slice(0, 12)) lines.push(`      at ${frame}`);
      if (f.stack.length > 12) lines.push(`      ... ${f.stack.length - 12} more frames (see --json)`);
    });
  }
  lines.push(...formatProcesses(report));
  for (const v of report.oomKilled.filter((v) => v.main !== true)) {
    lines.push(
      `  OOM-killed meanwhile: pid ${v.pid} (${v.exe ?? v.comm})` +
        (v.cgroup ? ` in cgroup ${v.cgroup}` : '') +
        (v.rss !== null ? `, RSS ${formatBytes(v.rss)} when killed` : '') +
        ' (kernel log)',
    );
  }
  for (const p of report.outlived) {
    lines.push(`  outlived the command: pid ${p.pid} (${p.exe}) ${p.command ? `"${p.command}" ` : ''}- ${p.fate}`);
  }
  if (report.recordDirLeft) lines.push(`  left behind: ${report.recordDirLeft}`);
  if (report.cgroup?.removeError) lines.push(`  left behind: ${report.cgroup.removeError}`);
  lines.push(`  diagnosis: ${report.diagnosis.cause}`);
  for (const sentence of report.diagnosis.evidence) lines.push(`    ${sentence}`);
  if (report.fix)
    lines.push(`  fix: ${report.fix.text}`, `    the real minimum, proven by runs: ${report.fix.command}`);
  return lines.join('\n') + '\n';
}
