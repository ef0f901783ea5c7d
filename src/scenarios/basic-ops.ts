// basic-ops: create tensors and multiply two 1000x1000 matrices, the seed's first sanity check.
import * as tf from '@tensorflow/tfjs-core';
import { setPhase } from '../track/phase';
import type { Scenario } from './scenario';
import { tfjsBackendFor } from './tfjs-backend';

const N = 1000;

export const basicOps: Scenario = {
  name: 'basic-ops',
  summary: `tensor creation (zeros, ones, seeded normal ${N}x${N}) and a ${N}x${N} matmul`,
  usesCheckpoint: false,
  async run(options) {
    const backend = await tfjsBackendFor(options.backend);
    setPhase('basic-ops create tensors');
    const zeros = tf.zeros([N, N]);
    const ones = tf.ones([N, N]);
    const a = tf.randomNormal([N, N], 0, 1, 'float32', 1);
    const b = tf.randomNormal([N, N], 0, 1, 'float32', 2);
    setPhase('basic-ops matmul');
    const started = performance.now();
    const product = tf.matMul(a, b);
    const values = await product.data();
    const matmulMs = performance.now() - started;
    const sum = (await tf.sum(tf.add(zeros, ones)).data())[0];
    const tensorBytes = tf.memory().numBytes;
    tf.dispose([zeros, ones, a, b, product]);
    return {
      backend: backend.name,
      tensorBytes,
      onesSum: sum,
      productElements: values.length,
      matmulGflops: Number(((2 * N * N * N) / (matmulMs * 1e6)).toFixed(2)),
    };
  },
};
