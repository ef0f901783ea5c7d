// AdamW with PyTorch's semantics (torch.optim.AdamW, amsgrad off): decoupled weight decay, then the
// bias-corrected Adam step, one variable at a time (tfjs's own Adam holds ~11x the parameters in
// temporaries). On the wasm backend the update runs in place in the wasm heap, as PyTorch's does: no
// allocation at all, so steps do not fragment the 4 GiB heap. Elsewhere it uses tf ops, each temporary
// freed at once: a few times the largest parameter.
import * as tf from '@tensorflow/tfjs';
import { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { setPhase } from '../../core/phase';

export interface AdamWUpdate {
  /** The parameter's name, for the tracker's phase ("adamw <name>"). */
  readonly name: string;
  readonly parameter: tf.Variable;
  readonly gradient: tf.Tensor;
}
// One hyperparameter type for both training paths (onnxruntime's and this one).
import type { AdamWOptions } from '../onnx/train';

/** torch.optim.AdamW's defaults. */
const pytorchAdamWDefaults: Required<AdamWOptions> = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
};

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
   * Creates the moments of every parameter that has none yet. Called before the first forward pass,
   * it puts them beside the parameters, below the memory that each step's activations and gradients
   * take and give back, so that memory is reused step after step instead of fragmenting the heap.
   */
  createMoments(parameters: readonly Pick<AdamWUpdate, 'name' | 'parameter'>[]): void {
    for (const { name, parameter } of parameters) {
      if (this.moments.has(parameter)) continue;
      setPhase(`adamw moments ${name}`);
      this.moments.set(parameter, { m: zerosVariable(parameter), v: zerosVariable(parameter) });
    }
  }

  /**
   * One optimizer step: updates every parameter with its gradient, in order, and disposes each gradient
   * right after its update (all of them, whatever happens). The moments are all created before any
   * parameter changes, so running out of memory for them leaves the model as it was; on wasm nothing
   * after that allocates.
   */
  step(updates: readonly AdamWUpdate[]): void {
    try {
      this.createMoments(updates);
      this.steps += 1;
      for (const { name, parameter, gradient } of updates) {
        setPhase(`adamw ${name}`);
        this.update(parameter, gradient);
        gradient.dispose();
      }
    } finally {
      for (const { gradient } of updates) if (!gradient.isDisposed) gradient.dispose();
    }
  }

  private update(parameter: tf.Variable, gradient: tf.Tensor): void {
    const { lr, beta1, beta2, eps, weightDecay } = this.options;
    const state = this.moments.get(parameter)!;
    const { m, v } = state;
    const biasCorrection1 = 1 - beta1 ** this.steps;
    const biasCorrection2 = 1 - beta2 ** this.steps;
    const backend = tf.backend();
    if (backend instanceof BackendWasm && [parameter, m, v].every((t) => backend.refCount(t.dataId) === 1)) {
      // Views of the heap taken after the last allocation, so no growth can detach them mid-loop.
      const [p, g, m1, v2] = [parameter, gradient, m, v].map((t) => backend.typedArrayFromHeap(t) as Float32Array);
      const decay = 1 - lr * weightDecay;
      const stepSize = lr / biasCorrection1;
      const sqrtBiasCorrection2 = Math.sqrt(biasCorrection2);
      for (let i = 0; i < p.length; i += 1) {
        const mi = beta1 * m1[i] + (1 - beta1) * g[i];
        const vi = beta2 * v2[i] + (1 - beta2) * g[i] * g[i];
        m1[i] = mi;
        v2[i] = vi;
        p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtBiasCorrection2 + eps);
      }
      return;
    }
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
