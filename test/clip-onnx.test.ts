import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clipLayout, fileOrder, presetConfig, readHfConfig } from '../src/clip/config';
import { ClipTfjs } from '../src/clip/tfjs/model';
import { dequantizeInt8, int8ScaleName, toFloat32 } from '../src/clip/dtype';
import {
  encodeSafetensorsHeader,
  loadSafetensors,
  parseSafetensorsHeader,
  serializeSafetensors,
} from '../src/clip/safetensors';
import { ensureSyntheticCheckpoint } from '../src/clip/synthetic';
import { buildInferenceModel, createOnnxClip, onnxruntime } from '../src/clip/onnx/runtime';
import { buildTrainingModels, createOnnxTrainer, OnnxTrainer } from '../src/clip/onnx/train';
import { ElemType, Graph } from '../src/clip/onnx/graph';
import { gradients } from '../src/clip/onnx/grad';
import { referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const inputs = JSON.parse(fs.readFileSync(path.join(referenceDir, 'inputs.json'), 'utf8'));
const outputs = JSON.parse(fs.readFileSync(path.join(referenceDir, 'outputs.json'), 'utf8'));
const pixels = Float32Array.from(inputs.pixel_values as number[]);
const ids = (inputs.input_ids as number[][]).flat();
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flat(4) : [x as number]);

function maxDiff(actual: ArrayLike<number>, expected: readonly number[]): number {
  if (actual.length !== expected.length) return Infinity;
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i] - expected[i]));
  return max;
}

test('ORT forward reproduces the PyTorch reference (embeddings, logits, loss) within 1e-4', async (t) => {
  const clip = await createOnnxClip(referenceDir, { threads: 1 });
  t.is(clip.weightFormat, 'fp32');
  const out = await clip.forward(pixels, ids, 3);
  t.true(maxDiff(out.imageEmbeds, flat(outputs.image_embeds)) < 1e-4);
  t.true(maxDiff(out.textEmbeds, flat(outputs.text_embeds)) < 1e-4);
  t.true(maxDiff(out.logitsPerImage, flat(outputs.logits_per_image)) < 1e-4);
  t.true(Math.abs(out.loss - outputs.loss) < 1e-4);
  // The towers alone give the same embeddings.
  t.true(maxDiff(await clip.encodeImage(pixels, 3), Array.from(out.imageEmbeds)) < 1e-6);
  t.true(maxDiff(await clip.encodeText(ids, 3), Array.from(out.textEmbeds)) < 1e-6);
  await clip.close();
  // onnxruntime's telemetry stayed off: it would have left /tmp/mat-debug-<pid>.log (and run a thread).
  t.is(process.env.ORT_DISABLE_TELEMETRY, '1');
  t.false(fs.existsSync(`/tmp/mat-debug-${process.pid}.log`));
});

test('bad input shapes get errors that say what the model takes', async (t) => {
  const clip = await createOnnxClip(referenceDir, { threads: 1 });
  await t.throwsAsync(clip.encodeImage(new Float32Array(10), 1), {
    message: /10 pixel values for batch 1; expected \[1, 3, 32, 32\]/,
  });
  await t.throwsAsync(clip.encodeText([98, 99, 99], 2), { message: /3 ids do not split into 2 rows/ });
  await t.throwsAsync(clip.encodeText(new Array(17).fill(99), 1), {
    message: /17 tokens; this model takes at most 16/,
  });
  await clip.close();
});

/** Runs computeGradients and keeps copies of the gradients asked for. */
async function gradientsOf(trainer: OnnxTrainer, images: Float32Array, texts: number[], names: readonly string[]) {
  const kept = new Map<string, Float32Array>();
  let visited = 0;
  const loss = await trainer.computeGradients(images, texts, (name, grad) => {
    visited++;
    if (names.includes(name)) kept.set(name, grad.slice());
  });
  return { loss, grads: kept, visited };
}

test('training gradients and one AdamW step reproduce PyTorch within 1e-4', async (t) => {
  const { lr, betas, eps, weight_decay: weightDecay } = outputs.adamw;
  const trainer = await createOnnxTrainer(referenceDir, {
    batch: 3,
    threads: 1,
    adamw: { lr, beta1: betas[0], beta2: betas[1], eps, weightDecay },
  });
  t.is(trainer.params.size, 78); // every tensor but the two position_ids
  const { loss, grads, visited } = await gradientsOf(trainer, pixels, ids, Object.keys(outputs.grads_step0));
  t.is(visited, 78);
  t.true(Math.abs(loss - outputs.loss) < 1e-4);
  for (const [name, expected] of Object.entries(outputs.grads_step0)) {
    t.true(maxDiff(grads.get(name)!, flat(expected)) < 1e-4, name);
  }
  t.true(Math.abs((await trainer.step(pixels, ids)) - outputs.loss) < 1e-4);
  t.is(trainer.steps, 1);
  for (const [name, expected] of Object.entries(outputs.params_after_step)) {
    t.true(maxDiff(trainer.params.get(name)!, flat(expected)) < 1e-4, name);
  }
  t.true(Math.abs((await trainer.loss(pixels, ids)) - outputs.loss_after_step) < 1e-4);
  await trainer.close();
});

