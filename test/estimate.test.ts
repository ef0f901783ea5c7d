// The arithmetic of `clip-mem estimate` in exact bytes: the graph walk, the per-phase terms of the tiny
// and vit-b-32 presets, calibration fits and their transfer. Nothing here runs a model.
import test from 'ava';
import { presetConfig } from '../src/clip/config';
import { ElemType, Graph } from '../src/clip/onnx/graph';
import { accelerateFigures, estimatePhase, fitLine, MODEL_ONLY_MISS } from '../src/estimate/estimate';
import { forwardGraphMemory, plannedPeak, trainingGraphMemory } from '../src/estimate/graph-memory';
import { modelTerms, trainableBytes } from '../src/estimate/model';
import type { RuntimeRecord } from '../src/estimate/store';
import { syntheticIds } from '../src/scenarios/inputs';

const vitB32 = presetConfig('vit-b-32');
const tiny = presetConfig('tiny');
const byName = (components: { name: string; rss: number; vmSize: number }[]) =>
  Object.fromEntries(components.map((c) => [c.name, c.rss]));

test('the graph walk: lifetimes to the last consumer, Reshape shares its buffer, outputs live to the end', (t) => {
  const g = new Graph('walk');
  const x = g.input('x', ElemType.FLOAT, [4, 8]); // 128 B, the caller's
  const a = g.sigmoid(x); // 128 B
  const b = g.mul(a, a); // 128 B; a dies here
  const c = g.reshape(b, [32]); // a view of b
  const d = g.concat([c, c], 0); // 256 B; b dies here
  g.output(d);
  const memory = plannedPeak(g);
  // live: a; a + b; (a freed) b; b + d = 384 at the Concat
  t.is(memory.peakBytes, 384);
  t.deepEqual(memory.peakAt, { index: memory.peakAt.index, op: 'Concat' });
  t.is(memory.outputBytes, 256);
  t.is(memory.constantBytes, 8); // the reshape's int64 shape operand
});

test('vit-b-32 parameters and accelerate figures in bytes', (t) => {
  t.is(trainableBytes(vitB32), 605_109_252); // 151,277,313 float32 parameters
  t.deepEqual(accelerateFigures(vitB32, 'fp32'), { weights: 605_109_252, adamTraining: 2_420_437_008 });
  t.is((605_109_252 / 2 ** 20).toFixed(2), '577.08');
  t.is((2_420_437_008 / 2 ** 30).toFixed(2), '2.25');
  t.deepEqual(accelerateFigures(vitB32, 'fp16'), { weights: 302_554_626, adamTraining: 2_420_437_008 });
});

test('load: the checkpoint bytes (parameters + the I64 position_ids) per weight format', (t) => {
  t.is(byName(modelTerms(vitB32, 'fp32', 'load', 0).components).weights, 605_110_268); // + (77 + 50) x 8 B
  t.is(byName(modelTerms(vitB32, 'fp16', 'load', 0).components).weights, 302_555_642);
  t.is(byName(modelTerms(vitB32, 'int8', 'load', 0).components).weights, 152_650_232);
  t.is(byName(modelTerms(tiny, 'fp32', 'load', 0).components).weights, 183_564);
});

test("forward: resident weights are all but the token table, plus the 64 KiB windows of the rows clip-mem run's ids look up", (t) => {
  const terms = modelTerms(vitB32, 'fp32', 'forward', 2);
  // batch 2: bos, 5 and 6 random words, eos (padding): 32 rows of 2,048 B per 64 KiB window
  const windows = new Set(Array.from(syntheticIds(vitB32, 2), (id) => Math.floor(id / 32))).size;
  t.true(windows >= 3 && windows <= 13);
  t.is(terms.components[0].rss, 605_110_268 - 101_187_584 + windows * 65_536);
  t.is(terms.components[0].vmSize, 605_110_268); // the mapping: no memory pattern reserving it again
  const named = (name: string) => terms.components.find((c) => c.name === name)!;
  // The same rows in 2 MiB folios (1024 rows each), one more for the table's alignment, at most the table;
  // half of what they add beyond the 64 KiB windows
  const folios = new Set(Array.from(syntheticIds(vitB32, 2), (id) => Math.floor(id / 1024))).size;
  t.deepEqual(
    { rss: named('folios').rss, vmSize: named('folios').vmSize },
    { rss: Math.round((Math.min(101_187_584, (folios + 1) * 2 ** 21) - windows * 65_536) / 2), vmSize: 0 },
  );
  const run = forwardGraphMemory(vitB32, 'fp32', 2);
  // Activations: the arena's pages written (RSS) and its regions (address space), replayed
  t.is(named('activations').rss, run.touchedBytes + run.constantBytes);
  t.is(named('activations').vmSize, run.reservedBytes + run.constantBytes);
  t.is(run.reservedBytes, 7 * 2 ** 20); // regions of 1, 2 and 4 MiB (onnxruntime's profiling: 7 MiB + 428 B)
  // Inputs: float32 pixels [2, 3, 224, 224] and int64 ids [2, 77]; outputs: two embeddings [2, 512],
  // logits [2, 2], loss
  t.is(named('inputs and outputs').rss, 2 * 3 * 224 * 224 * 4 + 2 * 77 * 8 + (2 * 2 * 512 + 2 * 2 + 1) * 4);
  // tiny: its table (100 x 32 x 4 B) is smaller than one fault-around window, so all of it counts
  t.is(modelTerms(tiny, 'fp32', 'forward', 2).components[0].rss, 183_564);
  t.is(modelTerms(tiny, 'fp32', 'forward', 2).components[1].rss, 0); // no folios beyond the whole table
});

