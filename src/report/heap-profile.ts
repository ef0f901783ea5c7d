// The live-heap profile in the trace report: who held the memory at the failure, at the peak and at the
// end (the kill), per process and for the whole tree; the terminal lines; the pprof file (report/pprof.ts).
import { formatBytes } from '../core/units';
import type { DiagnosisInput } from '../diagnose';
import { heapProfileOf, headlineMoment, momentName, type HeapMoment, type HeapMomentKind } from '../track/heap-profile';
import { phaseLabel } from '../track/phases';
import type { AllocationRecord } from '../track/record';
import { formatFrame } from '../track/symbolize';

export interface TraceHeapHolder {
  /** Estimated live bytes allocated at this call site. */
  bytes: number;
  /** Sampling error: two standard deviations of the estimate (bytes). */
  error: number;
  /** Of the moment's estimated total (0..1). */
  share: number;
  /** The allocation function (malloc, posix_memalign, mmap, ...). */
  fn: string;
  /**
   * The caller of the allocation function ("name (file:line)" or "name (module+0xoffset)"), and the phase
   * its blocks were allocated in when the program marked one (` in phase "..."`).
   */
  site: string;
  /** The phase its blocks were allocated in ('' when none was marked). */
  phase: string;
  /** Innermost first. */
  stack: string[];
}

export interface TraceHeapMoment {
  /** failure: at a failed call (the failure's number in `failure`); peak: at the highest estimated total; end: the last state (at the kill when killed). */
  moment: HeapMomentKind;
  /** The 1-based number of the failure (as counted by the record) for a moment at a failure. */
  failure: number | null;
  /** Milliseconds since the process's record started. */
  tMs: number;
  phase: string;
  /** Estimated live bytes of every site, and its sampling error (two standard deviations). */
  totalBytes: number;
  error: number;
  /** The moment that explains how the process ended: its first failure, else the kill, else the peak. */
  explains: boolean;
  /** Largest first, at most 20. */
  holders: TraceHeapHolder[];
}

export interface TraceHeapProcess {
  pid: number;
  exe: string;
  /** Its record ends without a clean exit: the end state is the state at the kill. */
  killed: boolean;
  /** Mean bytes between samples. */
  sampleMean: number;
  samples: number;
  /** Samples the tracker could not keep (its table of sampled blocks was full): the estimates are short by those. */
  dropped: number;
  moments: TraceHeapMoment[];
}

export interface TraceHeapProfile {
  processes: TraceHeapProcess[];
  /** The end states of every process added up by call site (the whole tree at the end). */
  tree: TraceHeapMoment | null;
}

const keep = 20;

/**
 * Names for the holders' call sites: the caller of the allocation function, and where two holders share it
 * (a wrapper such as a pool's arena allocator), the first frame where their stacks part ("x via y").
 */
function siteNames(stacks: string[][]): string[] {
  return stacks.map((stack, i) => {
    if (!stack.length) return `(other call sites: the tracker's site table was full)`;
    let parted = 0;
    stacks.forEach((other, j) => {
      if (j === i || other[0] !== stack[0]) return;
      let common = 0;
      while (common < stack.length && stack[common] === other[common]) common++;
      parted = Math.max(parted, common);
    });
    return parted > 0 && parted < stack.length ? `${stack[0]} via ${stack[parted]}` : stack[0]!;
  });
}

function toMoment(record: AllocationRecord, m: HeapMoment, explains: boolean): TraceHeapMoment {
  const total = m.totalBytes > 0 ? m.totalBytes : 1;
  const kept = m.holders.slice(0, keep);
  const stacks = kept.map((h) => h.stack.map(formatFrame));
  const names = siteNames(stacks);
  return {
    moment: m.kind,
    failure: m.failure,
    tMs: Math.round((m.timeNs - record.startNs) / 1e6),
    phase: m.phaseIndex ? phaseLabel(record, m.phaseIndex) : '',
    totalBytes: m.totalBytes,
    error: Math.round(2 * m.totalSigma),
    explains,
    holders: kept.map((h, i) => {
      const phase = h.phaseIndex ? phaseLabel(record, h.phaseIndex) : '';
      return {
        bytes: h.bytes,
        error: Math.round(2 * h.sigma),
        share: h.bytes / total,
        fn: h.fn,
        site: phase ? `${names[i]} in phase "${phase}"` : names[i]!,
        phase,
        stack: stacks[i]!,
      };
    }),
  };
}

/**
 * The profile of every tracked process of a run (the command's own first), or null when none has one. A
 * program image that exec'd another (a shell, a pyenv shim) is left out: its memory went with the exec.
 */
