// AdamW with PyTorch's semantics (torch.optim.AdamW, amsgrad off): decoupled weight decay, then the
// bias-corrected Adam step. It updates one variable at a time and frees each temporary at once, so the
// update needs a few times the largest parameter, not (as tfjs's own Adam does) ~11x all of them.
import * as tf from '@tensorflow/tfjs';
// One hyperparameter type for both training paths (onnxruntime's and this one).
import type { AdamWOptions } from '../onnx/train';

/** torch.optim.AdamW's defaults. */
const pytorchAdamWDefaults: Required<AdamWOptions> = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

export class AdamW {
  readonly options: Required<AdamWOptions>;
  private steps = 0;
  /** First and second moments by variable, created (zero) at a variable's first update. */
  private readonly moments = new Map<tf.Variable, { m: tf.Variable; v: tf.Variable }>();

  constructor(options: AdamWOptions = {}) {
    this.options = { ...pytorchAdamWDefaults, ...options };
  }

  /** Bytes of optimizer state held now (two moments per updated parameter). */
  get stateBytes(): number {
    let bytes = 0;
    for (const { m, v } of this.moments.values()) bytes += (m.size + v.size) * 4;
    return bytes;
  }

  /**
   * One optimizer step: updates every variable with its gradient, in order, and disposes each gradient
   * right after its update.
   */
  step(gradients: Iterable<[tf.Variable, tf.Tensor]>): void {
    this.steps += 1;
    for (const [variable, gradient] of gradients) {
      try {
        this.update(variable, gradient);
      } finally {
        gradient.dispose();
      }
    }
  }

  private update(parameter: tf.Variable, gradient: tf.Tensor): void {
    const { lr, beta1, beta2, eps, weightDecay } = this.options;
    let state = this.moments.get(parameter);
    if (!state) {
      state = { m: zerosVariable(parameter), v: zerosVariable(parameter) };
      this.moments.set(parameter, state);
    }
    const { m, v } = state;
    const biasCorrection1 = 1 - beta1 ** this.steps;
    const biasCorrection2 = 1 - beta2 ** this.steps;
    // Each assignment in its own tidy: a temporary lives only for one line, not for the whole update.
    assign(m, () => tf.add(tf.mul(m, beta1), tf.mul(gradient, 1 - beta1)));
    assign(v, () => tf.add(tf.mul(v, beta2), tf.mul(tf.square(gradient), 1 - beta2)));
    assign(parameter, () => {
      const decayed = tf.mul(parameter, 1 - lr * weightDecay);
      const denominator = tf.add(tf.div(tf.sqrt(v), Math.sqrt(biasCorrection2)), eps);
      return tf.sub(decayed, tf.mul(tf.div(m, denominator), lr / biasCorrection1));
    });
  }

  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
    this.moments.clear();
  }
}

function zerosVariable(like: tf.Tensor): tf.Variable {
  const zeros = tf.zerosLike(like);
  const variable = tf.variable(zeros, false); // shares the zeros' data
  zeros.dispose();
  return variable;
}

function assign(variable: tf.Variable, compute: () => tf.Tensor): void {
  const value = tf.tidy(compute);
  variable.assign(value);
  value.dispose();
}
