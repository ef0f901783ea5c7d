// small-mlp: a 1000-512-256-10 multilayer perceptron, forward and backward at batch 64 (the seed's
// second check; PyTorch's figures for it are in ../shared/clip/pytorch-anchor.md).
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's CommonJS bundle registers no gradients; the tfjs union package registers them on it.
import '@tensorflow/tfjs';
import { setPhase } from '../core/phase';
import { MLP_BATCH as BATCH, MLP_WIDTHS as WIDTHS, catalogEntry } from './catalog';
import type { Scenario } from './scenario';
import { tfjsBackendFor } from './tfjs-backend';

export const smallMlp: Scenario = {
  ...catalogEntry('small-mlp'),
  async run(options) {
    const backend = await tfjsBackendFor(options.backend);
    setPhase('small-mlp create');
    const layers = WIDTHS.slice(1).map((width, i) => ({
      weight: tf.variable(tf.randomNormal([WIDTHS[i], width], 0, Math.sqrt(2 / WIDTHS[i]), 'float32', 10 + i)),
      bias: tf.variable(tf.zeros([width])),
    }));
    const input = tf.randomNormal([BATCH, WIDTHS[0]], 0, 1, 'float32', 3);
    const labels = tf.oneHot(
      tf.tensor1d(
        Array.from({ length: BATCH }, (_, i) => i % 10),
        'int32',
      ),
      10,
    );
    const forward = () =>
      layers.reduce<tf.Tensor2D>((x, layer, i) => {
        const y = tf.add(tf.matMul(x, layer.weight), layer.bias) as tf.Tensor2D;
        return i < layers.length - 1 ? tf.relu(y) : y;
      }, input as tf.Tensor2D);
    setPhase('small-mlp forward and backward');
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, forward()) as tf.Scalar);
    const loss = (await value.data())[0];
    const gradientNorm = Math.sqrt(
      (await Promise.all(Object.values(grads).map(async (g) => (await tf.sum(tf.square(g)).data())[0]))).reduce(
        (s, v) => s + v,
        0,
      ),
    );
    const parameters = layers.reduce((n, l) => n + l.weight.size + l.bias.size, 0);
    const tensorBytes = tf.memory().numBytes;
    tf.dispose([value, input, labels, ...Object.values(grads), ...layers.flatMap((l) => [l.weight, l.bias])]);
    return {
      backend: backend.name,
      parameters,
      batch: BATCH,
      loss: Number(loss.toFixed(4)),
      gradientNorm: Number(gradientNorm.toFixed(4)),
      tensorBytes,
    };
  },
};
