// CLIP (Hugging Face CLIPModel semantics) in tfjs: forward pass, contrastive loss and an AdamW step.
//
// API:
//   ClipTfjs.create(weights, config, options?) -> Promise<ClipTfjs>: checks that `weights` holds every
//       parameter `config` (presetConfig / readHfConfig) implies, in its shape; selects the tfjs backend
//       (options.backends, see backend.ts) and makes one float32 tf.Variable per parameter (F16 and BF16
//       are widened and int8 weight-only dequantized: no tfjs backend computes in float16).
//       options.adamw: AdamWOptions (lr, beta1, beta2, eps, weightDecay; PyTorch's defaults).
//   model.backend                 the TfjsBackendChoice that runs it; model.config the ClipConfig.
//   model.forward({ images, texts }) -> ClipTfjsOutputs (no gradients): normalised image/text embeddings,
//       logits_per_image, and the symmetric cross-entropy loss when there are as many images as texts.
//   model.embedImages(images) / model.embedTexts(texts) -> Float32Array: normalised embeddings
//       [n, projection]; images { data: Float32Array, shape: [n, 3, size, size] } (NCHW), texts
//       { data: Int32Array, shape: [n, length] }.
//   model.trainStep(batch, report?) -> ClipTrainStep: loss (before the update), every gradient, one AdamW
//       update; `report` names the parameters whose gradients come back (checkpoint layout).
//   model.parameter(name)         -> Float32Array: a parameter's current value (checkpoint shape, row-major).
//   model.parameterNames          the trainable parameters, in the config's module order.
//   model.dispose()               frees every tensor the model and its optimizer hold.
//   Errors: bad input throws an Error naming the tensor, shape or id; running out of memory throws a
//   TfjsMemoryError (backend.ts).
//
// Layout: linear weights (attention and MLP projections, text/visual projections, the patch convolution
// as [D, C*p*p]) are stored transposed, [in, out], so every matmul of the forward and backward passes
// is untransposed (the wasm backend's fast path) and no weight is ever transposed after loading.
// Memory: parameters are tfjs variables (on the cpu backend a non-transposed F32 tensor's data is used
// in place, so an mmap-loaded checkpoint is not copied); each encoder layer is a gradient checkpoint
// (recomputedInBackward): without gradients a forward pass holds one layer's activations at a time, and
// a training step keeps only the layers' inputs and runs one layer's backward at a time; AdamW's moments
// are made before the first forward pass and it updates one parameter at a time (in place on wasm).
import * as tf from '@tensorflow/tfjs';
import { clipLayout, type ClipConfig, type TensorSpec } from '../config';
import { dequantizeInt8, int8ScaleName, toFloat32 } from '../dtype';
import type { Tensor, TensorMap } from '../tensor';
import type { AdamWOptions } from '../onnx/train';
import { setPhase } from '../../core/phase';
import { AdamW, type AdamWUpdate } from './adamw';
import { asTfjsMemoryError, selectTfjsBackend, type TfjsBackendChoice, type TfjsBackendName } from './backend';
import { diagonalCrossEntropy, gatherRows, layerNorm, linear, matMul, quickGelu, recomputedInBackward } from './layers';

/** Images as CLIPImageProcessor gives them: float32, NCHW [n, 3, size, size], row-major. */
export interface ImageBatch {
  readonly data: Float32Array;
  readonly shape: readonly [number, number, number, number];
}

/** Token ids [n, length], row-major; each row's end-of-text token is its highest id. */
export interface TextBatch {
  readonly data: Int32Array;
  readonly shape: readonly [number, number];
}

export interface ClipBatch {
  readonly images: ImageBatch;
  readonly texts: TextBatch;
}

export interface ClipTfjsOutputs {
  /** [images, projection], unit length. */
  readonly imageEmbeds: Float32Array;
  /** [texts, projection], unit length. */
  readonly textEmbeds: Float32Array;
  /** [images, texts]: logit_scale.exp() * cosine similarity. */
  readonly logitsPerImage: Float32Array;
  /** Symmetric cross-entropy (CLIP's loss); only when images and texts pair up one to one. */
  readonly loss?: number;
}

