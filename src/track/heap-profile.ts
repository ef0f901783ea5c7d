// The sampled live-heap profile of a record (native/preload/heap_profile.h) as symbolized call sites at
// each moment the record keeps: at its first failures, at the peak of the estimated live total, and at
// the end (the last state: at the kill when the process was killed).
import type { AllocationRecord, RecordHeapSnapshot, TrackedFn } from './record';
import { SymbolizedFrame, symbolize } from './symbolize';

export type HeapMomentKind = 'failure' | 'peak' | 'end';

export interface HeapHolder {
  /** Estimated live bytes allocated at this site. */
  bytes: number;
  /** Standard deviation of that estimate (bytes). */
  sigma: number;
  fn: TrackedFn;
  /** The phase its blocks were allocated in (1-based marker; 0: none). */
  phaseIndex: number;
  /** Innermost first, from the caller of the allocation function. */
  stack: SymbolizedFrame[];
}

export interface HeapMoment {
  kind: HeapMomentKind;
  /** The failure's sequence number (RecordFailure.sequence) for a moment at a failure, else null. */
  failure: number | null;
  timeNs: number;
  phaseIndex: number | null;
  /** Estimated live bytes of all sites then, and its standard deviation. */
  totalBytes: number;
  totalSigma: number;
  /** Largest first: the snapshot's top sites (64 at most), or every site holding bytes at the end. */
  holders: HeapHolder[];
}

export interface HeapProfile {
  sampleMean: number;
  samplesTotal: number;
  dropped: number;
  moments: HeapMoment[];
}

const symbolized = new WeakMap<AllocationRecord, HeapProfile | null>();

/**
 * The record's heap moments with symbolized stacks, or null when the process ran without the profile.
 * Computed once per record (the report and the diagnosis input both ask).
 */
export function heapProfileOf(record: AllocationRecord): HeapProfile | null {
  if (!symbolized.has(record)) symbolized.set(record, buildHeapProfile(record));
  return symbolized.get(record)!;
}

/**
 * The moment that explains the ending: the first failure the profile has, else the last state when the
 * process was killed (at the kill), else the peak.
 */
export function headlineMoment(profile: HeapProfile, killed: boolean): HeapMoment | undefined {
  const at = (kind: HeapMomentKind) => profile.moments.find((m) => m.kind === kind);
  return at('failure') ?? (killed ? at('end') : undefined) ?? at('peak');
}

/** "at failure #1", "at the peak", "at the kill" (the end of a killed process), "at the end". */
export function momentName(moment: Pick<HeapMoment, 'kind' | 'failure'>, killed: boolean): string {
  if (moment.kind === 'failure') return `at failure #${moment.failure}`;
  if (moment.kind === 'peak') return 'at the peak';
  return killed ? 'at the kill' : 'at the end';
}

function buildHeapProfile(record: AllocationRecord): HeapProfile | null {
  const profile = record.heapProfile;
  if (!profile || profile.sampleMean <= 0) return null;
  const byIndex = new Map(profile.sites.map((site) => [site.index, site]));
  const used = new Set<number>();
  const fromSnapshot = (kind: HeapMomentKind, s: RecordHeapSnapshot) => {
    for (const entry of s.sites) used.add(entry.site);
    return {
      kind,
      failure: kind === 'failure' ? s.failure : null,
      timeNs: s.timeNs,
      phaseIndex: s.phaseIndex,
      totalBytes: s.totalBytes,
      // The snapshot keeps the variances of its top sites only: the rest hold little (a lower bound).
      totalSigma: Math.sqrt(s.sites.reduce((sum, e) => sum + e.liveVariance, 0)),
      entries: s.sites.map((e) => ({ site: e.site, bytes: e.liveBytes, variance: e.liveVariance })),
    };
  };
  const live = profile.sites.filter((site) => site.liveBytes > 0).sort((a, b) => b.liveBytes - a.liveBytes);
  for (const site of live) used.add(site.index);
  const raw = [
    ...profile.atFailures.map((s) => fromSnapshot('failure', s)),
    ...(profile.peak ? [fromSnapshot('peak', profile.peak)] : []),
    {
      kind: 'end' as const,
      failure: null,
      timeNs: record.endNs || (record.timeline.at(-1)?.timeNs ?? record.startNs),
      phaseIndex: record.currentPhase || null,
      totalBytes: profile.liveBytes,
      totalSigma: Math.sqrt(profile.sites.reduce((sum, site) => sum + site.liveVariance, 0)),
      entries: live.map((site) => ({ site: site.index, bytes: site.liveBytes, variance: site.liveVariance })),
    },
  ];
  const order = [...used].filter((index) => byIndex.has(index));
  const stacks = symbolize(order.map((index) => byIndex.get(index)!.stack));
  const stackOf = new Map(order.map((index, i) => [index, stacks[i]!]));
  return {
    sampleMean: profile.sampleMean,
    samplesTotal: profile.samplesTotal,
    dropped: profile.dropped,
    moments: raw.map(({ entries, ...moment }) => ({
      ...moment,
      holders: entries
        .filter((e) => byIndex.has(e.site))
        .map((e) => ({
          bytes: e.bytes,
          sigma: Math.sqrt(e.variance),
          fn: byIndex.get(e.site)!.fn,
          phaseIndex: byIndex.get(e.site)!.phaseIndex,
          stack: stackOf.get(e.site) ?? [],
        })),
    })),
  };
}
