// `clip-mem estimate`: the model terms (model.ts) on top of the measured runtime baseline, corrected by
// calibration when there is one, with the uncertainty that follows from what was measured; and the
// calibration itself (children at a few batch sizes, least-squares fits).
import { resolveClipConfig, type ClipConfig, type WeightFormat } from '../clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';
import { modelTerms, sumRss, sumVmSize, trainableBytes, type Component, type Optimizer, type Phase } from './model';
import { type Calibration, type LinearFit, type Peak, type RuntimeRecord } from './store';

/** Bumped when a field of `estimate --json` changes meaning or disappears (schema/estimate.schema.json). */
export const ESTIMATE_SCHEMA = 'clip-mem-estimate/1';

export const BASELINE_MODEL = 'tiny';

/** The run-to-run variation of a phase's peak seen on this project's machine (training, vit-b-32). */
export const RUN_TO_RUN = 0.03;

/**
 * Why a plain SGD step stays the terms and the baseline alone. Measured here (vit-b-32 fp32, 2 threads): the
 * SGD step in the training child grew 8 MiB per sample between batch 1 and 4 but ~28 MiB per sample between
 * 17 and 21 (malloc reuses the freed load buffers at small batches), so a calibration at 1 and 4 predicted
 * 110 MiB (8%) below the measured peak at batch 18, where the terms alone were 60 MiB (4%) above: on the
 * unsafe side, where `fit` must not be.
 */
export const SGD_MODEL_ONLY =
  'plain SGD is model-only (the terms and the baseline, never calibrated): a calibration at small batches does not extrapolate to the ' +
  'batches a limit decides (vit-b-32: 8 MiB/sample at batch 1-4, ~28 MiB/sample at 17-21); uncalibrated, it erred 4% high at batch 18';

export interface EstimateRequest {
  /** Preset name, model directory or config.json. */
  model: string;
  dtype: WeightFormat;
  batch: number;
  phase: Phase;
  optimizer: Optimizer;
  /** train: backward graphs per tower (the trainer's `segments`; its default is what `clip-mem run` trains with). */
  segments?: number;
}

export interface Uncertainty {
  rss: number;
  vmSize: number;
  basis: string;
}

export interface PhaseEstimate extends EstimateRequest {
  /** Runtime baseline, the model terms, then the calibration correction (when there is one). */
  components: Component[];
  /** Baseline + model terms, before calibration. */
  modelled: Peak;
  predicted: Peak;
  calibration: { kind: 'this config' | 'transferred' | 'none'; from?: string };
  /** null when nothing was calibrated: the figure is the model terms and the baseline alone. */
  uncertainty: Uncertainty | null;
  /** load only: the same checkpoint by mmap (nothing resident until used; the file is address space). */
  mmap?: Peak;
}

const at = (fit: LinearFit, batch: number) => fit.constant + fit.slope * batch;

/** Least squares of y = constant + slope x batch; one distinct batch gives a constant only. */
export function fitLine(points: readonly { batch: number; y: number }[]): LinearFit {
  const n = points.length;
  const meanX = points.reduce((s, p) => s + p.batch, 0) / n;
  const meanY = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.batch - meanX) ** 2, 0);
  const slope = sxx === 0 ? 0 : points.reduce((s, p) => s + (p.batch - meanX) * (p.y - meanY), 0) / sxx;
  return { constant: meanY - slope * meanX, slope };
}

/** Per-sample bytes of a phase's terms: how a per-sample correction measured on one model scales to another. */
function termsPerSample(
  config: ClipConfig,
  dtype: WeightFormat,
  phase: Phase,
  optimizer: Optimizer,
  segments: number,
): number {
  if (phase === 'load') return 0;
  const at = (batch: number) => sumRss(modelTerms(config, dtype, phase, batch, optimizer, segments).components);
  return at(2) - at(1);
}