export interface ClipTrainStep {
  /** The loss before the update. */
  readonly loss: number;
  /** The gradients asked for, by parameter name (HF shape, row-major). */
  readonly gradients: ReadonlyMap<string, Float32Array>;
}

export interface ClipTfjsOptions {
  /** Backends to try, in order (default tensorflow-gpu, tensorflow, wasm, cpu). */
  readonly backends?: readonly TfjsBackendName[];
  /** AdamW settings for trainStep (default PyTorch's). */
  readonly adamw?: AdamWOptions;
}

interface EncoderLayer {
  readonly ln1: [tf.Tensor1D, tf.Tensor1D];
  readonly ln2: [tf.Tensor1D, tf.Tensor1D];
  readonly q: [tf.Tensor2D, tf.Tensor1D];
  readonly k: [tf.Tensor2D, tf.Tensor1D];
  readonly v: [tf.Tensor2D, tf.Tensor1D];
  readonly out: [tf.Tensor2D, tf.Tensor1D];
  readonly fc1: [tf.Tensor2D, tf.Tensor1D];
  readonly fc2: [tf.Tensor2D, tf.Tensor1D];
}

/** What a pass is for, in the tracker's phase labels ("tfjs forward text_model.encoder.layers.3"). */
type Stage = 'forward' | 'train forward';

/** A large negative score for masked attention: exp() of it is 0, and no inf reaches a gradient. */
const maskedScore = -1e9;

/** Parameters used as nn.Linear weights (the patch convolution too: stride = kernel makes it one). */
const linearWeight =
  /(\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)|^text_projection|^visual_projection|\.patch_embedding)\.weight$/;

export class ClipTfjs {
  private readonly optimizer: AdamW;

  private constructor(
    readonly backend: TfjsBackendChoice,
    /** By checkpoint name, in the config's module order. */
    private readonly parameters: Map<string, tf.Variable>,
    /** The parameters stored transposed ([in, out]). */
    private readonly transposed: Set<string>,
    /** Shapes (checked against the tensors), head counts, LayerNorm epsilons. */
    readonly config: ClipConfig,
    adamw: AdamWOptions | undefined,
  ) {
    this.optimizer = new AdamW(adamw);
  }

  /**
   * On the cpu backend, F32 tensors are used in place until their first update: keep an mmap-loaded
   * checkpoint open (no close()) while the model lives. Every other backend copies the weights: close
   * the checkpoint after create() and its pages leave the resident set.
   */
  static async create(weights: TensorMap, config: ClipConfig, options: ClipTfjsOptions = {}): Promise<ClipTfjs> {
    const specs = parameterSpecs(weights, config);
    const backend = await selectTfjsBackend(options.backends);
    const parameters = new Map<string, tf.Variable>();
    const transposed = new Set<string>();
    try {
      for (const { name, shape } of specs) {
        const tensor = weights.get(name)!;
        const isLinear = linearWeight.test(name);
        setPhase(`tfjs upload ${name}`);
        const initial = tf.tidy(() => {
          const values = tf.tensor(parameterValues(tensor, weights), shape, 'float32');
          return isLinear ? tf.transpose(tf.reshape(values, [shape[0], -1])) : values;
        });
        if (isLinear) transposed.add(name);
        parameters.set(name, tf.variable(initial, true)); // shares initial's data
        initial.dispose();
      }
      return new ClipTfjs(backend, parameters, transposed, config, options.adamw);
    } catch (error) {
      for (const variable of parameters.values()) variable.dispose();
      throw asTfjsMemoryError(error) ?? error;
    }
  }

  /** Normalised image embeddings [n, projection]. */
  embedImages(images: ImageBatch): Float32Array {
    return this.run(() => readAndDispose(tf.tidy(() => normalise(this.imageFeatures(images, 'forward')))));
  }

  /** Normalised text embeddings [n, projection]. */
  embedTexts(texts: TextBatch): Float32Array {
    return this.run(() => readAndDispose(tf.tidy(() => normalise(this.textFeatures(texts, 'forward')))));
  }

