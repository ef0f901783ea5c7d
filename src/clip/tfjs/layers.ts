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
 * PyTorch's nn.Linear on the last axis, with the weight stored transposed ([in, out], see
 * ClipTfjs): x @ weightT + bias. Neither the forward nor the gradients transpose anything weight-sized:
 * dx = (weightT @ dy^T)^T and dweightT = x^T @ dy transpose only activations, which are small beside
 * the weights at CLIP's batch sizes, and every matmul is untransposed.
 */
export function linear(x: tf.Tensor, weightT: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor {
  const [inner, out] = weightT.shape;
  const rows = tf.reshape(x, [-1, inner]) as tf.Tensor2D;
  const y = bias ? linearWithBias(rows, weightT, bias) : linearNoBias(rows, weightT);
  return tf.reshape(y, [...x.shape.slice(0, -1), out]);
}

function linearGradients(dy: tf.Tensor, x: tf.Tensor, weightT: tf.Tensor): [tf.Tensor, tf.Tensor] {
  return [
    tf.tidy(() => tf.transpose(tf.matMul(weightT, tf.transpose(dy)))),
    tf.tidy(() => tf.matMul(tf.transpose(x), dy)),
  ];
}

/**
 * The wasm backend's XNNPACK matmul packs its right operand and caches the packing until that tensor is
 * freed: for a weight, a second copy of it for the model's lifetime (vit-b-32: +577 MiB of a 4 GiB heap,
 * enough to make training fail). Multiplying by a temporary copy drops the packing with the copy; on
 * the cpu backend the copy is free (it shares the data).
 */
function withUncachedWeight(weightT: tf.Tensor, multiply: (w: tf.Tensor2D) => tf.Tensor): tf.Tensor {
  const copy = tf.clone(weightT) as tf.Tensor2D;
  try {
    return multiply(copy);
  } finally {
    copy.dispose();
  }
}

const linearWithBias = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, weightT, bias, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, weightT]);
  return {
    value: withUncachedWeight(weightT, (w) => tf.fused.matMul({ a: x, b: w, bias })),
    gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => [...linearGradients(dy, sx, sw), tf.sum(dy, 0)],
  };
}) as (x: tf.Tensor2D, weightT: tf.Tensor2D, bias: tf.Tensor1D) => tf.Tensor2D;

const linearNoBias = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, weightT, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([x, weightT]);
  return {
    value: withUncachedWeight(weightT, (w) => tf.matMul(x, w)),
    gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => linearGradients(dy, sx, sw),
  };
}) as (x: tf.Tensor2D, weightT: tf.Tensor2D) => tf.Tensor2D;

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

/**
 * `f` with gradient checkpointing: the forward pass keeps only f's inputs for the backward pass, which
 * runs f again under its own tape. tfjs's backward pass holds every intermediate gradient until it ends
 * (vit-b-32 batch 2: ~1.4 GiB); per checkpointed block it holds one block's, for one more forward pass.
 * `onBackward` runs as the block's backward starts (the tracker's phase).
 */
export function recomputedInBackward(
  f: (...inputs: tf.Tensor[]) => tf.Tensor,
  onBackward: () => void,
): (...inputs: tf.Tensor[]) => tf.Tensor {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const inputs = args.slice(0, -1) as tf.Tensor[];
    (args[args.length - 1] as tf.GradSaveFunc)(inputs);
    return {
      value: tf.tidy(() => f(...inputs)),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        onBackward();
        // The outer backward pass has ended its tape (gradient depth 0), so this inner tf.grads takes the
        // engine's tape over and, when done, frees its saved tensors and drops it: hand the outer one back.
        const state = tf.engine().state;
        const outerTape = state.activeTape;
        try {
          return tf.grads((...xs: tf.Tensor[]) => f(...xs))(saved, dy);
        } finally {
          state.activeTape = outerTape;
        }
      },
    };
  }) as (...inputs: tf.Tensor[]) => tf.Tensor;
}

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