/** The calibration that applies: this model, dtype and phase; else the same phase's, preferring the dtype. */
function pickCalibration(
  record: RuntimeRecord,
  config: ClipConfig,
  dtype: string,
  request: EstimateRequest,
): { calibration: Calibration; exact: boolean } | null {
  const { phase, optimizer } = request;
  // A training step's correction belongs to its optimizer (they leave the heap differently).
  const ofPhase = record.calibrations.filter(
    (c) => c.phase === phase && (phase !== 'train' || (c.optimizer ?? 'adamw') === optimizer),
  );
  const sameSegments =
    phase !== 'train' || (request.segments ?? DEFAULT_TRAINING_SEGMENTS) === DEFAULT_TRAINING_SEGMENTS; // calibration runs `clip-mem run`: the trainer's default
  const exact = sameSegments ? ofPhase.find((c) => c.model === config.name && c.dtype === dtype) : undefined;
  if (exact) return { calibration: exact, exact: true };
  const other = ofPhase.find((c) => c.dtype === dtype) ?? ofPhase[0];
  return other ? { calibration: other, exact: false } : null;
}

export function estimatePhase(config: ClipConfig, request: EstimateRequest, record: RuntimeRecord): PhaseEstimate {
  const baseline = record.baseline;
  if (!baseline) throw new Error(`no runtime baseline for ${record.key}: measure it first (ensureBaseline)`);
  const terms = modelTerms(
    config,
    request.dtype,
    request.phase,
    request.batch,
    request.optimizer,
    request.segments ?? DEFAULT_TRAINING_SEGMENTS,
  );
  const base = baseline.phases[request.phase];
  const components: Component[] = [
    {
      name: 'runtime baseline',
      rss: base.rss,
      vmSize: base.vmSize,
      basis: `Node + onnxruntime, measured: the ${BASELINE_MODEL} preset's ${request.phase} in a child`,
    },
    ...terms.components,
  ];
  const modelled = { rss: sumRss(components), vmSize: sumVmSize(components) };
  const estimate: PhaseEstimate = {
    ...request,
    components,
    modelled,
    predicted: modelled,
    calibration: { kind: 'none' },
    uncertainty: null,
  };
  if (request.phase === 'load') {
    const weights = terms.components[0].vmSize;
    estimate.mmap = { rss: base.rss, vmSize: base.vmSize + weights };
  }
  const picked = pickCalibration(record, config, request.dtype, request);
  if (!picked) return estimate;
  const { calibration: stored, exact } = picked;
  const calibration = refit(stored, record);
  const from = `${calibration.model} ${calibration.dtype} at batch ${calibration.points.map((p) => p.batch).join(', ')}`;
  let residual: Peak;
  if (exact) {
    residual = {
      rss: Math.round(at(calibration.residualFit.rss, request.batch)),
      vmSize: Math.round(at(calibration.residualFit.vmSize, request.batch)),
    };
  } else {
    // The constant is the runtime's (it transfers as is); the per-sample part scales with the activations.
    const source = resolveClipConfig(calibration.model);
    const sourceSlope = termsPerSample(
      source,
      calibration.dtype as WeightFormat,
      request.phase,
      request.optimizer,
      DEFAULT_TRAINING_SEGMENTS,
    );
    const scale =
      sourceSlope > 0
        ? termsPerSample(
            config,
            request.dtype,
            request.phase,
            request.optimizer,
            request.segments ?? DEFAULT_TRAINING_SEGMENTS,
          ) / sourceSlope
        : 1;
    const scaled = (fit: LinearFit) => Math.round(fit.constant + fit.slope * scale * request.batch);
    residual = { rss: scaled(calibration.residualFit.rss), vmSize: scaled(calibration.residualFit.vmSize) };
  }
  components.push({
    name: 'calibration',
    rss: residual.rss,
    vmSize: residual.vmSize,
    basis: `${exact ? 'measured' : 'transferred from'} ${from}: what the terms miss (allocator slack, runtime buffers)`,
  });
  estimate.predicted = { rss: modelled.rss + residual.rss, vmSize: modelled.vmSize + residual.vmSize };
  estimate.calibration = { kind: exact ? 'this config' : 'transferred', from };
  estimate.uncertainty = exact
    ? fitUncertainty(calibration, estimate.predicted)
    : transferUncertainty(
        record,
        request,
        residual,
        estimate.predicted,
        termsPerSample(
          config,
          request.dtype,
          request.phase,
          request.optimizer,
          request.segments ?? DEFAULT_TRAINING_SEGMENTS,
        ),
      );
  return estimate;
}