  forward(batch: ClipBatch): ClipTfjsOutputs {
    return this.run(() => {
      const [imageEmbeds, textEmbeds] = [this.embedImages(batch.images), this.embedTexts(batch.texts)];
      const outputs = tf.tidy(() => {
        const images = tf.tensor2d(imageEmbeds, [batch.images.shape[0], imageEmbeds.length / batch.images.shape[0]]);
        const texts = tf.tensor2d(textEmbeds, [batch.texts.shape[0], textEmbeds.length / batch.texts.shape[0]]);
        const logitsPerImage = this.logits(images, texts);
        const loss = images.shape[0] === texts.shape[0] ? contrastiveLoss(logitsPerImage) : undefined;
        return { logitsPerImage, loss };
      });
      return {
        imageEmbeds,
        textEmbeds,
        logitsPerImage: readAndDispose(outputs.logitsPerImage),
        ...(outputs.loss ? { loss: readAndDispose(outputs.loss)[0] } : {}),
      };
    });
  }

  /**
   * Computes the loss and every parameter's gradient, then updates the parameters with one AdamW step
   * (one parameter at a time, each gradient freed after its update).
   */
  trainStep(batch: ClipBatch, report: readonly string[] = []): ClipTrainStep {
    for (const name of report) this.weight(name);
    if (batch.images.shape[0] !== batch.texts.shape[0]) {
      throw new Error(
        `ClipTfjs.trainStep: the contrastive loss pairs image i with text i, but the batch has ${batch.images.shape[0]} images and ${batch.texts.shape[0]} texts`,
      );
    }
    return this.run(() => {
      const variables = [...this.parameters.values()];
      this.optimizer.createMoments([...this.parameters].map(([name, parameter]) => ({ name, parameter })));
      const { value, grads } = tf.variableGrads(() => {
        const loss = this.loss(batch, 'train forward');
        setPhase('tfjs train backward (gradients of every parameter)');
        return loss;
      }, variables);
      const loss = readAndDispose(value)[0];
      const gradients = new Map<string, Float32Array>();
      const updates: AdamWUpdate[] = [];
      for (const [name, variable] of this.parameters) {
        const gradient = grads[variable.name];
        if (report.includes(name)) gradients.set(name, this.inCheckpointLayout(name, gradient));
        updates.push({ name, parameter: variable, gradient });
      }
      this.optimizer.step(updates);
      return { loss, gradients };
    });
  }

  /** A parameter's current value, row-major in its checkpoint shape. */
  parameter(name: string): Float32Array {
    return this.inCheckpointLayout(name, this.weight(name));
  }

  /** A parameter-shaped tensor's values, row-major in the checkpoint's shape (a copy). */
  private inCheckpointLayout(name: string, tensor: tf.Tensor): Float32Array {
    if (!this.transposed.has(name)) return (tensor.dataSync() as Float32Array).slice(); // cpu would hand out its own array
    return readAndDispose(tf.transpose(tensor));
  }

  /** Names of the trainable parameters, in checkpoint order. */
  get parameterNames(): string[] {
    return [...this.parameters.keys()];
  }

  dispose(): void {
    for (const variable of this.parameters.values()) variable.dispose();
    this.parameters.clear();
    this.optimizer.dispose();
  }

  private run<T>(work: () => T): T {
    try {
      return work();
    } catch (error) {
      throw asTfjsMemoryError(error) ?? error;
    }
  }

  private weight<R extends tf.Rank = tf.Rank>(name: string): tf.Tensor<R> {
    const found = this.parameters.get(name);
    if (!found) throw new Error(`ClipTfjs: the model has no parameter ${name}`);
    return found as unknown as tf.Tensor<R>;
  }

  private loss(batch: ClipBatch, stage: Stage): tf.Scalar {
    return tf.tidy(() => {
      const logitsPerImage = this.logits(
        normalise(this.imageFeatures(batch.images, stage)),
        normalise(this.textFeatures(batch.texts, stage)),
      );
      return contrastiveLoss(logitsPerImage);
    });
  }