test('gradients match central finite differences, shorter text included (Slice -> Pad rule)', async (t) => {
  const seq = 8;
  const shortIds = (inputs.input_ids as number[][]).map((row) => [...row.slice(0, seq - 1), 99]).flat();
  const trainer = await createOnnxTrainer(referenceDir, { batch: 3, seq, threads: 1 });
  const probes: Array<[string, number]> = [
    ['text_model.embeddings.position_embedding.weight', 3 * 32 + 5],
    ['text_model.embeddings.position_embedding.weight', 12 * 32 + 1], // past seq: gradient exactly 0
    ['vision_model.embeddings.class_embedding', 7],
    ['vision_model.pre_layrnorm.weight', 2],
    ['text_model.encoder.layers.1.self_attn.k_proj.weight', 40],
    ['vision_model.embeddings.patch_embedding.weight', 100],
    ['logit_scale', 0],
  ];
  const { grads } = await gradientsOf(
    trainer,
    pixels,
    shortIds,
    probes.map(([name]) => name),
  );
  const analytic = probes.map(([name, i]) => grads.get(name)![i]);
  t.is(analytic[1], 0);
  const h = 1e-2;
  for (const [k, [name, i]] of probes.entries()) {
    const p = trainer.params.get(name)!;
    const keep = p[i];
    p[i] = keep + h;
    const up = await trainer.loss(pixels, shortIds);
    p[i] = keep - h;
    const down = await trainer.loss(pixels, shortIds);
    p[i] = keep;
    const numeric = (up - down) / (2 * h);
    t.true(
      Math.abs(numeric - analytic[k]) < 2e-3 + 2e-2 * Math.abs(numeric),
      `${name}[${i}]: ${analytic[k]} vs ${numeric}`,
    );
  }
  await trainer.close();
});

test('gradient rules of Div, Sqrt, Concat, Expand and ReduceSum match finite differences', async (t) => {
  // f(x, y) = sum(concat(x / sqrt(sum(x*x)), expand(y)) * w)
  const g = new Graph('rules');
  const x = g.input('x', ElemType.FLOAT, [2, 3]);
  const y = g.input('y', ElemType.FLOAT, [1, 3]);
  const w = g.constant(
    Float32Array.from({ length: 15 }, (_, i) => Math.sin(i + 1)),
    [5, 3],
  );
  const n = g.div(x, g.sqrt(g.reduceSum(g.mul(x, x), [-1], true)));
  const loss = g.reduceSum(g.mul(g.concat([n, g.expand(y, [3, 3])], 0), w), [0, 1], false);
  g.output(loss, 'loss');
  const grads = gradients(g, loss, [x, y]);
  g.output(grads.get(x)!, 'dx');
  g.output(grads.get(y)!, 'dy');
  const ort = onnxruntime();
  const session = await ort.InferenceSession.create(g.toModel(), { intraOpNumThreads: 1 });
  const xv = Float32Array.from([0.3, -1.2, 0.5, 2, 0.1, -0.4]);
  const yv = Float32Array.from([0.7, -0.2, 1.1]);
  const run = async (a: Float32Array, b: Float32Array) =>
    session.run({ x: new ort.Tensor('float32', a, [2, 3]), y: new ort.Tensor('float32', b, [1, 3]) });
  const base = await run(xv, yv);
  const h = 1e-3;
  for (const [which, values, name] of [
    ['x', xv, 'dx'],
    ['y', yv, 'dy'],
  ] as const) {
    for (let i = 0; i < values.length; i++) {
      const plus = Float32Array.from(values);
      const minus = Float32Array.from(values);
      plus[i] += h;
      minus[i] -= h;
      const up = (await (which === 'x' ? run(plus, yv) : run(xv, plus))).loss.data[0] as number;
      const down = (await (which === 'x' ? run(minus, yv) : run(xv, minus))).loss.data[0] as number;
      t.true(Math.abs((up - down) / (2 * h) - (base[name].data[i] as number)) < 2e-3, `${name}[${i}]`);
    }
  }
  await session.release();
});