export function traceHeapProfile(records: readonly AllocationRecord[]): TraceHeapProfile | null {
  const processes: TraceHeapProcess[] = [];
  const replaced = (r: AllocationRecord) =>
    records.some((other) => other.pid === r.pid && other.execGeneration > r.execGeneration);
  for (const record of records) {
    if (replaced(record)) continue;
    const profile = heapProfileOf(record);
    if (!profile) continue;
    const killed = record.state === 'running';
    const explaining = headlineMoment(profile, killed);
    processes.push({
      pid: record.pid,
      exe: record.exe,
      killed,
      sampleMean: profile.sampleMean,
      samples: profile.samplesTotal,
      dropped: profile.dropped,
      moments: profile.moments.map((m) => toMoment(record, m, m === explaining)),
    });
  }
  if (!processes.length) return null;
  const ends = processes.map((p) => p.moments.find((m) => m.moment === 'end')!);
  const bySite = new Map<string, TraceHeapHolder>();
  let variance = 0;
  for (const end of ends) {
    variance += (end.error / 2) ** 2;
    for (const h of end.holders) {
      const key = `${h.fn}\n${h.phase}\n${h.stack.join('\n')}`;
      const seen = bySite.get(key);
      if (seen) {
        seen.error = Math.round(2 * Math.sqrt((seen.error / 2) ** 2 + (h.error / 2) ** 2));
        seen.bytes += h.bytes;
      } else bySite.set(key, { ...h });
    }
  }
  const totalBytes = ends.reduce((sum, m) => sum + m.totalBytes, 0);
  const holders = [...bySite.values()].sort((a, b) => b.bytes - a.bytes).slice(0, keep);
  for (const h of holders) h.share = totalBytes > 0 ? h.bytes / totalBytes : 0;
  return {
    processes,
    tree: {
      moment: 'end',
      failure: null,
      tMs: Math.max(...ends.map((m) => m.tMs)),
      phase: '',
      totalBytes,
      error: Math.round(2 * Math.sqrt(variance)),
      explains: false,
      holders,
    },
  };
}

/**
 * The diagnosis' input: the top call sites of the command's own process at its first failure or at the
 * kill (a peak explains no ending).
 */
export function heldBy(profile: TraceHeapProfile | null, pid: number): DiagnosisInput['heldBy'] {
  const own = profile?.processes.find((p) => p.pid === pid);
  const moment = own?.moments.find((m) => m.explains);
  if (!own || !moment || moment.moment === 'peak') return undefined;
  return {
    moment: momentName({ kind: moment.moment, failure: moment.failure }, own.killed),
    holders: moment.holders.map((h) => ({ bytes: h.bytes, site: h.site })),
  };
}

/**
 * heldBy from the command's own record alone, symbolized only when it has a moment that can explain an
 * ending (a snapshot at a failure, or the end of a killed process): what the diagnosis needs, without the
 * cost of symbolizing every process of the tree.
 */
export function ownHeldBy(record: AllocationRecord | undefined): DiagnosisInput['heldBy'] {
  if (!record || (!record.heapProfile.atFailures.length && record.state !== 'running')) return undefined;
  return heldBy(traceHeapProfile([record]), record.pid);
}

function holderLine(h: TraceHeapHolder): string {
  const error = h.error > 0 ? ` ± ${formatBytes(h.error)}` : '';
  return `${formatBytes(h.bytes).padStart(10)}${error} (${Math.round(h.share * 100)}%) ${h.fn} from ${h.site}`;
}

/** Terminal lines: for each process, the top 10 call sites at the moment that explains its ending, the top 3 at the others. */
export function formatHeapProfile(profile: TraceHeapProfile): string[] {
  const lines: string[] = [];
  const mean = profile.processes[0]!.sampleMean;
  // The command's own process, and the others that failed or were killed holding a good part of the memory
  // (a shell, a helper that exited: in the JSON only).
  const explaining = (p: TraceHeapProcess) => p.moments.find((m) => m.explains);
  const most = Math.max(...profile.processes.map((p) => explaining(p)?.totalBytes ?? 0));
  const shown = profile.processes
    .filter((p, i) => {
      const m = explaining(p);
      return i === 0 || (m !== undefined && m.moment !== 'peak' && m.totalBytes >= most / 4);
    })
    .slice(0, 4);
  for (const p of shown) {
    const ended = p.killed;
    const first = p.moments.find((m) => m.explains);
    const who = shown.length > 1 ? `pid ${p.pid} (${p.exe}) ` : '';
    const order = [first, ...p.moments.filter((m) => m !== first)].filter((m): m is TraceHeapMoment => !!m);
    for (const m of order) {
      if (m.totalBytes <= 0 && m !== first) continue;
      const top = m === first ? 10 : 3;
      const phase = m.phase ? ` in phase "${m.phase}"` : '';
      lines.push(
        `    ${who}${momentName({ kind: m.moment, failure: m.failure }, ended)}${phase}: ${formatBytes(m.totalBytes)} ± ${formatBytes(m.error)} estimated live`,
      );
      for (const h of m.holders.slice(0, top)) lines.push(`      ${holderLine(h)}`);
      if (m === first && m.holders[0]) {
        for (const frame of m.holders[0].stack.slice(1, 6)) lines.push(`          at ${frame}`);
      }
    }
    if (p.dropped > 0) lines.push(`    ${who}note: ${p.dropped} samples not kept (table full): estimates are low`);
  }
  if (shown.length > 1 && profile.tree) {
    lines.push(`    the whole tree at the end: ${formatBytes(profile.tree.totalBytes)} estimated live`);
    for (const h of profile.tree.holders.slice(0, 3)) lines.push(`      ${holderLine(h)}`);
  }
  // Nothing sampled (short programs that allocate little): no heading over an empty section.
  if (!lines.length) return [];
  return [
    `  live heap by call site (allocations sampled every ${formatBytes(mean)} on average; ± is the sampling error, 2 standard deviations):`,
    ...lines,
  ];
}
