// basic-ops: create tensors and multiply two 1000x1000 matrices, the seed's first sanity check.
import * as tf from '@tensorflow/tfjs-core';
import { setPhase } from '../core/phase';
import { BASIC_OPS_N as N, catalogEntry } from './catalog';
import type { Scenario } from './scenario';
import { tfjsBackendFor } from './tfjs-backend';

export const basicOps: Scenario = {
  ...catalogEntry('basic-ops'),
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