test('a vit-b-32 model keeps every weight in the checkpoint file: 398 external initializers, model bytes < 0.1% of the weights', (t) => {
  const specs = fileOrder(clipLayout(presetConfig('vit-b-32')));
  const json = encodeSafetensorsHeader(specs, { format: 'pt' });
  const dataBytes = specs.reduce((sum, s) => sum + s.bytes, 0);
  const header = parseSafetensorsHeader(json.subarray(8), json.length + dataBytes, 'vit-b-32/model.safetensors');
  const model = buildInferenceModel(header, presetConfig('vit-b-32'), 'both', 2, 77);
  const text = Buffer.from(model).toString('latin1');
  t.is(text.split('model.safetensors').length - 1, 398); // every tensor but the two position_ids
  t.true(model.length < dataBytes / 1000);
});

/** Writes `tensors` as a checkpoint in a fresh temporary directory. */
function writeCheckpoint(dir: string, name: string, tensors: Parameters<typeof serializeSafetensors>[0]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, serializeSafetensors(tensors));
  return file;
}

for (const format of ['fp16', 'int8'] as const) {
  test(`${format} weights run in-graph and equal fp32 on the same (converted) values`, async (t) => {
    const dir = scratchDir(`clip-onnx-${format}-`);
    const { file } = ensureSyntheticCheckpoint({ config: 'tiny', format, cacheDir: dir });
    // The same values widened to fp32: what the fp16 Cast / int8 DequantizeLinear must compute.
    const stored = loadSafetensors(file, { mode: 'copy' }).tensors;
    const widened = [...stored.values()]
      .filter((tensor) => !tensor.name.endsWith('.scale'))
      .map((tensor) => {
        if (tensor.dtype === 'I64' || tensor.dtype === 'F32') return tensor;
        const data =
          tensor.dtype === 'I8' ? dequantizeInt8(tensor, stored.get(int8ScaleName(tensor.name))!) : toFloat32(tensor);
        return { name: tensor.name, dtype: 'F32' as const, shape: tensor.shape, data };
      });
    const fp32File = writeCheckpoint(dir, 'widened.safetensors', widened);
    const quantized = await createOnnxClip({ config: presetConfig('tiny'), weightsFile: file }, { threads: 1 });
    const reference = await createOnnxClip({ config: presetConfig('tiny'), weightsFile: fp32File }, { threads: 1 });
    t.is(quantized.weightFormat, format);
    const out = await quantized.forward(pixels, ids, 3);
    const expected = await reference.forward(pixels, ids, 3);
    t.true(maxDiff(out.imageEmbeds, Array.from(expected.imageEmbeds)) < 1e-5);
    t.true(maxDiff(out.textEmbeds, Array.from(expected.textEmbeds)) < 1e-5);
    await quantized.close();
    await reference.close();
  });
}

test('tfjs and onnxruntime give the same embeddings for the same weights (cosine >= 0.9999)', async (t) => {
  const weights = loadSafetensors(path.join(referenceDir, 'model.safetensors'), { mode: 'copy' }).tensors;
  const config = readHfConfig(referenceDir);
  const tfjsModel = await ClipTfjs.create(weights, config, { backends: ['cpu'] });
  const onnx = await createOnnxClip(referenceDir, { threads: 1 });
  const n = 3;
  const pairs: Array<[Float32Array, Float32Array]> = [
    [tfjsModel.embedImages({ data: pixels, shape: [n, 3, 32, 32] }), await onnx.encodeImage(pixels, n)],
    [tfjsModel.embedTexts({ data: Int32Array.from(ids), shape: [n, 16] }), await onnx.encodeText(ids, n)],
  ];
  for (const [a, b] of pairs) {
    const width = a.length / n;
    for (let row = 0; row < n; row++) {
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let i = row * width; i < (row + 1) * width; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
      }
      t.true(dot / Math.sqrt(na * nb) >= 0.9999);
    }
  }
  tfjsModel.dispose();
  await onnx.close();
});

