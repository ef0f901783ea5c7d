// `clip-mem fit`: the largest batch whose predicted peak stays under a limit, the cheapest change (dtype,
// optimizer, preset) when none does, and `--verify`'s search: batches run in children under the limit,
// the ones between the band's edges first, until a passing batch and the failing one above it are known.
import { PRESET_NAMES, resolveClipConfig, type ClipConfig, type WeightFormat } from '../clip/config';
import type { LimitKind } from '../core/limits';
import { estimatePhase, type PhaseEstimate } from './estimate';
import { modelTerms, type Optimizer, type Phase } from './model';
import type { RuntimeRecord } from './store';

/** The most backward segments the trainer takes: one per layer of the deeper tower (the fewest gradients at once). */
/** Bumped when a field of `fit --json` changes meaning or disappears (schema/fit.schema.json). */
export const FIT_SCHEMA = 'clip-mem-fit/1';

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
  data: {
    option: '--limit-data',
    counts: 'VmSize less the read-only weight mapping (RLIMIT_DATA counts private writable memory; an upper bound)',
  },
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
  /** What the limit counts at `batch`: the batch fits when the band's upper edge is under the limit. */
  limited: LimitedFigure;
  /** The estimate one batch up (absent at --max-batch). */
  next?: PhaseEstimate;
  nextLimited?: LimitedFigure;
  /** What changed from the request, in words ('' for the request itself). */
  change: string;
}

/** What the limit counts, as predicted, with the band's half-width and its upper edge (predicted + band). */
export interface LimitedFigure {
  predicted: number;
  band: number;
  upper: number;
}

export function limitedFigure(e: PhaseEstimate, kind: LimitKind, config: ClipConfig): LimitedFigure {
  const key = kind === 'mem' ? 'rss' : 'vmSize';
  // Read-only file mappings (the forward's weights) are not data; the copy paths are.
  const mapped =
    kind === 'data' && e.phase === 'forward' ? modelTerms(config, e.dtype, 'load', 0).components[0].vmSize : 0;
  const predicted = e.predicted[key] - mapped;
  const band = e.uncertainty[key];
  return { predicted, band, upper: predicted + band };
}

/** ceil(log2(maxBatch)) + 1: the most runs a search for the boundary in [1, maxBatch] takes. */
export function maxSearchRuns(maxBatch: number): number {
  let halvings = 0;
  while (2 ** halvings < maxBatch) halvings++;
  return halvings + 1;
}

/** The largest batch known to pass (0: none) and the smallest known to fail (maxBatch + 1: none). */
export interface Boundary {
  passed: number;
  failed: number;
}

/** Batches from..to (inclusive). */
export interface BatchRange {
  from: number;
  to: number;
}

/**
 * The boundary between the batches in [1, maxBatch] that pass and those that fail (a batch passes when
 * every smaller one does): yields each batch to try and is sent whether it passed; returns once the
 * largest passing batch and the one above it are known (the range's ends count as known). `expected`:
 * where the largest passing batch likely is (a prediction, or the batches between a band's two edges).
 * While the boundary can still be there, the search runs the batch above that range, then bisects the
 * range (2 runs when it is one batch and right); it bisects the whole of what is left otherwise. Each
 * try stays where either outcome leaves no more candidates than the remaining runs can halve down, so it
 * never takes more than maxSearchRuns(maxBatch).
 */
export function* searchBoundary(maxBatch: number, expected?: BatchRange): Generator<number, Boundary, boolean> {
  let passed = 0;
  let failed = maxBatch + 1;
  for (let left = maxSearchRuns(maxBatch); failed - passed > 1; left--) {
    const half = 2 ** (left - 1);
    const low = Math.max(passed + 1, failed - half);
    const high = Math.min(failed - 1, passed + half);
    // Unreachable while the bound holds: 1..maxBatch has maxBatch + 1 boundaries, at most 2^maxSearchRuns.
    if (left === 0 || low > high)
      throw new Error(`the boundary search over 1..${maxBatch} ran out of runs between ${passed} and ${failed}`);
    const middle = (passed + failed) / 2;
    // The largest passing batch is one of passed..failed - 1; of those, the expected ones. The batch above
    // them first when, once it fails, what is left leaves a run to spare under the bound to aim with.
    const from = Math.max(passed, expected?.from ?? Infinity);
    const to = Math.min(failed - 1, expected?.to ?? -Infinity);
    const above = to + 1 < failed && to + 1 - passed <= 2 ** (left - 2);
    const target = from > to ? middle : above ? to + 1 : (from + to + 1) / 2;
    const [batch] = [Math.floor(target), Math.ceil(target)]
      .map((b) => Math.min(Math.max(b, low), high))
      .sort((a, b) => Math.abs(a - target) - Math.abs(b - target) || Math.abs(a - middle) - Math.abs(b - middle));
    if (yield batch) passed = batch;
    else failed = batch;
  }
  return { passed, failed };
}

/**
 * The verification loop of both `fit --verify` and `fit -- <command>`: searchBoundary over [1, maxBatch],
 * each candidate tried by `attempt` (a run: true when it passed), one at a time.
 */