  /** logit_scale.exp() * images @ texts^T: [images, texts]. */
  private logits(images: tf.Tensor2D, texts: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(
      () => tf.mul(matMul(images, tf.transpose(texts)), tf.exp(this.weight('logit_scale'))) as tf.Tensor2D,
    );
  }

  /** Projected, unnormalised text features [n, projection]. */
  private textFeatures(texts: TextBatch, stage: Stage): tf.Tensor2D {
    const [count, length] = texts.shape;
    const table = this.weight<tf.Rank.R2>('text_model.embeddings.token_embedding.weight');
    const positions = this.weight<tf.Rank.R2>('text_model.embeddings.position_embedding.weight');
    const [vocabulary, width] = table.shape;
    checkTexts(texts, vocabulary, positions.shape[0]);
    // Pooled at each row's end-of-text token, the highest id (the first one when it repeats).
    const pooledRows = new Int32Array(count);
    for (let row = 0; row < count; row += 1) {
      let best = 0;
      for (let column = 1; column < length; column += 1) {
        if (texts.data[row * length + column] > texts.data[row * length + best]) best = column;
      }
      pooledRows[row] = row * length + best;
    }
    return tf.tidy(() => {
      let hidden: tf.Tensor = tf.tidy(() =>
        tf.add(
          tf.reshape(gatherRows(table, texts.data), [count, length, width]),
          tf.slice(positions, [0, 0], [length, width]),
        ),
      );
      const causalMask = tf.tidy(() =>
        tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([length, length]), -1, 0)), maskedScore),
      );
      hidden = this.encoder('text_model', stage, hidden, this.config.text.numAttentionHeads, causalMask);
      const pooled = gatherRows(tf.reshape(hidden, [count * length, width]) as tf.Tensor2D, pooledRows);
      const normed = layerNorm(
        pooled,
        this.weight('text_model.final_layer_norm.weight'),
        this.weight('text_model.final_layer_norm.bias'),
        this.config.text.layerNormEps,
      );
      return linear(normed, this.weight('text_projection.weight')) as tf.Tensor2D;
    });
  }

  /** Projected, unnormalised image features [n, projection]. */
  private imageFeatures(images: ImageBatch, stage: Stage): tf.Tensor2D {
    const [count, channels, height, width] = images.shape;
    const patchWeightT = this.weight<tf.Rank.R2>('vision_model.embeddings.patch_embedding.weight'); // [C*p*p, D]
    const { hiddenSize: hidden, numChannels, imageSize, patchSize: patch } = this.config.vision;
    if (
      channels !== numChannels ||
      height !== imageSize ||
      width !== imageSize ||
      images.data.length !== count * channels * height * width
    ) {
      throw new Error(
        `ClipTfjs: images must be float32 [n, ${numChannels}, ${imageSize}, ${imageSize}] (NCHW, as CLIPImageProcessor makes them); got shape [${images.shape.join(', ')}] with ${images.data.length} values`,
      );
    }
    const grid = imageSize / patch;
    return tf.tidy(() => {
      // The patch convolution has stride = kernel: a matmul of each patch's pixels with the kernel.
      const patches = tf.tensor2d(patchRows(images, patch), [count * grid * grid, channels * patch * patch]);
      const embedded = tf.reshape(linear(patches, patchWeightT), [count, grid * grid, hidden]);
      const classToken = tf.tile(tf.reshape(this.weight('vision_model.embeddings.class_embedding'), [1, 1, hidden]), [
        count,
        1,
        1,
      ]);
      let states: tf.Tensor = tf.add(
        tf.concat([classToken, embedded], 1),
        this.weight('vision_model.embeddings.position_embedding.weight'),
      );
      states = layerNorm(
        states,
        this.weight('vision_model.pre_layrnorm.weight'),
        this.weight('vision_model.pre_layrnorm.bias'),
        this.config.vision.layerNormEps,
      );
      states = this.encoder('vision_model', stage, states, this.config.vision.numAttentionHeads);
      const classState = tf.reshape(tf.slice(states, [0, 0, 0], [count, 1, hidden]), [count, hidden]);
      const normed = layerNorm(
        classState,
        this.weight('vision_model.post_layernorm.weight'),
        this.weight('vision_model.post_layernorm.bias'),
        this.config.vision.layerNormEps,
      );
      return linear(normed, this.weight('visual_projection.weight')) as tf.Tensor2D;
    });
  }

  private encoder(
    tower: 'text_model' | 'vision_model',
    stage: Stage,
    hidden: tf.Tensor,
    heads: number,
    mask?: tf.Tensor,
  ): tf.Tensor {
    const eps = tower === 'text_model' ? this.config.text.layerNormEps : this.config.vision.layerNormEps;
    for (let index = 0; this.parameters.has(`${tower}.encoder.layers.${index}.layer_norm1.weight`); index += 1) {
      const prefix = `${tower}.encoder.layers.${index}`;
      const parameters = encoderLayerParameters.map((name) => this.weight(`${prefix}.${name}`));
      setPhase(`tfjs ${stage} ${prefix}`);
      // One checkpointed block per layer: only its output survives the forward pass (and, while
      // recording gradients, its inputs); its backward recomputes it.
      const block = recomputedInBackward(
        (input, ...rest) => {
          const layer = encoderLayer(rest.slice(-encoderLayerParameters.length));
          const layerMask = mask ? rest[0] : undefined;
          const attended = tf.add(input, this.attention(layerNorm(input, ...layer.ln1, eps), layer, heads, layerMask));
          const expanded = quickGelu(linear(layerNorm(attended, ...layer.ln2, eps), ...layer.fc1));
          return tf.add(attended, linear(expanded, ...layer.fc2));
        },
        () => setPhase(`tfjs train backward ${prefix}`),
      );
      hidden = block(hidden, ...(mask ? [mask] : []), ...parameters);
    }
    return hidden;
  }

  private attention(x: tf.Tensor, layer: EncoderLayer, heads: number, mask?: tf.Tensor): tf.Tensor {
    const [count, length, width] = x.shape;
    const headWidth = width / heads;
    const split = (t: tf.Tensor, perm: number[]) =>
      tf.transpose(tf.reshape(t, [count, length, heads, headWidth]), perm);
    const query = split(tf.mul(linear(x, ...layer.q), headWidth ** -0.5), [0, 2, 1, 3]); // [n, h, L, d]
    const keyT = split(linear(x, ...layer.k), [0, 2, 3, 1]); // [n, h, d, L]: the scores need no transposed matmul
    const value = split(linear(x, ...layer.v), [0, 2, 1, 3]);
    let scores = matMul(query, keyT);
    if (mask) scores = tf.add(scores, mask);
    const context = matMul(tf.softmax(scores), value); // [n, h, L, d]
    return linear(tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [count, length, width]), ...layer.out);
  }
}