test('vit-b-32 training in two backward graphs per tower: each parameter in exactly one; at most 44,927,232 gradients at a time', (t) => {
  const config = presetConfig('vit-b-32');
  const shapes = new Map(
    clipLayout(config)
      .filter((s) => s.dtype === 'F32')
      .map((s) => [s.name, s.shape]),
  );
  const models = buildTrainingModels(config, shapes, 2, 77, 2);
  const count = (names: readonly string[]) =>
    names.reduce((sum, name) => sum + shapes.get(name)!.reduce((a, b) => a * b, 1), 0);
  t.deepEqual(models.head.params, ['logit_scale']);
  t.deepEqual(
    models.backward.map((m) => [m.name, m.params.length, count(m.params)]),
    [
      // 6 layers: 6 x (4 attention projections + fc1 + fc2 + 2 norms) = 96 tensors; 3,152,384 (text) and
      // 7,087,872 (vision) parameters a layer. Embeddings join the first segment, the head the last.
      ['text layers 6-11', 99, 19_177_472], // + final_layer_norm 1,024 + text_projection 262,144
      ['text layers 0-5', 98, 44_250_624], // + token embedding 25,296,896 + positions 39,424
      ['vision layers 6-11', 99, 42_921_984], // + post_layernorm 1,536 + visual_projection 393,216
      ['vision layers 0-5', 101, 44_927_232], // + patch 2,359,296 + class 768 + positions 38,400 + pre_layrnorm 1,536
    ],
  );
  const all = [...models.backward.flatMap((m) => m.params), 'logit_scale'];
  t.is(new Set(all).size, all.length);
  t.is(count(all), 151_277_313); // every parameter once
  // The graphs hold no weights: well under a megabyte each.
  for (const m of [models.head, ...models.backward]) t.true(m.bytes.length < 1_000_000);
});

test('training widens an fp16 checkpoint to exactly its float32 values and refuses int8', async (t) => {
  const dir = scratchDir('clip-onnx-train-');
  const config = presetConfig('tiny');
  const { file } = ensureSyntheticCheckpoint({ config: 'tiny', format: 'fp16', cacheDir: dir });
  const trainer = await createOnnxTrainer({ config, weightsFile: file }, { batch: 3, threads: 1 });
  const stored = loadSafetensors(file, { mode: 'copy' }).tensors;
  t.is(trainer.params.size, 78);
  for (const [name, values] of trainer.params) t.deepEqual(values, toFloat32(stored.get(name)!), name);
  t.true(Number.isFinite(await trainer.step(pixels, ids)));
  await trainer.close();
  const int8 = ensureSyntheticCheckpoint({ config: 'tiny', format: 'int8', cacheDir: dir }).file;
  await t.throwsAsync(createOnnxTrainer({ config, weightsFile: int8 }, { batch: 3 }), {
    message: /is I8; training reads F32, F16 or BF16 weights/,
  });
});

test('training reads fp32 parameters exactly, as back-to-back views of one buffer (one block to fault in)', async (t) => {
  const config = presetConfig('tiny');
  const { file } = ensureSyntheticCheckpoint({
    config: 'tiny',
    format: 'fp32',
    cacheDir: scratchDir('clip-onnx-views-'),
  });
  const trainer = await createOnnxTrainer({ config, weightsFile: file }, { batch: 3, threads: 1 });
  const stored = loadSafetensors(file, { mode: 'copy' }).tensors;
  const views = [...trainer.params.values()];
  t.is(new Set(views.map((v) => v.buffer)).size, 1);
  let next = 0;
  for (const v of views) {
    t.is(v.byteOffset, next); // no gap, no overlap
    next += v.byteLength;
  }
  t.is(next, views[0].buffer.byteLength);
  for (const [name, values] of trainer.params) t.deepEqual(values, toFloat32(stored.get(name)!), name);
  await trainer.close();
});

test('segmented backward (middle segments included) gives the same gradients as one graph per tower', async (t) => {
  const dir = scratchDir('clip-onnx-segments-');
  const tiny = presetConfig('tiny');
  const config = {
    ...tiny,
    name: 'tiny-3-layers',
    text: { ...tiny.text, numHiddenLayers: 3 },
    vision: { ...tiny.vision, numHiddenLayers: 3 },
  };
  const { file } = ensureSyntheticCheckpoint({ config, cacheDir: dir });
  const gradientsWith = async (segments: number) => {
    const trainer = await createOnnxTrainer({ config, weightsFile: file }, { batch: 3, threads: 1, segments });
    const grads = new Map<string, Float32Array>();
    const loss = await trainer.computeGradients(pixels, ids, (name, grad) => grads.set(name, grad.slice()));
    await trainer.close();
    return { loss, grads };
  };
  const whole = await gradientsWith(1);
  const split = await gradientsWith(3);
  t.is(split.grads.size, whole.grads.size);
  t.is(split.loss, whole.loss);
  for (const [name, grad] of whole.grads) t.true(maxDiff(split.grads.get(name)!, Array.from(grad)) < 1e-6, name);
});