test("train: float32 parameters, the gradient buffer and both towers' outputs, two AdamW moments; SGD keeps none", (t) => {
  // One backward graph per tower
  const graphs = trainingGraphMemory(vitB32, 2, 1);
  t.is(graphs.vision[0].outputBytes, 351_396_864); // 87,849,216 vision parameters
  t.is(graphs.text[0].outputBytes, 253_712_384); // 63,428,096 text parameters
  t.is(graphs.head.outputBytes, 2 * 512 * 4 * 2 + 4 + 4); // loss, two feature gradients, logit_scale's
  const adamw = byName(modelTerms(vitB32, 'fp32', 'train', 2, 'adamw', 1).components);
  t.is(adamw.weights, 605_109_252);
  t.is(adamw.gradients, 351_396_864 + 351_396_864 + 253_712_384);
  t.is(adamw['optimizer states'], 1_210_218_504);
  // The head's live peak; each tower's run, its intermediates at most beside its outputs (malloc keeps both)
  const live =
    graphs.head.peakBytes +
    graphs.head.constantBytes +
    [graphs.text[0], graphs.vision[0]].reduce(
      (sum, g) => sum + g.intermediatePeakBytes + g.outputBytes + g.constantBytes,
      0,
    );
  t.is(adamw.activations, live - 351_396_864 - 253_712_384);
  for (const g of [graphs.text[0], graphs.vision[0]]) t.true(g.intermediatePeakBytes + g.outputBytes >= g.peakBytes);
  const sgd = byName(modelTerms(vitB32, 'fp32', 'train', 2, 'sgd', 1).components);
  t.is(sgd['optimizer states'], 0);
  // fp16 checkpoints train in float32: the same terms
  t.deepEqual(byName(modelTerms(vitB32, 'fp16', 'train', 2, 'adamw', 1).components), adamw);
  // The trainer's default, 4 segments per tower: the JS buffer of the largest segment, text layers 0-2
  // with the embeddings (3 x 3,152,384 + 49,408 x 512 + 77 x 512 = 34,793,472 parameters), and each
  // tower's largest segment run
  const segmented = trainingGraphMemory(vitB32, 2);
  t.is(segmented.text.length, 4);
  t.is(segmented.text[3].outputBytes, 139_173_888);
  t.is(Math.max(...[...segmented.text, ...segmented.vision].map((g) => g.outputBytes)), 139_173_888);
  const s4 = byName(modelTerms(vitB32, 'fp32', 'train', 2).components);
  const heapOf = (g: (typeof segmented.text)[number]) => g.intermediatePeakBytes + g.outputBytes;
  const largest = [segmented.text, segmented.vision].map((runs) =>
    runs.reduce((a, b) => (heapOf(b) > heapOf(a) ? b : a)),
  );
  t.is(s4.gradients, 139_173_888 + largest[0].outputBytes + largest[1].outputBytes);
  t.true(s4.gradients < adamw.gradients);
  const tinyTrain = byName(modelTerms(tiny, 'fp32', 'train', 2).components);
  t.is(tinyTrain.weights, 183_300);
  t.is(tinyTrain['optimizer states'], 366_600);
  t.throws(() => modelTerms(vitB32, 'int8', 'train', 1), { message: /fp32 or fp16/ });
});

test('fitLine: least squares, a single batch gives a constant', (t) => {
  t.deepEqual(
    fitLine([
      { batch: 1, y: 110 },
      { batch: 4, y: 140 },
    ]),
    { constant: 100, slope: 10 },
  );
  t.deepEqual(
    fitLine([
      { batch: 2, y: 7 },
      { batch: 2, y: 9 },
    ]),
    { constant: 8, slope: 0 },
  );
});

function record(): RuntimeRecord {
  const phases = {
    load: { rss: 100, vmSize: 1000 },
    forward: { rss: 200, vmSize: 2000 },
    train: { rss: 300, vmSize: 3000 },
  };
  return {
    key: 'test runtime',
    backend: 'onnxruntime',
    versions: { backend: 'x', node: 'y', clipMem: 'z' },
    threads: 2,
    baseline: { measuredAt: '', phases },
    calibrations: [],
  };
}