/** An encoder layer's parameters, each with .weight and .bias, in the order encoderLayer() reads them. */
const encoderLayerParameters = [
  'layer_norm1',
  'layer_norm2',
  'self_attn.q_proj',
  'self_attn.k_proj',
  'self_attn.v_proj',
  'self_attn.out_proj',
  'mlp.fc1',
  'mlp.fc2',
].flatMap((part) => [`${part}.weight`, `${part}.bias`]);

function encoderLayer(parameters: tf.Tensor[]): EncoderLayer {
  const pair = <W extends tf.Tensor>(i: number): [W, tf.Tensor1D] => [
    parameters[2 * i] as W,
    parameters[2 * i + 1] as tf.Tensor1D,
  ];
  return {
    ln1: pair<tf.Tensor1D>(0),
    ln2: pair<tf.Tensor1D>(1),
    q: pair<tf.Tensor2D>(2),
    k: pair<tf.Tensor2D>(3),
    v: pair<tf.Tensor2D>(4),
    out: pair<tf.Tensor2D>(5),
    fc1: pair<tf.Tensor2D>(6),
    fc2: pair<tf.Tensor2D>(7),
  };
}

function readAndDispose(tensor: tf.Tensor): Float32Array {
  try {
    return tensor.dataSync() as Float32Array;
  } finally {
    tensor.dispose();
  }
}

function normalise(features: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(features, tf.norm(features, 'euclidean', 1, true)));
}

