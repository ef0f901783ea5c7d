// `clip-mem fit --verify`: the boundary the estimate predicts, proven by runs under the limit, each in its
// own child (searchByRuns: the search and its loop, shared with `fit -- <command>`).
import { resolveClipConfig } from '../clip/config';
import { estimatePhase, insideBand, runsInTrainChild } from '../estimate/estimate';
import {
  LIMIT_MEASURES,
  maxSearchRuns,
  searchByRuns,
  type BatchRange,
  type FitConfig,
  type FitLimit,
} from '../estimate/fit';
import type { Phase } from '../estimate/model';
import { recordObservations, type Observation, type Peak, type RuntimeRecord } from '../estimate/store';
import type { Limits } from '../core/limits';
import type { Cause } from '../diagnose';
import { runPhases, runTrainStep } from './phase-runs';

export interface VerifyRun {
  batch: number;
  passed: boolean;
  rssPeak: number | null;
  vmSizePeak: number | null;
  /** The peak of what the limit counts: the cgroup's charge for --limit-mem, VmSize for the rlimits. */
  limitedPeak: number | null;
  cause: Cause;
  evidence: string[];
  /** The command that repeats this run. */
  command: string;
}

export interface Verification {
  config: FitConfig;
  phase: Phase;
  limit: FitLimit;
  /** The batch proposed (expected.from). */
  predicted: number;
  /** Where the largest passing batch was expected (expectedBoundary): searched first. */
  expected: BatchRange;
  runs: VerifyRun[];
  /** Largest batch seen to pass and smallest seen to fail (null when the bracket's end was not run). */
  passed: number | null;
  failed: number | null;
  /** maxSearchRuns(maxBatch): the most runs the search may take. */
  maxRuns: number;
  proven: boolean;
  /** Passing runs whose peak landed outside the estimate's band: recorded in the estimate store. */
  outsideBand: OutsideBand[];
}

export interface OutsideBand {
  batch: number;
  measure: keyof Peak;
  measured: number;
  predicted: number;
  /** The band's half-width. */
  band: number;
}

/**
 * The passing runs' peaks against the estimate's band at their batch (a failing run was stopped at the
 * limit: its peak is not the phase's). Each run outside becomes an observation of the estimate store.
 */
export function outsideTheBand(
  config: FitConfig,
  phase: Phase,
  limit: FitLimit,
  runs: readonly VerifyRun[],
  record: RuntimeRecord,
): { outside: OutsideBand[]; observations: Observation[] } {
  const clip = resolveClipConfig(config.model);
  const outside: OutsideBand[] = [];
  const observations: Observation[] = [];
  for (const run of runs) {
    if (!run.passed || run.rssPeak === null || run.vmSizePeak === null) continue;
    const e = estimatePhase(clip, { ...config, batch: run.batch, phase }, record);
    const measured = { rss: run.rssPeak, vmSize: run.vmSizePeak };
    const misses = (['rss', 'vmSize'] as const).filter((key) => !insideBand(e, measured, key));
    for (const key of misses)
      outside.push({
        batch: run.batch,
        measure: key,
        measured: measured[key],
        predicted: e.predicted[key],
        band: e.uncertainty[key],
      });
    if (misses.length)
      observations.push({
        ...config,
        phase,
        batch: run.batch,
        measured,
        predicted: e.predicted,
        band: { rss: e.uncertainty.rss, vmSize: e.uncertainty.vmSize },
        source: `fit --verify ${LIMIT_MEASURES[limit.kind].option} ${limit.bytes}`,
        measuredAt: new Date().toISOString(),
      });
  }
  return { outside, observations };
}

function limitsOf(limit: FitLimit): Limits {
  return { [limit.kind]: limit.bytes };
}

async function runWithRunner(
  config: FitConfig,
  phase: Phase,
  batch: number,
  limit: FitLimit,
  threads: number,
  progress: (l: string) => void,
): Promise<VerifyRun> {
  const [run] = await runPhases({
    model: config.model,
    dtype: config.dtype,
    batch,
    phases: [phase],
    threads,
    limits: limitsOf(limit),
    progress,
  });
  const r = run.result;
  const limitedPeak = limit.kind === 'mem' ? (r.memory.cgroupPeak ?? null) : r.memory.vmSizePeak;
  return {
    batch,
    passed: r.status === 'passed',
    rssPeak: r.memory.rssPeak,
    vmSizePeak: r.memory.vmSizePeak,
    limitedPeak,
    cause: r.diagnosis.cause,
    evidence: r.diagnosis.evidence,
    command: r.command,
  };
}

/** A training step `clip-mem run` does not offer (SGD, segments) runs in clip-mem's own training child. */
async function runWithTrainChild(
  config: FitConfig,
  batch: number,
  limit: FitLimit,
  threads: number,
  progress: (l: string) => void,
): Promise<VerifyRun> {
  const r = await runTrainStep({ ...config, batch, threads, limits: limitsOf(limit), progress });
  return {
    batch,
    passed: r.passed,
    rssPeak: r.rssPeak,
    vmSizePeak: r.vmSizePeak,
    limitedPeak: limit.kind === 'mem' ? r.cgroupPeak : r.vmSizePeak,
    cause: r.cause,
    evidence: r.evidence,
    command: `clip-mem fit --verify --phase train --optimizer ${config.optimizer} --segments ${config.segments} --model ${config.model} --dtype ${config.dtype} ${LIMIT_MEASURES[limit.kind].option} ${limit.bytes}`,
  };
}

/**
 * Runs the search for the boundary (searchBoundary) in children under the limit, seeded by the estimate:
 * a bisection of the batches between the band's edges (expectedBoundary) while the boundary can be there,
 * of 1..maxBatch otherwise, at most maxSearchRuns(maxBatch) runs.
 */
export async function verifyBoundary(
  config: FitConfig,
  phase: Phase,
  limit: FitLimit,
  expected: BatchRange,
  maxBatch: number,
  record: RuntimeRecord,
  progress: (line: string) => void,
): Promise<Verification> {
  const threads = record.threads;
  const run = (batch: number) =>
    runsInTrainChild({ phase, ...config })
      ? runWithTrainChild(config, batch, limit, threads, progress)
      : runWithRunner(config, phase, batch, limit, threads, progress);
  const runs: VerifyRun[] = [];
  const { passed, failed } = await searchByRuns(maxBatch, expected, async (batch) => {
    const result = await run(batch);
    runs.push(result);
    return result.passed;
  });
  const proven = passed >= 1 && failed <= maxBatch;
  const { outside, observations } = outsideTheBand(config, phase, limit, runs, record);
  // The next estimate (and calibration) of this model learns from them.
  recordObservations(threads, observations);
  return {
    config,
    phase,
    limit,
    predicted: expected.from,
    expected,
    runs,
    passed: passed >= 1 ? passed : null,
    failed: failed <= maxBatch ? failed : null,
    maxRuns: maxSearchRuns(maxBatch),
    proven,
    outsideBand: outside,
  };
}
