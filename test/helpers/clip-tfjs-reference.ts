// The tfjs CLIP model checked against what PyTorch computed for the tiny reference checkpoint
// (test/fixtures/reference: outputs.json). tfjs has one backend per process, and ava runs each test file
// in its own process: clip-tfjs-cpu.test.ts and clip-tfjs-wasm.test.ts call this with their backend.
import type { TestFn } from 'ava';
import * as tf from '@tensorflow/tfjs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readHfConfig } from '../../src/clip/config';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/clip/dtype';
import { loadSafetensors } from '../../src/clip/safetensors';
import type { TensorMap } from '../../src/clip/tensor';
import { ClipTfjs, type ClipBatch } from '../../src/clip/tfjs/model';
import type { TfjsBackendName } from '../../src/clip/tfjs/backend';
import { referenceDir } from './paths';

interface ReferenceOutputs {
  image_embeds: number[];
  text_embeds: number[];
  logits_per_image: number[][];
  loss: number;
  grads_step0: Record<string, number | number[] | number[][]>;
  adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
  params_after_step: Record<string, number | number[] | number[][]>;
  loss_after_step: number;
}

const tolerance = 1e-4;
const outputs = JSON.parse(fs.readFileSync(path.join(referenceDir, 'outputs.json'), 'utf8')) as ReferenceOutputs;
const inputs = JSON.parse(fs.readFileSync(path.join(referenceDir, 'inputs.json'), 'utf8')) as {
  pixel_values_shape: [number, number, number, number];
  pixel_values: number[];
  input_ids: number[][];
};
export const referenceConfig = readHfConfig(referenceDir);
export const referenceBatch: ClipBatch = {
  images: { data: Float32Array.from(inputs.pixel_values), shape: inputs.pixel_values_shape },
  texts: {
    data: Int32Array.from(inputs.input_ids.flat()),
    shape: [inputs.input_ids.length, inputs.input_ids[0].length],
  },
};
const adamw = {
  lr: outputs.adamw.lr,
  beta1: outputs.adamw.betas[0],
  beta2: outputs.adamw.betas[1],
  eps: outputs.adamw.eps,
  weightDecay: outputs.adamw.weight_decay,
};

export function referenceWeights(): TensorMap {
  return loadSafetensors(path.join(referenceDir, 'model.safetensors'), { mode: 'copy' }).tensors;
}

function maxDifference(actual: ArrayLike<number>, expected: number | number[] | number[][]): number {
  const flat = [expected].flat(2);
  if (actual.length !== flat.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < flat.length; i += 1) worst = Math.max(worst, Math.abs(actual[i] - flat[i]));
  return worst;
}

export function referenceTests(test: TestFn, backend: TfjsBackendName): void {
  test.serial(`${backend}: forward pass reproduces PyTorch's embeddings, logits and loss within 1e-4`, async (t) => {
    const model = await ClipTfjs.create(referenceWeights(), referenceConfig, { backends: [backend] });
    t.is(model.backend.name, backend);
    const tensorsBefore = tf.memory().numTensors;
    const result = model.forward(referenceBatch);
    t.is(tf.memory().numTensors, tensorsBefore, 'a forward pass leaves no tensor behind');
    t.true(maxDifference(result.imageEmbeds, outputs.image_embeds) < tolerance);
    t.true(maxDifference(result.textEmbeds, outputs.text_embeds) < tolerance);
    t.true(maxDifference(result.logitsPerImage, outputs.logits_per_image) < tolerance);
    t.true(Math.abs(result.loss! - outputs.loss) < tolerance);
    t.deepEqual(model.embedImages(referenceBatch.images), result.imageEmbeds);
    t.deepEqual(model.embedTexts(referenceBatch.texts), result.textEmbeds);
    model.dispose();
    t.is(tf.memory().numTensors, 0);
  });

  test.serial(
    `${backend}: a training step gives PyTorch's gradients, and its AdamW update PyTorch's parameters and loss`,
    async (t) => {
      const model = await ClipTfjs.create(referenceWeights(), referenceConfig, { backends: [backend], adamw });
      const parameters = model.parameterNames.length;
      t.is(parameters, 78); // the file's 80 entries less the two position_ids buffers
      const step = model.trainStep(referenceBatch, Object.keys(outputs.grads_step0));
      t.true(Math.abs(step.loss - outputs.loss) < tolerance);
      for (const [name, expected] of Object.entries(outputs.grads_step0)) {
        t.true(maxDifference(step.gradients.get(name)!, expected) < tolerance, `gradient of ${name}`);
      }
      for (const [name, expected] of Object.entries(outputs.params_after_step)) {
        t.true(maxDifference(model.parameter(name), expected) < tolerance, `${name} after the step`);
      }
      t.is(
        tf.memory().numTensors,
        3 * parameters,
        'after a step: each parameter and its two AdamW moments, nothing else',
      );
      t.true(Math.abs(model.forward(referenceBatch).loss! - outputs.loss_after_step) < tolerance);
      model.dispose();
      t.is(tf.memory().numTensors, 0);
    },
  );

  test.serial(
    `${backend}: training steps allocate only the AdamW moments, once, and peak at the same tensor bytes`,
    async (t) => {
      const model = await ClipTfjs.create(referenceWeights(), referenceConfig, { backends: [backend], adamw });
      const parameterBytes = 183_300; // 45,825 float32 parameters
      t.is(tf.memory().numBytes, parameterBytes);
      const first = await tf.profile(() => void model.trainStep(referenceBatch));
      t.is(first.newBytes, 2 * parameterBytes);
      const second = await tf.profile(() => void model.trainStep(referenceBatch));
      t.is(second.newBytes, 0);
      t.is(second.newTensors, 0);
      // tfjs's own accounting (views counted once each): parameters, moments, gradients and, thanks to the
      // per-layer checkpoints, one encoder layer's backward at a time (without them: 4,495,396).
      t.is(first.peakBytes, 2_029_540);
      t.is(second.peakBytes, 2_029_540);
      model.dispose();
      t.is(tf.memory().numTensors, 0);
    },
  );

  test.serial(`${backend}: F16 weights compute exactly what their float32 widening computes`, async (t) => {
    const f16: TensorMap = new Map();
    const widened: TensorMap = new Map();
    for (const [name, tensor] of referenceWeights()) {
      if (tensor.dtype !== 'F32') {
        f16.set(name, tensor);
        widened.set(name, tensor);
        continue;
      }
      const bits = Uint16Array.from(tensor.data as Float32Array, float32ToFloat16Bits);
      f16.set(name, { ...tensor, dtype: 'F16', data: bits });
      widened.set(name, { ...tensor, data: Float32Array.from(bits, float16BitsToFloat32) });
    }
    const fromF16 = await ClipTfjs.create(f16, referenceConfig, { backends: [backend] });
    const fromF32 = await ClipTfjs.create(widened, referenceConfig, { backends: [backend] });
    t.deepEqual(fromF16.forward(referenceBatch), fromF32.forward(referenceBatch));
    fromF16.dispose();
    fromF32.dispose();
  });
}
