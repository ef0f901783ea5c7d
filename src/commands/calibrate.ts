// The measured side of `clip-mem estimate`: the runtime baseline and `--calibrate`, each phase run in its
// own child through `clip-mem run`'s runner; the fits are stored with the runtime (estimate/store.ts) and
// the estimate (estimate/estimate.ts) reads them back.
import { resolveClipConfig, type WeightFormat } from '../clip/config';
import { BASELINE_MODEL, estimatePhase, fitLine } from '../estimate/estimate';
import { modelTerms, PHASES, phasesOf, sumRss, sumVmSize, type Optimizer, type Phase } from '../estimate/model';
import {
  loadRuntimeRecord,
  saveRuntimeRecord,
  type Calibration,
  type Peak,
  type RuntimeRecord,
} from '../estimate/store';
import { runPhases, runTrainStep } from './phase-runs';
import { DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';

/** The runtime baseline of this runtime, measured in children the first time (or when `refresh`). */
export async function ensureBaseline(
  threads: number,
  progress: (line: string) => void,
  refresh = false,
): Promise<RuntimeRecord> {
  const record = loadRuntimeRecord(threads);
  if (record.baseline?.trainChild && !refresh) return record;
  if (record.baseline && !refresh) {
    // A store from before the training child's baseline: only that is measured.
    record.baseline.trainChild = await trainChildBaseline(threads, progress);
    saveRuntimeRecord(record);
    return record;
  }
  progress(
    `measuring the runtime baseline (${record.key}): the ${BASELINE_MODEL} preset's load, forward and train in children, once`,
  );
  const runs = await runPhases({ model: BASELINE_MODEL, dtype: 'fp32', batch: 1, phases: PHASES, threads, progress });
  const config = resolveClipConfig(BASELINE_MODEL);
  const phases = {} as Record<Phase, Peak>;
  for (const run of runs) {
    const m = run.result.memory;
    if (run.result.status !== 'passed' || m.rssPeak === null || m.vmSizePeak === null) {
      throw new Error(
        `the baseline run of ${run.result.name} (${BASELINE_MODEL}) failed: ${run.result.error ?? run.result.diagnosis.cause}; try \`${run.result.command}\``,
      );
    }
    const terms = modelTerms(config, 'fp32', run.phase, 1).components;
    phases[run.phase] = { rss: m.rssPeak - sumRss(terms), vmSize: m.vmSizePeak - sumVmSize(terms) };
  }
  record.baseline = {
    measuredAt: new Date().toISOString(),
    phases,
    trainChild: await trainChildBaseline(threads, progress),
  };
  saveRuntimeRecord(record);
  return record;
}

/** The tiny preset's plain SGD step in clip-mem's training child, less its terms. */
async function trainChildBaseline(threads: number, progress: (line: string) => void): Promise<Peak> {
  const request = { model: BASELINE_MODEL, dtype: 'fp32' as const, batch: 1, optimizer: 'sgd' as const };
  const run = await runTrainStep({ ...request, segments: DEFAULT_TRAINING_SEGMENTS, threads, progress });
  if (!run.passed || run.rssPeak === null || run.vmSizePeak === null)
    throw new Error(`the baseline run of the training child (${BASELINE_MODEL}, plain SGD) failed: ${run.cause}`);
  const terms = modelTerms(resolveClipConfig(BASELINE_MODEL), 'fp32', 'train', 1, 'sgd').components;
  return { rss: run.rssPeak - sumRss(terms), vmSize: run.vmSizePeak - sumVmSize(terms) };
}

/**
 * `estimate --calibrate`: each phase of the model at each batch in its own child; per phase, the
 * measured peaks and the fits (measured, and measured minus modelled) are stored with the runtime. The
 * training step is the optimizer's: AdamW through `clip-mem run`'s clip-train, plain SGD (`sgd`: the train
 * phase only, the others have no optimizer) in clip-mem's training child, as `fit --verify` runs it.
 */
export async function calibrate(
  model: string,
  dtype: WeightFormat,
  batches: readonly number[],
  threads: number,
  progress: (line: string) => void,
  only?: Phase,
  optimizer: Optimizer = 'adamw',
): Promise<Calibration[]> {
  let record = await ensureBaseline(threads, progress);
  const config = resolveClipConfig(model);
  const phases = optimizer === 'sgd' ? (['train'] as const) : phasesOf(dtype, only);
  const points = new Map<Phase, Calibration['points']>(phases.map((p) => [p, []]));
  for (const [i, batch] of batches.entries()) {
    // The load does not depend on the batch: measured once.
    const measured: { phase: Phase; peak: Peak }[] = [];
    if (optimizer === 'sgd') {
      const run = await runTrainStep({
        model,
        dtype,
        batch,
        optimizer,
        segments: DEFAULT_TRAINING_SEGMENTS,
        threads,
        progress,
      });
      if (!run.passed || run.rssPeak === null || run.vmSizePeak === null)
        throw new Error(
          `calibration run of the plain SGD step at batch ${batch} failed: ${run.cause}${run.evidence[0] ? ` (${run.evidence[0]})` : ''}`,
        );
      measured.push({ phase: 'train', peak: { rss: run.rssPeak, vmSize: run.vmSizePeak } });
    } else {
      const runs = await runPhases({
        model,
        dtype,
        batch,
        phases: i === 0 ? phases : phases.filter((p) => p !== 'load'),
        threads,
        progress,
      });
      for (const run of runs) {
        const m = run.result.memory;
        if (run.result.status !== 'passed' || m.rssPeak === null || m.vmSizePeak === null) {
          throw new Error(
            `calibration run ${run.result.name} at batch ${batch} failed: ${run.result.error ?? run.result.diagnosis.cause}; try \`${run.result.command}\``,
          );
        }
        measured.push({ phase: run.phase, peak: { rss: m.rssPeak, vmSize: m.vmSizePeak } });
      }
    }
    for (const { phase, peak } of measured) {
      const modelled = estimatePhase(
        config,
        { model, dtype, batch, phase, optimizer },
        { ...record, calibrations: [] },
      ).modelled;
      points.get(phase)!.push({ batch, measured: peak, modelled });
    }
  }
  const calibrations = phases.map((phase): Calibration => {
    const ps = points.get(phase)!;
    const line = (y: (p: Calibration['points'][number]) => number) =>
      fitLine(ps.map((p) => ({ batch: p.batch, y: y(p) })));
    return {
      model: config.name,
      dtype,
      phase,
      ...(phase === 'train' ? { optimizer } : {}),
      measuredAt: new Date().toISOString(),
      points: ps,
      measuredFit: { rss: line((p) => p.measured.rss), vmSize: line((p) => p.measured.vmSize) },
      residualFit: {
        rss: line((p) => p.measured.rss - p.modelled.rss),
        vmSize: line((p) => p.measured.vmSize - p.modelled.vmSize),
      },
    };
  });
  // Replaced: this model's and dtype's calibrations of the phases measured (a training step's of this optimizer only).
  const replaced = (c: Calibration) =>
    c.model === config.name &&
    c.dtype === dtype &&
    phases.includes(c.phase) &&
    (c.phase !== 'train' || (c.optimizer ?? 'adamw') === optimizer);
  record = loadRuntimeRecord(threads);
  record.calibrations = [...record.calibrations.filter((c) => !replaced(c)), ...calibrations];
  saveRuntimeRecord(record);
  return calibrations;
}
