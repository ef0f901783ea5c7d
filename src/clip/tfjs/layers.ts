// The few tfjs building blocks CLIP needs, with gradients written for memory and for the wasm backend:
// its fast matmul covers only untransposed operands, and it has no UnsortedSegmentSum (tf.gather's
// gradient). Every function takes and returns tf.Tensor; callers own disposal (tf.tidy).
import * as tf from '@tensorflow/tfjs';

/** Swaps the last two axes (an explicit copy, so the matmul that follows reads it untransposed). */
function swapLastAxes(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  perm[perm.length - 1] = perm.length - 2;
  perm[perm.length - 2] = perm.length - 1;
  return tf.transpose(x, perm);
}

/** a @ b for rank >= 2 (batched over leading axes); both gradients are untransposed matmuls too. */
export const matMul = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [a, b, save] = inputs as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor, [sa, sb]: tf.Tensor[]) => [
      tf.tidy(() => tf.matMul(dy, swapLastAxes(sb))),
      tf.tidy(() => tf.matMul(swapLastAxes(sa), dy)),
    ],
  };
}) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/**
 * PyTorch's nn.Linear on the last axis: x @ weight^T + bias, weight as stored [out, in], no bias when
 * `bias` is undefined. The forward multiplies by a transposed copy of the weight; the gradients
 * need no transposed weight at all (dx = dy @ W, dW = dy^T @ x).
 */
export function linear(x: tf.Tensor, weight: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor {
  const [out, inner] = weight.shape;
  const rows = tf.reshape(x, [-1, inner]) as tf.Tensor2D;
  const y = bias ? linearWithBias(rows, weight, bias) : linearNoBias(rows, weight);
  return tf.reshape(y, [...x.shape.slice(0, -1), out]);
}

const linearWithBias = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, w, b, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.tidy(() => tf.fused.matMul({ a: x, b: tf.transpose(w), bias: b })),
    gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => [
      tf.matMul(dy, sw),
      tf.tidy(() => tf.matMul(tf.transpose(dy), sx)),
      tf.sum(dy, 0),
    ],
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

const linearNoBias = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, w, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.tidy(() => tf.matMul(x, tf.transpose(w))),
    gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => [tf.matMul(dy, sw), tf.tidy(() => tf.matMul(tf.transpose(dy), sx))],
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;

/**
 * table[indices] along axis 0 (an embedding lookup). The table's gradient is a scatter-add of dy
 * (tfjs's ScatterNd sums repeated indices), available on every backend, wasm included.
 */
export function gatherRows(table: tf.Tensor2D, indices: Int32Array): tf.Tensor2D {
  const indexTensor = tf.tensor2d(indices, [indices.length, 1], 'int32');
  try {
    return gatherRowsOf(table, indexTensor);
  } finally {
    indexTensor.dispose();
  }
}

const gatherRowsOf = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [table, indices, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([indices]);
  const shape = table.shape;
  return {
    value: tf.gatherND(table, indices),
    gradFunc: (dy: tf.Tensor, [savedIndices]: tf.Tensor[]) => [
      tf.scatterND(savedIndices, dy, shape),
      tf.zerosLike(savedIndices),
    ],
  };
}) as (table: tf.Tensor2D, indices: tf.Tensor2D) => tf.Tensor2D;

/** LayerNorm over the last axis, PyTorch semantics (biased variance, eps inside the square root). */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor1D, bias: tf.Tensor1D, eps: number): tf.Tensor {
  return tf.tidy(() => {
    const axis = x.rank - 1;
    const centred = tf.sub(x, tf.mean(x, axis, true));
    const variance = tf.mean(tf.square(centred), axis, true);
    return tf.add(tf.mul(tf.mul(centred, tf.rsqrt(tf.add(variance, eps))), weight), bias);
  });
}

/** CLIP's activation: x * sigmoid(1.702 x). */
export function quickGelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))));
}

/** Mean cross-entropy of each row of `logits` [n, n] against the diagonal (row i's class is i). */
export function diagonalCrossEntropy(logits: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const n = logits.shape[0];
    const logProbabilities = tf.logSoftmax(logits);
    return tf.neg(tf.div(tf.sum(tf.mul(logProbabilities, tf.eye(n))), n)) as tf.Scalar;
  });
}
