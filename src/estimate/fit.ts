// `clip-mem fit`: the largest batch whose predicted peak stays under a limit, the cheapest change (dtype,
// optimizer, preset) when none does, and `--verify`: the answer and the next batch up run in children
// under the limit, bisecting when the prediction was wrong.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveClipModel } from '../clip/checkpoint';
import { PRESET_NAMES, resolveClipConfig, type ClipConfig, type WeightFormat } from '../clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';
import { diagnose } from '../diagnose';
import type { Limits } from '../report/result';
import { traceCommand } from '../track/launcher';
import { estimatePhase, type PhaseEstimate } from './estimate';
import { modelTerms, type Optimizer, type Phase } from './model';
import { runPhases } from './runs';
import { TRAIN_REQUEST_ENV, TRAIN_RESULT_ENV, type TrainStepReport, type TrainStepRequest } from './train-child';
import type { RuntimeRecord } from './store';

export type LimitKind = 'as' | 'data' | 'mem';

/** The most backward segments the trainer takes: one per layer of the deeper tower (the fewest gradients at once). */
export function mostSegments(config: ClipConfig): number {
  return Math.max(config.text.numHiddenLayers, config.vision.numHiddenLayers);
}

export interface FitLimit {
  kind: LimitKind;
  bytes: number;
}

/** What each limit counts, in words, and the estimate's figure that stands for it. */
export const LIMIT_MEASURES: Record<LimitKind, { option: string; counts: string }> = {
  as: { option: '--limit-as', counts: 'VmSize (RLIMIT_AS counts every mapping)' },
  data: { option: '--limit-data', counts: 'VmSize less the read-only weight mapping (RLIMIT_DATA counts private writable memory; an upper bound)' },
  mem: { option: '--limit-mem', counts: 'RSS (the cgroup counts resident pages)' },
};

export interface FitConfig {
  model: string;
  dtype: WeightFormat;
  optimizer: Optimizer;
  /** train: backward graphs per tower (DEFAULT_TRAINING_SEGMENTS: what `clip-mem run` trains with). */
  segments: number;
}

export interface FitAnswer extends FitConfig {
  /** 0 when not even batch 1 fits. */
  batch: number;
  /** The estimate at `batch` (or at batch 1 when none fits). */
  estimate: PhaseEstimate;
  /** The estimate one batch up (absent at --max-batch). */
  next?: PhaseEstimate;
  /** What changed from the request, in words ('' for the request itself). */
  change: string;
}

export function limitedFigure(e: PhaseEstimate, kind: LimitKind, config: ClipConfig): number {
  if (kind === 'mem') return e.predicted.rss;
  if (kind === 'as') return e.predicted.vmSize;
  // Read-only file mappings (the forward's weights) are not data; the copy paths are.
  const mapped = e.phase === 'forward' ? modelTerms(config, e.dtype, 'load', 0).components[0].vmSize : 0;
  return e.predicted.vmSize - mapped;
}