/** (cross-entropy of logits_per_text + cross-entropy of logits_per_image) / 2, as CLIPModel's clip_loss. */
function contrastiveLoss(logitsPerImage: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() =>
    tf.div(tf.add(diagonalCrossEntropy(tf.transpose(logitsPerImage)), diagonalCrossEntropy(logitsPerImage)), 2),
  );
}

/**
 * The parameters `config` implies (position_ids aside: positions are 0..n-1), each checked to be in
 * `weights` in its shape; other tensors (int8 scales) are read with their weight.
 */
function parameterSpecs(weights: TensorMap, config: ClipConfig): TensorSpec[] {
  for (const [tower, { hiddenSize, numAttentionHeads: heads }] of [
    ['text_model', config.text],
    ['vision_model', config.vision],
  ] as const) {
    if (!Number.isInteger(heads) || heads < 1 || hiddenSize % heads !== 0) {
      throw new Error(`ClipTfjs: ${tower} is ${hiddenSize} wide, which ${heads} attention heads do not divide`);
    }
  }
  const specs = clipLayout(config).filter((spec) => !spec.name.endsWith('position_ids'));
  for (const spec of specs) {
    const tensor = weights.get(spec.name);
    if (!tensor)
      throw new Error(`ClipTfjs: the checkpoint has no tensor ${spec.name}, which config ${config.name} needs`);
    if (tensor.shape.length !== spec.shape.length || tensor.shape.some((size, i) => size !== spec.shape[i])) {
      throw new Error(
        `ClipTfjs: ${spec.name} has shape [${tensor.shape.join(', ')}], but config ${config.name} needs [${spec.shape.join(', ')}]`,
      );
    }
  }
  return specs;
}

function checkTexts(texts: TextBatch, vocabulary: number, maxLength: number): void {
  const [count, length] = texts.shape;
  if (texts.data.length !== count * length) {
    throw new Error(
      `ClipTfjs: token ids of shape [${count}, ${length}] need ${count * length} values, got ${texts.data.length}`,
    );
  }
  if (length > maxLength)
    throw new Error(`ClipTfjs: texts are ${length} tokens long; the model has ${maxLength} positions`);
  const bad = texts.data.findIndex((id) => id < 0 || id >= vocabulary);
  if (bad >= 0)
    throw new Error(
      `ClipTfjs: token id ${texts.data[bad]} (row ${Math.floor(bad / length)}, column ${bad % length}) is outside the vocabulary of ${vocabulary}`,
    );
}

/** NCHW images to one row per patch, each row [C, p, p] like the kernel's layout. */
function patchRows(images: ImageBatch, patch: number): Float32Array {
  const [count, channels, height, width] = images.shape;
  const gridY = height / patch;
  const gridX = width / patch;
  const rows = new Float32Array(images.data.length);
  let out = 0;
  for (let n = 0; n < count; n += 1) {
    for (let gy = 0; gy < gridY; gy += 1) {
      for (let gx = 0; gx < gridX; gx += 1) {
        for (let c = 0; c < channels; c += 1) {
          for (let y = 0; y < patch; y += 1) {
            const start = ((n * channels + c) * height + gy * patch + y) * width + gx * patch;
            rows.set(images.data.subarray(start, start + patch), out);
            out += patch;
          }
        }
      }
    }
  }
  return rows;
}

/** A parameter's values as float32: F32 as is (not copied), F16/BF16 widened, int8 dequantized with its scale. */
function parameterValues(tensor: Tensor, weights: TensorMap): Float32Array {
  if (tensor.dtype === 'I8') {
    const scale = weights.get(int8ScaleName(tensor.name));
    if (!scale)
      throw new Error(`ClipTfjs: ${tensor.name} is int8 but the checkpoint has no ${int8ScaleName(tensor.name)}`);
    return dequantizeInt8(tensor, scale);
  }
  if (tensor.dtype !== 'F32' && tensor.dtype !== 'F16' && tensor.dtype !== 'BF16') {
    throw new Error(
      `ClipTfjs: ${tensor.name} is ${tensor.dtype}; the model takes F32, F16, BF16 or int8 weight-only parameters`,
    );
  }
  return toFloat32(tensor);
}