test('estimatePhase: baseline + terms with an uncalibrated band, then the constant of this config, of its family or of another model, each band wider', (t) => {
  const r = record();
  const request = {
    model: 'vit-b-32',
    dtype: 'fp32' as const,
    batch: 2,
    phase: 'load' as const,
    optimizer: 'adamw' as const,
  };
  const plain = estimatePhase(vitB32, request, r);
  t.deepEqual(plain.predicted, { rss: 100 + 605_110_268, vmSize: 1000 + 605_110_268 });
  t.deepEqual(plain.mmap, { rss: 100, vmSize: 1000 + 605_110_268 });
  t.is(plain.uncertainty.scope, 'uncalibrated');
  t.is(plain.uncertainty.rss, Math.round(MODEL_ONLY_MISS * plain.predicted.rss)); // load does not grow with the batch
  t.false(plain.uncertainty.withinGoal);
  const modelled = plain.modelled;
  r.calibrations.push({
    model: 'vit-b-32',
    dtype: 'fp32',
    phase: 'load',
    measuredAt: '',
    points: [{ batch: 1, measured: { rss: modelled.rss - 5_000_000, vmSize: modelled.vmSize }, modelled }],
    measuredFit: {
      rss: { constant: modelled.rss - 5_000_000, slope: 0 },
      vmSize: { constant: modelled.vmSize, slope: 0 },
    },
    residualFit: { rss: { constant: -5_000_000, slope: 0 }, vmSize: { constant: 0, slope: 0 } },
  });
  const calibrated = estimatePhase(vitB32, request, r);
  t.is(calibrated.predicted.rss, modelled.rss - 5_000_000);
  t.is(calibrated.calibration.kind, 'this config');
  t.is(calibrated.uncertainty.scope, 'calibrated');
  t.is(calibrated.uncertainty.rss, Math.round(0.03 * calibrated.predicted.rss)); // one point, no growth: the 3% floor
  t.true(calibrated.uncertainty.withinGoal);
  // fp16 was never calibrated: this model's fp32 constant is borrowed, with 3% + 4% of the peak
  const family = estimatePhase(vitB32, { ...request, dtype: 'fp16' }, r);
  t.is(family.uncertainty.scope, 'family');
  t.is(family.predicted.rss, family.modelled.rss - 5_000_000);
  t.is(family.uncertainty.rss, Math.round(0.07 * family.predicted.rss));
  // another model: at least the borrowed correction, scaled by the parameters when smaller
  const tinyLoad = estimatePhase(presetConfig('tiny'), { ...request, model: 'tiny' }, r);
  t.is(tinyLoad.uncertainty.scope, 'transferred');
  t.is(tinyLoad.predicted.rss - tinyLoad.modelled.rss, Math.round((-5_000_000 * 183_300) / 605_109_252));
  const large = estimatePhase(presetConfig('vit-l-14'), { ...request, model: 'vit-l-14' }, r);
  t.is(large.predicted.rss - large.modelled.rss, -5_000_000);
  t.true(Math.abs(large.uncertainty.rss - 0.09 * large.predicted.rss) <= 1); // 3% + 6% of the peak (above the 5 MB correction)
});

test('a run recorded outside its band joins the calibration and widens the band of its model and phase', (t) => {
  const r = record();
  const request = {
    model: 'vit-b-32',
    dtype: 'fp32' as const,
    batch: 1,
    phase: 'load' as const,
    optimizer: 'adamw' as const,
  };
  const modelled = estimatePhase(vitB32, request, r).modelled;
  r.calibrations.push({
    model: 'vit-b-32',
    dtype: 'fp32',
    phase: 'load',
    measuredAt: '',
    points: [{ batch: 1, measured: modelled, modelled }],
    measuredFit: { rss: { constant: modelled.rss, slope: 0 }, vmSize: { constant: modelled.vmSize, slope: 0 } },
    residualFit: { rss: { constant: 0, slope: 0 }, vmSize: { constant: 0, slope: 0 } },
  });
  const before = estimatePhase(vitB32, request, r);
  const measured = { rss: Math.round(before.predicted.rss * 1.2), vmSize: before.predicted.vmSize };
  r.observations = [
    {
      ...request,
      segments: 4,
      measured,
      predicted: before.predicted,
      band: { rss: before.uncertainty.rss, vmSize: before.uncertainty.vmSize },
      source: 'fit --verify --limit-mem 1',
      measuredAt: '',
    },
  ];
  const after = estimatePhase(vitB32, request, r);
  // the constant is the mean over the calibration's point and the observation: half the miss
  t.is(after.predicted.rss, before.predicted.rss + Math.round((measured.rss - before.predicted.rss) / 2));
  t.regex(after.calibration.from!, /1 from runs outside the band/);
  t.true(Math.abs(measured.rss - after.predicted.rss) <= after.uncertainty.rss);
  t.regex(after.uncertainty.basis, /widened to the largest miss of 1 run\(s\) recorded outside their band/);
});