/** The largest batch in [1, maxBatch] whose figure fits (figures grow with the batch), or 0. */
export function largestFitting(fits: (batch: number) => boolean, maxBatch: number): number {
  if (!fits(1)) return 0;
  let lo = 1;
  let hi = 2;
  while (hi <= maxBatch && fits(hi)) {
    lo = hi;
    hi *= 2;
  }
  hi = Math.min(hi, maxBatch + 1);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

function answerFor(request: FitConfig, phase: Phase, limit: FitLimit, record: RuntimeRecord, maxBatch: number, change: string): FitAnswer {
  const config = resolveClipConfig(request.model);
  const estimate = (batch: number) => estimatePhase(config, { ...request, batch, phase }, record);
  const fits = (batch: number) => limitedFigure(estimate(batch), limit.kind, config) <= limit.bytes;
  const batch = phase === 'load' ? (fits(1) ? 1 : 0) : largestFitting(fits, maxBatch);
  const answer: FitAnswer = { ...request, batch, estimate: estimate(Math.max(batch, 1)), change };
  if (phase !== 'load' && batch < maxBatch) answer.next = estimate(batch + 1);
  return answer;
}

/**
 * The request's answer, then the changes in the order of their cost to the user: a smaller weight
 * format; for training, backward segments (same result), plain SGD, both; then smaller presets.
 */
export function fitPlan(request: FitConfig, phase: Phase, limit: FitLimit, record: RuntimeRecord, maxBatch: number): { answer: FitAnswer; alternatives: FitAnswer[] } {
  const answer = answerFor(request, phase, limit, record, maxBatch, '');
  const alternatives: FitAnswer[] = [];
  const formats: WeightFormat[] = phase === 'train' ? ['fp16'] : ['fp16', 'int8'];
  for (const dtype of formats.filter((d) => d !== request.dtype && ['fp32', 'fp16', 'int8'].indexOf(d) > ['fp32', 'fp16', 'int8'].indexOf(request.dtype))) {
    const change = phase === 'train' ? `--dtype ${dtype} (the trainer widens it to float32: training memory is the same)` : `--dtype ${dtype}`;
    alternatives.push(answerFor({ ...request, dtype }, phase, limit, record, maxBatch, change));
  }
  if (phase === 'train') {
    const most = mostSegments(resolveClipConfig(request.model));
    const segmented = `--segments ${most} (the trainer's backward one graph per layer: fewer gradients at once, same compute)`;
    if (request.segments < most) alternatives.push(answerFor({ ...request, segments: most }, phase, limit, record, maxBatch, segmented));
    if (request.optimizer === 'adamw') {
      alternatives.push(answerFor({ ...request, optimizer: 'sgd' }, phase, limit, record, maxBatch, '--optimizer sgd (no optimizer state)'));
      if (request.segments < most) {
        alternatives.push(answerFor({ ...request, optimizer: 'sgd', segments: most }, phase, limit, record, maxBatch, `--optimizer sgd and ${segmented}`));
      }
    }
  }
  const size = (name: string) => modelTerms(resolveClipConfig(name), 'fp32', 'load', 0).components[0].rss;
  const current = size(request.model);
  for (const preset of PRESET_NAMES.filter((p) => p !== request.model && size(p) < current).sort((a, b) => size(b) - size(a))) {
    alternatives.push(answerFor({ ...request, model: preset }, phase, limit, record, maxBatch, `--model ${preset} (a smaller model)`));
  }
  return { answer, alternatives };
}

/** The cheapest fitting answer: the request itself, else the first alternative that fits batch 1. */
export function cheapest(plan: { answer: FitAnswer; alternatives: FitAnswer[] }): FitAnswer | undefined {
  return plan.answer.batch > 0 ? plan.answer : plan.alternatives.find((a) => a.batch > 0);
}

export interface VerifyRun {
  batch: number;
  passed: boolean;
  rssPeak: number | null;
  vmSizePeak: number | null;
  /** The peak of what the limit counts: the cgroup's charge for --limit-mem, VmSize for the rlimits. */
  limitedPeak: number | null;
  cause: string;
  evidence: string[];
  /** The command that repeats this run. */
  command: string;
}

export interface Verification {
  config: FitConfig;
  phase: Phase;
  limit: FitLimit;
  predicted: number;
  runs: VerifyRun[];
  /** Largest batch seen to pass and smallest seen to fail (null when the bracket's end was not run). */
  passed: number | null;
  failed: number | null;
  /** ceil(log2(maxBatch)) + 1: what a plain bisection of [1, maxBatch] could need, with the boundary pair run. */
  maxRuns: number;
  proven: boolean;
}

function limitsOf(limit: FitLimit): Limits {
  return { [limit.kind]: limit.bytes };
}

async function runWithRunner(config: FitConfig, phase: Phase, batch: number, limit: FitLimit, threads: number, progress: (l: string) => void): Promise<VerifyRun> {
  const [run] = await runPhases({ model: config.model, dtype: config.dtype, batch, phases: [phase], threads, limits: limitsOf(limit), progress });
  const r = run.result;
  const limitedPeak = limit.kind === 'mem' ? (r.memory.cgroupPeak ?? null) : r.memory.vmSizePeak;
  return { batch, passed: r.status === 'passed', rssPeak: r.memory.rssPeak, vmSizePeak: r.memory.vmSizePeak, limitedPeak, cause: r.diagnosis.cause, evidence: r.diagnosis.evidence, command: r.command };
}

/** A training step `clip-mem run` does not offer (SGD, segments) runs in our own child, through the tracker's launcher. */
async function runTrainStep(config: FitConfig, batch: number, limit: FitLimit, threads: number, progress: (l: string) => void): Promise<VerifyRun> {
  const source = resolveClipModel(config.model, { format: config.dtype });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-fit-'));
  const resultFile = path.join(dir, 'result.json');
  const request: TrainStepRequest = { model: config.model, weightsFile: source.weightsFile, batch, threads, optimizer: config.optimizer, segments: config.segments, lr: 1e-3 };
  progress(`${config.model} ${config.dtype} batch ${batch}: ${config.optimizer} training step (${config.segments} segment(s)) under ${LIMIT_MEASURES[limit.kind].option} ${limit.bytes}`);
  try {
    const run = await traceCommand({
      command: [process.execPath, path.join(__dirname, 'train-child.js')],
      limits: limitsOf(limit),
      timeoutMs: 600_000,
      env: { ...process.env, [TRAIN_REQUEST_ENV]: JSON.stringify(request), [TRAIN_RESULT_ENV]: resultFile },
    });
    const report = fs.existsSync(resultFile) ? (JSON.parse(fs.readFileSync(resultFile, 'utf8')) as TrainStepReport) : null;
    const passed = run.exit.code === 0 && report !== null;
    const record = run.record;
    const last = record?.timeline[record.timeline.length - 1];
    const diagnosis = diagnose({
      exit: run.exit,
      limits: limitsOf(limit),
      failures: record?.failures ?? [],
      cgroup: run.cgroup && { path: run.cgroup.path, limit: run.cgroup.limit, oomKills: run.cgroup.oomKills, peak: run.cgroup.peak },
      hostOomKills: run.hostOomKills,
      output: `${run.stderrTail}\n${run.stdoutTail}`,
      filePeak: record?.counters.filePeak,
      last: record ? { heap: record.counters.heapCurrent, rss: last?.rss, anon: record.counters.anonMapped, file: record.counters.fileMapped } : undefined,
      notTracked: run.notTracked,
    });
    const tracked = (v: number | undefined) => (v !== undefined && v > 0 ? v : null);
    const vmSizePeak = report?.vmSizePeak ?? tracked(record?.counters.vmPeak);
    return {
      batch,
      passed,
      rssPeak: report?.rssPeak ?? tracked(record?.counters.rssPeak),
      vmSizePeak,
      limitedPeak: limit.kind === 'mem' ? (run.cgroup?.peak ?? null) : vmSizePeak,
      cause: passed ? 'none' : diagnosis.cause,
      evidence: diagnosis.evidence,
      command: `clip-mem fit --verify --phase train --optimizer ${config.optimizer} --segments ${config.segments} --model ${config.model} --dtype ${config.dtype} ${LIMIT_MEASURES[limit.kind].option} ${limit.bytes}`,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs the predicted batch; if it passes, the next one up. When the prediction was wrong it searches on:
 * above a pass, it steps by the headroom the run left (limit - its measured peak) over the estimate's
 * per-sample growth, until a batch fails; below a failure, and between a pass and a failure, it bisects.
 * It stops when a passing batch and the batch above it, failing, have both run.
 */
export async function verifyBoundary(
  config: FitConfig,
  phase: Phase,
  limit: FitLimit,
  predicted: number,
  maxBatch: number,
  threads: number,
  perSample: (batch: number) => number,
  progress: (line: string) => void,
): Promise<Verification> {
  const run = (batch: number) =>
    phase === 'train' && (config.optimizer !== 'adamw' || config.segments !== DEFAULT_TRAINING_SEGMENTS)
      ? runTrainStep(config, batch, limit, threads, progress)
      : runWithRunner(config, phase, batch, limit, threads, progress);
  const runs: VerifyRun[] = [];
  let lo = 0; // the largest batch seen to pass (0: none yet)
  let hi = maxBatch + 1; // the smallest batch seen to fail (maxBatch + 1: none yet)
  const probe = async (batch: number) => {
    const result = await run(batch);
    runs.push(result);
    if (result.passed) lo = Math.max(lo, batch);
    else hi = Math.min(hi, batch);
    return result;
  };
  const start = Math.min(Math.max(predicted, 1), maxBatch);
  if ((await probe(start)).passed && start < maxBatch) {
    let last = await probe(start + 1);
    while (last.passed && lo < maxBatch) {
      const headroom = last.limitedPeak === null ? 0 : limit.bytes - last.limitedPeak;
      const step = Math.max(1, Math.floor(headroom / Math.max(perSample(lo), 1)));
      last = await probe(Math.min(lo + step, maxBatch));
    }
  }
  while (hi - lo > 1 && lo < maxBatch) {
    await probe(Math.floor((lo + hi) / 2));
  }
  const maxRuns = Math.ceil(Math.log2(maxBatch)) + 1;
  const proven = lo >= 1 && hi <= maxBatch && hi === lo + 1;
  return { config, phase, limit, predicted, runs, passed: lo >= 1 ? lo : null, failed: hi <= maxBatch ? hi : null, maxRuns, proven };
}
