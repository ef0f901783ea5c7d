// The fast CLIP training path: one onnxruntime session runs forward, the symmetric contrastive loss and
// every parameter gradient (reverse mode over our own graph, grad.ts); AdamW (PyTorch semantics,
// decoupled weight decay) then updates the parameters in place in JS. Memory is the minimum the method
// needs: parameters, gradients and AdamW's two moments, each held once, in float32 (4 x 605 MB for
// vit-b-32). The parameters are graph inputs (onnxruntime reads the JS arrays without copying) and the
// gradients pre-allocated outputs (onnxruntime writes into the JS arrays), reused every step.
// Parameters are read from the checkpoint by copy, not mmap: an mmap'd file's pages would count in RSS
// again beside the writable copy training needs.
//
// API:
//   createOnnxTrainer(checkpoint, options): Promise<OnnxTrainer>
//     options: { batch, seq? (default max positions), config?, preset?, threads? (2), adamw?: AdamWOptions }
//   AdamWOptions { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 }  (torch defaults,
//     except lr which torch requires)
//   OnnxTrainer.computeGradients(pixels, ids): Promise<number>   loss; fills trainer.grads
//   OnnxTrainer.applyAdamW(): void                               one AdamW update from trainer.grads
//   OnnxTrainer.step(pixels, ids): Promise<number>               both; returns the loss before the update
//   OnnxTrainer.params / grads: Map<string, Float32Array>        live views (checkpoint order)
//   buildTrainingModel(config, shapes, batch, seq): Uint8Array   inputs: pixel_values, input_ids, every
//     parameter by its checkpoint name; outputs: loss, `grad.<name>` for every parameter
import * as ort from 'onnxruntime-node';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ClipConfig } from '../config';
import { toFloat32 } from '../dtype';
import { loadSafetensors } from '../safetensors';
import { clipHead, ClipParams, imageFeatures, normalize, textFeatures } from './clip-graph';
import { gradients } from './grad';
import { ElemType, Graph, Value } from './graph';
import { checkpointConfig, sessionOptions } from './runtime';

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export interface OnnxTrainerOptions {
  batch: number;
  seq?: number;
  config?: ClipConfig;
  preset?: string;
  threads?: number;
  adamw?: AdamWOptions;
}

export interface OnnxTrainer {
  readonly config: ClipConfig;
  readonly params: Map<string, Float32Array>;
  readonly grads: Map<string, Float32Array>;
  /** AdamW steps applied so far. */
  readonly steps: number;
  computeGradients(pixels: Float32Array, ids: ArrayLike<number | bigint>): Promise<number>;
  applyAdamW(): void;
  step(pixels: Float32Array, ids: ArrayLike<number | bigint>): Promise<number>;
  close(): Promise<void>;
}

export const gradName = (param: string): string => `grad.${param}`;

/** The training graph for parameters of the given shapes (name -> shape, in checkpoint order). */
export function buildTrainingModel(config: ClipConfig, shapes: ReadonlyMap<string, readonly number[]>, batch: number, seq: number): Uint8Array {
  const g = new Graph('clip_train');
  const v = config.vision;
  const pixels = g.input('pixel_values', ElemType.FLOAT, [batch, v.numChannels, v.imageSize, v.imageSize]);
  const ids = g.input('input_ids', ElemType.INT64, [batch, seq]);
  const inputs = new Map<string, Value>();
  const params: ClipParams = {
    get(name) {
      let p = inputs.get(name);
      if (!p) {
        const shape = shapes.get(name);
        if (!shape) throw new Error(`training: the checkpoint has no float tensor ${JSON.stringify(name)}`);
        p = g.input(name, ElemType.FLOAT, shape);
        inputs.set(name, p);
      }
      return p;
    },
    rows: (name, indices) => g.gather(params.get(name), indices),
  };
  const image = normalize(g, imageFeatures(g, config, params, pixels));
  const text = normalize(g, textFeatures(g, config, params, ids));
  const { loss } = clipHead(g, params, image, text);
  g.output(loss!, 'loss');
  const unused = [...shapes.keys()].filter((name) => !inputs.has(name));
  if (unused.length) throw new Error(`training: checkpoint tensors the model does not use: ${unused.join(', ')}`);
  const grads = gradients(g, loss!, [...inputs.values()]);
  for (const [param, grad] of grads) {
    // A gradient value that is already a graph output (or an input) would need a second name: copy it.
    const named = g.outputs.includes(grad) || g.inputs.includes(grad) ? g.node('Identity', [grad], [grad])[0] : grad;
    g.output(named, gradName(param.name));
  }
  return g.toModel();
}