export async function searchByRuns(
  maxBatch: number,
  expected: BatchRange | undefined,
  attempt: (candidate: number, run: number) => Promise<boolean>,
): Promise<Boundary> {
  const search = searchBoundary(maxBatch, expected);
  let step = search.next();
  for (let run = 1; !step.done; run++) step = search.next(await attempt(step.value, run));
  return step.value;
}

/** The largest batch in [1, maxBatch] whose figure fits (figures grow with the batch), or 0. */
export function largestFitting(fits: (batch: number) => boolean, maxBatch: number): number {
  const search = searchBoundary(maxBatch);
  let step = search.next();
  while (!step.done) step = search.next(fits(step.value));
  return step.value.passed;
}

function answerFor(
  request: FitConfig,
  phase: Phase,
  limit: FitLimit,
  record: RuntimeRecord,
  maxBatch: number,
  change: string,
): FitAnswer {
  const config = resolveClipConfig(request.model);
  const estimate = (batch: number) => estimatePhase(config, { ...request, batch, phase }, record);
  // The band's upper edge under the limit: a run lands above the prediction as often as below it.
  const fits = (batch: number) => limitedFigure(estimate(batch), limit.kind, config).upper <= limit.bytes;
  const batch = phase === 'load' ? (fits(1) ? 1 : 0) : largestFitting(fits, maxBatch);
  const at = estimate(Math.max(batch, 1));
  const answer: FitAnswer = {
    ...request,
    batch,
    estimate: at,
    limited: limitedFigure(at, limit.kind, config),
    change,
  };
  if (phase !== 'load' && batch < maxBatch) {
    answer.next = estimate(batch + 1);
    answer.nextLimited = limitedFigure(answer.next, limit.kind, config);
  }
  return answer;
}

/**
 * Where runs will likely find the largest passing batch of an answer: from the batch whose band's upper
 * edge fits (the answer) to the last whose lower edge does. `fit --verify` searches there first.
 */
export function expectedBoundary(
  answer: FitAnswer,
  phase: Phase,
  limit: FitLimit,
  record: RuntimeRecord,
  maxBatch: number,
): BatchRange {
  if (phase === 'load') return { from: answer.batch, to: answer.batch };
  const config = resolveClipConfig(answer.model);
  const lowerEdgeFits = (batch: number) => {
    const figure = limitedFigure(estimatePhase(config, { ...answer, batch, phase }, record), limit.kind, config);
    return figure.predicted - figure.band <= limit.bytes;
  };
  return { from: answer.batch, to: Math.max(answer.batch, largestFitting(lowerEdgeFits, maxBatch)) };
}

/**
 * The request's answer, then the changes in the order of their cost to the user: a smaller weight
 * format; for training, backward segments (same result), plain SGD, both; then smaller presets.
 */
export function fitPlan(
  request: FitConfig,
  phase: Phase,
  limit: FitLimit,
  record: RuntimeRecord,
  maxBatch: number,
): { answer: FitAnswer; alternatives: FitAnswer[] } {
  const answer = answerFor(request, phase, limit, record, maxBatch, '');
  const alternatives: FitAnswer[] = [];
  const formats: WeightFormat[] = phase === 'train' ? ['fp16'] : ['fp16', 'int8'];
  for (const dtype of formats.filter(
    (d) => d !== request.dtype && ['fp32', 'fp16', 'int8'].indexOf(d) > ['fp32', 'fp16', 'int8'].indexOf(request.dtype),
  )) {
    const change =
      phase === 'train'
        ? `--dtype ${dtype} (the trainer widens it to float32: training memory is the same)`
        : `--dtype ${dtype}`;
    alternatives.push(answerFor({ ...request, dtype }, phase, limit, record, maxBatch, change));
  }
  if (phase === 'train') {
    const most = mostSegments(resolveClipConfig(request.model));
    const segmented = `--segments ${most} (the trainer's backward one graph per layer: fewer gradients at once, same compute)`;
    if (request.segments < most)
      alternatives.push(answerFor({ ...request, segments: most }, phase, limit, record, maxBatch, segmented));
    if (request.optimizer === 'adamw') {
      alternatives.push(
        answerFor(
          { ...request, optimizer: 'sgd' },
          phase,
          limit,
          record,
          maxBatch,
          '--optimizer sgd (no optimizer state)',
        ),
      );
      if (request.segments < most) {
        alternatives.push(
          answerFor(
            { ...request, optimizer: 'sgd', segments: most },
            phase,
            limit,
            record,
            maxBatch,
            `--optimizer sgd and ${segmented}`,
          ),
        );
      }
    }
  }
  const size = (name: string) => modelTerms(resolveClipConfig(name), 'fp32', 'load', 0).components[0].rss;
  const current = size(request.model);
  for (const preset of PRESET_NAMES.filter((p) => p !== request.model && size(p) < current).sort(
    (a, b) => size(b) - size(a),
  )) {
    alternatives.push(
      answerFor({ ...request, model: preset }, phase, limit, record, maxBatch, `--model ${preset} (a smaller model)`),
    );
  }
  return { answer, alternatives };
}

/** The cheapest fitting answer: the request itself, else the first alternative that fits batch 1. */
export function cheapest(plan: { answer: FitAnswer; alternatives: FitAnswer[] }): FitAnswer | undefined {
  return plan.answer.batch > 0 ? plan.answer : plan.alternatives.find((a) => a.batch > 0);
}