/** The stored points fitted against the current model terms and baseline (the model may have changed since). */
function refit(calibration: Calibration, record: RuntimeRecord): Calibration {
  const config = resolveClipConfig(calibration.model);
  const points = calibration.points.map((p) => {
    const request: EstimateRequest = {
      model: calibration.model,
      dtype: calibration.dtype as WeightFormat,
      batch: p.batch,
      phase: calibration.phase,
      optimizer: (calibration.optimizer ?? 'adamw') as Optimizer,
    };
    return { ...p, modelled: estimatePhase(config, request, { ...record, calibrations: [] }).modelled };
  });
  const line = (y: (p: Calibration['points'][number]) => number) =>
    fitLine(points.map((p) => ({ batch: p.batch, y: y(p) })));
  return {
    ...calibration,
    points,
    residualFit: {
      rss: line((p) => p.measured.rss - p.modelled.rss),
      vmSize: line((p) => p.measured.vmSize - p.modelled.vmSize),
    },
  };
}

/**
 * A calibrated config: the worst miss of the fit at its own points, at least 3% (the same training step
 * measured again here varied by up to 3%: the garbage collector's timing decides what is still held).
 */
function fitUncertainty(calibration: Calibration, predicted: Peak): Uncertainty {
  const worst = (key: keyof Peak) =>
    Math.max(
      RUN_TO_RUN * predicted[key],
      ...calibration.points.map((p) =>
        Math.abs(p.measured[key] - (p.modelled[key] + at(calibration.residualFit[key], p.batch))),
      ),
    );
  return {
    rss: Math.round(worst('rss')),
    vmSize: Math.round(worst('vmSize')),
    basis: `the calibration fit's largest miss at its own points (at least ${100 * RUN_TO_RUN}%, the run-to-run variation)`,
  };
}

/**
 * A config never run: the correction borrowed from another might not hold at all, and the terms alone
 * missed by up to the worst relative error seen on the calibrated configs: the larger of the two; plus
 * the per-sample growth, which the terms got wrong on the calibrated configs by up to the fraction their
 * residual slope shows, applied to this config's own per-sample terms.
 */
function transferUncertainty(
  record: RuntimeRecord,
  request: EstimateRequest,
  residual: Peak,
  predicted: Peak,
  perSample: number,
): Uncertainty {
  const calibrations = record.calibrations.filter((c) => c.phase === request.phase).map((c) => refit(c, record));
  const points = calibrations.flatMap((c) => c.points);
  const worst = (key: keyof Peak) =>
    Math.max(0, ...points.map((p) => Math.abs(p.measured[key] - p.modelled[key]) / p.measured[key]));
  const slopeMiss = Math.max(
    0,
    ...calibrations.map((c) => {
      const modelled = termsPerSample(
        resolveClipConfig(c.model),
        c.dtype as WeightFormat,
        c.phase,
        (c.optimizer ?? 'adamw') as Optimizer,
        DEFAULT_TRAINING_SEGMENTS,
      );
      return modelled > 0 ? Math.abs(c.residualFit.rss.slope) / modelled : 0;
    }),
  );
  const growth = slopeMiss * perSample * request.batch;
  return {
    rss: Math.round(Math.max(Math.abs(residual.rss), worst('rss') * predicted.rss) + growth),
    vmSize: Math.round(Math.max(Math.abs(residual.vmSize), worst('vmSize') * predicted.vmSize) + growth),
    basis:
      `never run: the borrowed correction or the terms' worst miss on the calibrated configs (${(100 * worst('rss')).toFixed(1)}% of RSS), ` +
      `whichever is larger, + ${(100 * slopeMiss).toFixed(0)}% of this config's per-sample terms x batch (how far the per-sample terms were off there)`,
  };
}

/**
 * What `accelerate estimate-memory` prints for the same model: the parameters at the dtype's size, and
 * for training with Adam four times the float32 parameters (weights, gradients, two moments).
 */
export function accelerateFigures(config: ClipConfig, dtype: WeightFormat): { weights: number; adamTraining: number } {
  const fp32 = trainableBytes(config);
  const perParameter = { fp32: 4, fp16: 2, int8: 1 }[dtype];
  return { weights: (fp32 / 4) * perParameter, adamTraining: 4 * fp32 };
}