export async function createOnnxTrainer(checkpoint: string, options: OnnxTrainerOptions): Promise<OnnxTrainer> {
  const file = fs.statSync(checkpoint).isDirectory() ? path.join(checkpoint, 'model.safetensors') : checkpoint;
  const config = checkpointConfig(path.dirname(path.resolve(file)), options);
  const { batch } = options;
  const seq = options.seq ?? config.text.maxPositionEmbeddings;
  const adamw = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, ...options.adamw };

  const params = new Map<string, Float32Array>();
  const shapes = new Map<string, readonly number[]>();
  for (const [name, tensor] of loadSafetensors(file, { mode: 'copy' }).tensors) {
    if (tensor.dtype === 'I64') continue; // position_ids buffers: not parameters
    if (tensor.dtype === 'I8') throw new Error(`${file}: ${name} is int8 weight-only; training needs fp32 or fp16 weights`);
    params.set(name, toFloat32(tensor));
    shapes.set(name, tensor.shape);
  }

  const model = buildTrainingModel(config, shapes, batch, seq);
  const session = await ort.InferenceSession.create(model, sessionOptions(options.threads ?? 2));
  const grads = new Map<string, Float32Array>();
  const feeds: Record<string, ort.Tensor> = {};
  const fetches: Record<string, ort.Tensor> = {};
  for (const [name, data] of params) {
    const shape = shapes.get(name)!;
    feeds[name] = new ort.Tensor('float32', data, shape);
    const grad = new Float32Array(data.length);
    grads.set(name, grad);
    fetches[gradName(name)] = new ort.Tensor('float32', grad, shape);
  }
  const lossOut = new Float32Array(1);
  fetches.loss = new ort.Tensor('float32', lossOut, []);
  const v = config.vision;
  const pixelCount = batch * v.numChannels * v.imageSize * v.imageSize;
  let moments: Map<string, { m: Float32Array; v: Float32Array }> | undefined;
  let steps = 0;

  const trainer: OnnxTrainer = {
    config,
    params,
    grads,
    get steps() {
      return steps;
    },
    async computeGradients(pixels, ids) {
      if (pixels.length !== pixelCount) throw new Error(`training step: ${pixels.length} pixel values, expected ${pixelCount} (batch ${batch})`);
      if (ids.length !== batch * seq) throw new Error(`training step: ${ids.length} input ids, expected ${batch} x ${seq}`);
      feeds.pixel_values = new ort.Tensor('float32', pixels, [batch, v.numChannels, v.imageSize, v.imageSize]);
      feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(Array.from(ids), (x) => BigInt(x)), [batch, seq]);
      await session.run(feeds, fetches);
      return lossOut[0];
    },
    applyAdamW() {
      moments ??= new Map([...params].map(([name, p]) => [name, { m: new Float32Array(p.length), v: new Float32Array(p.length) }]));
      steps++;
      const { lr, beta1, beta2, eps, weightDecay } = adamw;
      const stepSize = lr / (1 - beta1 ** steps);
      const correction2 = Math.sqrt(1 - beta2 ** steps);
      const decay = 1 - lr * weightDecay;
      for (const [name, p] of params) {
        const g = grads.get(name)!;
        const { m, v: s } = moments.get(name)!;
        for (let i = 0; i < p.length; i++) {
          const gi = g[i];
          const mi = beta1 * m[i] + (1 - beta1) * gi;
          const si = beta2 * s[i] + (1 - beta2) * gi * gi;
          m[i] = mi;
          s[i] = si;
          p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(si) / correction2 + eps);
        }
      }
    },
    async step(pixels, ids) {
      const loss = await trainer.computeGradients(pixels, ids);
      trainer.applyAdamW();
      return loss;
    },
    async close() {
      await session.release();
    },
  };
  return trainer;
}
