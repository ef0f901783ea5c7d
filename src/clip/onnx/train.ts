// The fast CLIP training path: onnxruntime runs forward, the symmetric contrastive loss and every
// parameter gradient (reverse mode over our own graph, grad.ts); AdamW (PyTorch semantics, decoupled
// weight decay) then updates the parameters in place in JS.
//
// Memory: parameters and AdamW's two moments are held once, in float32 (3 x 605 MB for vit-b-32); the
// parameters are graph inputs that onnxruntime reads without copying. onnxruntime-node 1.30 copies
// every output (pre-allocated or not) out of buffers onnxruntime allocates itself, so a gradient costs
// at least twice its size while a run returns. A step therefore runs several graphs: the head graph
// (both towers forward, the loss, its gradients w.r.t. the two towers' projected features and
// logit_scale, and the hidden states at segment boundaries), then for each tower its segments of layers
// from the top down, each recomputing its own layers' forward from the saved boundary state and
// backpropagating the gradient of its output into its parameters and its input state. Each segment's
// gradients land in one reused buffer and AdamW applies them before the next segment runs, so only one
// segment's gradients exist at a time (vit-b-32: 34,793,472 with the default 4 segments, text layers 0-2
// with the token embedding; 87,849,216, the vision tower, with 1). The forward pass runs twice
// in all, whatever the number of segments.
// Parameters are read from the checkpoint by copy, not mmap: an mmap'd file's pages would count in RSS
// again beside the writable copy training needs.
//
// API:
//   createOnnxTrainer(model, options): Promise<OnnxTrainer>
//     model: as createOnnxClip takes it (preset, directory, file, hub id, or { config, weightsFile })
//     options: { batch, seq? (default max positions), threads? (2), segments? (4), adamw?: AdamWOptions, format?, ... }
//   AdamWOptions { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 }  (torch's defaults;
//     torch requires lr)
//   OnnxTrainer.loss(pixels, ids): Promise<number>                  forward only
//   OnnxTrainer.computeGradients(pixels, ids, visit): Promise<number>
//     the loss; visit(name, grad) sees every parameter's gradient once (the view is reused afterwards)
//   OnnxTrainer.step(pixels, ids): Promise<number>                 gradients + AdamW; the loss before it
//   OnnxTrainer.params: Map<string, Float32Array>                   live (checkpoint order); .steps
//   buildTrainingModels(config, shapes, batch, seq, segments = 1): { head, backward[] }   the graphs
//   DEFAULT_TRAINING_SEGMENTS (4): what createOnnxTrainer passes as `segments` by default
import type * as ort from 'onnxruntime-node';
import type { ResolveOptions } from '../checkpoint';
import type { ClipConfig } from '../config';
import * as fs from 'node:fs';
import { bfloat16BitsToFloat32, DTYPE_BYTES, float16BitsToFloat32 } from '../dtype';
import { readSafetensorsHeader } from '../safetensors';
import { loadAddon } from '../../core/native';
import { withPhase } from '../../core/phase';
import { clipHead, ClipParams, normalize, Tower, towerSegment, towerTokens } from './clip-graph';
import { gradients } from './grad';
import { ElemType, Graph, Value, numel } from './graph';
import { ClipModelSpec, onnxruntime, resolveModel, sessionOptions } from './runtime';

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export interface OnnxTrainerOptions extends ResolveOptions {
  batch: number;
  seq?: number;
  /**
   * Backward graphs per tower (default DEFAULT_TRAINING_SEGMENTS = 4, at most one per layer): more
   * segments, fewer gradients alive at once (vit-b-32 batch 2: 1 -> 2650-2880 MiB peak, 4 -> 2200-2330
   * MiB), the same compute.
   */
  segments?: number;
  threads?: number;
  adamw?: AdamWOptions;
}

export interface OnnxTrainer {
  readonly config: ClipConfig;
  readonly params: Map<string, Float32Array>;
  /** AdamW steps applied so far. */
  readonly steps: number;
  loss(pixels: Float32Array, ids: ArrayLike<number | bigint>): Promise<number>;
  computeGradients(
    pixels: Float32Array,
    ids: ArrayLike<number | bigint>,
    visit: (name: string, grad: Float32Array) => void,
  ): Promise<number>;
  step(pixels: Float32Array, ids: ArrayLike<number | bigint>): Promise<number>;
  close(): Promise<void>;
}

export const gradName = (name: string): string => `grad.${name}`;
/** Backward segments per tower the trainer uses unless told otherwise. */
export const DEFAULT_TRAINING_SEGMENTS = 4;
const IMAGE_FEATURES = 'image_features';
const TEXT_FEATURES = 'text_features';

export interface TrainingModel {
  /** What the graph computes, for messages: `head`, `text layers 6-11`, ... */
  name: string;
  /** The graph itself (src/estimate walks it) and its serialization. */
  graph: Graph;
  bytes: Uint8Array;
  /** Parameters whose gradients the graph outputs (as `grad.<name>`), in output order. */
  params: string[];
}

export interface TrainingModels {
  head: TrainingModel;
  /** Backward graphs in the order they run: each tower's segments from its last layers down. */
  backward: TrainingModel[];
}

const hiddenName = (tower: Tower, layer: number): string => `hidden.${tower}.${layer}`;
const featuresName = (tower: Tower): string => (tower === 'vision' ? IMAGE_FEATURES : TEXT_FEATURES);

/** Layer boundaries splitting `layers` into `segments` nearly equal runs: [0, ..., layers]. */
function boundaries(layers: number, segments: number): number[] {
  const n = Math.max(1, Math.min(layers, Math.floor(segments)));
  return Array.from({ length: n + 1 }, (_, i) => Math.round((i * layers) / n));
}

/** Parameters as graph inputs, declared on first use. */
function inputParams(
  g: Graph,
  shapes: ReadonlyMap<string, readonly number[]>,
): { params: ClipParams; inputs: Map<string, Value> } {
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
  return { params, inputs };
}

function outputGradients(g: Graph, loss: Value, wrt: readonly Value[]): void {
  for (const [value, grad] of gradients(g, loss, wrt)) {
    // A gradient that is already a graph output or input would need a second name: copy it.
    const named = g.outputs.includes(grad) || g.inputs.includes(grad) ? g.node('Identity', [grad], [grad])[0] : grad;
    g.output(named, gradName(value.name));
  }
}

/**
 * head: pixels + ids + every parameter -> loss; the gradients w.r.t. image_features, text_features (the
 *   projections' outputs) and logit_scale; the hidden states at the segment boundaries (`hidden.<tower>.<layer>`).
 * backward, one per tower segment (layers [from, to)): the segment's input (pixels or ids when from = 0,
 *   else hidden.<tower>.<from>), its parameters and the gradient of its output (`grad.<features>` or
 *   `grad.hidden.<tower>.<to>`) -> the gradients of its parameters and of its input hidden state.
 */
export function buildTrainingModels(
  config: ClipConfig,
  shapes: ReadonlyMap<string, readonly number[]>,
  batch: number,
  seq: number,
  segments = 1,
): TrainingModels {
  const v = config.vision;
  const pixelShape = [batch, v.numChannels, v.imageSize, v.imageSize];
  const towers: Tower[] = ['text', 'vision'];
  const layersOf = (tower: Tower) => (tower === 'text' ? config.text : config.vision).numHiddenLayers;
  const widthOf = (tower: Tower) => (tower === 'text' ? config.text : config.vision).hiddenSize;

  const head = new Graph('clip_train_head');
  const { params } = inputParams(head, shapes);
  const headInputs = {
    vision: head.input('pixel_values', ElemType.FLOAT, pixelShape),
    text: head.input('input_ids', ElemType.INT64, [batch, seq]),
  };
  const features = {} as Record<Tower, Value>;
  for (const tower of towers) {
    const cuts = boundaries(layersOf(tower), segments);
    let h = headInputs[tower];
    for (let i = 0; i + 1 < cuts.length; i++) {
      h = towerSegment(head, config, params, tower, h, headInputs.text, cuts[i], cuts[i + 1]);
      if (i + 2 < cuts.length) head.output(h, hiddenName(tower, cuts[i + 1]));
    }
    h.name = featuresName(tower);
    features[tower] = h;
  }
  const { loss } = clipHead(head, params, normalize(head, features.vision), normalize(head, features.text));
  if (!loss) throw new Error('training needs as many texts as images');
  head.output(loss, 'loss');
  outputGradients(head, loss, [features.vision, features.text, params.get('logit_scale')]);

  const backward: TrainingModel[] = [];
  for (const tower of towers) {
    const cuts = boundaries(layersOf(tower), segments);
    for (let i = cuts.length - 2; i >= 0; i--) {
      const [from, to] = [cuts[i], cuts[i + 1]];
      // One segment keeps the plain tower name (src/estimate walks clip_train_text / clip_train_vision).
      const g = new Graph(cuts.length === 2 ? `clip_train_${tower}` : `clip_train_${tower}_${from}_${to}`);
      const { params: segmentParams, inputs } = inputParams(g, shapes);
      // Text segments take the ids even when they only need their length (a middle segment).
      const ids = tower === 'text' ? g.input('input_ids', ElemType.INT64, [batch, seq]) : undefined;
      const input =
        from > 0
          ? g.input(hiddenName(tower, from), ElemType.FLOAT, [batch * towerTokens(config, tower, seq), widthOf(tower)])
          : tower === 'vision'
            ? g.input('pixel_values', ElemType.FLOAT, pixelShape)
            : ids!;
      const out = towerSegment(g, config, segmentParams, tower, input, ids, from, to);
      const seed = g.input(
        gradName(to === layersOf(tower) ? featuresName(tower) : hiddenName(tower, to)),
        ElemType.FLOAT,
        out.shape,
      );
      outputGradients(g, g.reduceSum(g.mul(out, seed), [0, 1], false), [
        ...inputs.values(),
        ...(from > 0 ? [input] : []),
      ]);
      backward.push({
        name: `${tower} layers ${from}-${to - 1}`,
        graph: g,
        bytes: g.toModel(),
        params: [...inputs.keys()],
      });
    }
  }
  const covered = new Set([...backward.flatMap((m) => m.params), 'logit_scale']);
  const unused = [...shapes.keys()].filter((name) => !covered.has(name));
  if (unused.length) throw new Error(`training: checkpoint tensors the model does not use: ${unused.join(', ')}`);
  return { head: { name: 'head', graph: head, bytes: head.toModel(), params: ['logit_scale'] }, backward };
}

/** float32 of every 16-bit pattern (256 KiB): widening by lookup is ~20x faster than computing it. */
const widenTables = new Map<string, Float32Array>();
function widenTable(dtype: 'F16' | 'BF16'): Float32Array {
  let table = widenTables.get(dtype);
  if (!table) {
    const widen = dtype === 'F16' ? float16BitsToFloat32 : bfloat16BitsToFloat32;
    table = Float32Array.from({ length: 65536 }, (_, bits) => widen(bits));
    widenTables.set(dtype, table);
  }
  return table;
}

interface HugePageAddon {
  prefaultForWrite(buffer: ArrayBuffer): unknown;
  adviseHugePages(buffer: ArrayBuffer): number;
}

/**
 * A float32 buffer in huge pages where the kernel offers them. Most of a training step's setup is the
 * kernel faulting in fresh memory 4 KiB at a time (docs/benchmarks.md, setup); one block is what a
 * huge-page allocation can take whole (~180k faults for the step with one array per tensor, ~15k in huge
 * pages). Its pages are populated up front for a buffer held whole from its first use (the parameters,
 * read at once; AdamW's moments, which a loop holds from its second step on); the gradient pool, written
 * bit by bit, only gets the advice, so that RSS rises as the program writes, as it would without this.
 */
function hugePageFloats(length: number, filled: 'at once' | 'bit by bit'): Float32Array {
  const buffer = new Float32Array(length);
  const addon = loadAddon<HugePageAddon>();
  if (filled === 'at once') addon.prefaultForWrite(buffer.buffer);
  else addon.adviseHugePages(buffer.buffer);
  return buffer;
}

/** One float32 array per name, all views of a single hugePageFloats buffer. */
function parameterViews(
  lengths: ReadonlyMap<string, number>,
  filled: 'at once' | 'bit by bit',
): Map<string, Float32Array> {
  let total = 0;
  for (const length of lengths.values()) total += length;
  const buffer = hugePageFloats(total, filled);
  const views = new Map<string, Float32Array>();
  let at = 0;
  for (const [name, length] of lengths) {
    views.set(name, buffer.subarray(at, at + length));
    at += length;
  }
  return views;
}

/**
 * Every parameter as float32, read by copy, as views of one buffer (`parameterViews`). F32 tensors are
 * read straight into their views; F16 and BF16 go through one reused buffer, so widening an fp16
 * checkpoint leaves no garbage of its size behind.
 */
function readFloat32Params(file: string): {
  params: Map<string, Float32Array>;
  shapes: Map<string, readonly number[]>;
} {
  const header = readSafetensorsHeader(file);
  const entries = header.entries.filter((entry) => entry.dtype !== 'I64'); // position_ids buffers: not parameters
  const shapes = new Map<string, readonly number[]>();
  for (const entry of entries) {
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
      throw new Error(
        `${file}: tensor ${entry.name} is ${entry.dtype}; training reads F32, F16 or BF16 weights (not int8 weight-only)`,
      );
    }
    shapes.set(entry.name, entry.shape);
  }
  const params = withPhase('train weights (float32 parameters)', () =>
    parameterViews(
      new Map(entries.map((entry) => [entry.name, entry.bytes / DTYPE_BYTES[entry.dtype as 'F32' | 'F16' | 'BF16']])),
      'at once',
    ),
  );
  const fd = fs.openSync(file, 'r');
  try {
    let scratch = new Uint8Array(0);
    for (const entry of entries) {
      const values = params.get(entry.name)!;
      const numel = values.length;
      if (entry.dtype !== 'F32' && scratch.length < entry.bytes) scratch = new Uint8Array(entry.bytes);
      const target =
        entry.dtype === 'F32'
          ? new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
          : scratch.subarray(0, entry.bytes);
      for (let done = 0; done < entry.bytes;) {
        const n = fs.readSync(fd, target, done, entry.bytes - done, header.dataOffset + entry.begin + done);
        if (n === 0) throw new Error(`${file}: tensor ${entry.name}: the file ends inside its data`);
        done += n;
      }
      if (entry.dtype !== 'F32') {
        const bits = new Uint16Array(scratch.buffer, 0, numel);
        const table = widenTable(entry.dtype as 'F16' | 'BF16');
        for (let i = 0; i < numel; i++) values[i] = table[bits[i]];
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return { params, shapes };
}

export async function createOnnxTrainer(model: ClipModelSpec, options: OnnxTrainerOptions): Promise<OnnxTrainer> {
  const { config, weightsFile: file } = resolveModel(model, options);
  const { batch } = options;
  const seq = options.seq ?? config.text.maxPositionEmbeddings;
  const adamw = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, ...options.adamw };

  const { params, shapes } = readFloat32Params(file);
  const models = buildTrainingModels(config, shapes, batch, seq, options.segments ?? DEFAULT_TRAINING_SEGMENTS);
  // No arena: what a run allocates goes back to the allocator when it returns, so the next graph's
  // gradients reuse it instead of adding to the peak.
  const options_ = { ...sessionOptions(options.threads ?? 2), enableCpuMemArena: false };
  const head = await onnxruntime().InferenceSession.create(models.head.bytes, options_);
  const paramFeeds: Record<string, ort.Tensor> = {};
  for (const [name, data] of params) paramFeeds[name] = new (onnxruntime().Tensor)('float32', data, shapes.get(name)!);
  // One buffer for the gradients of the largest segment, carved into per-parameter views for each graph.
  const gradElements = (m: TrainingModel) => m.params.reduce((sum, name) => sum + params.get(name)!.length, 0);
  const pool = hugePageFloats(Math.max(1, ...models.backward.map(gradElements)), 'bit by bit');
  const backward: Array<{
    session: ort.InferenceSession;
    views: Map<string, Float32Array>;
    fetches: Record<string, ort.Tensor | null>;
  }> = [];
  for (const m of models.backward) {
    const session = await onnxruntime().InferenceSession.create(m.bytes, options_);
    const views = new Map<string, Float32Array>();
    const fetches: Record<string, ort.Tensor | null> = {};
    let at = 0;
    for (const name of m.params) {
      const view = pool.subarray(at, at + params.get(name)!.length);
      at += view.length;
      views.set(name, view);
      fetches[gradName(name)] = new (onnxruntime().Tensor)('float32', view, shapes.get(name)!);
    }
    // The input hidden state's gradient (segments above the first): small, onnxruntime allocates it.
    for (const output of session.outputNames) if (!(output in fetches)) fetches[output] = null;
    backward.push({ session, views, fetches });
  }
  const v = config.vision;
  const pixelShape = [batch, v.numChannels, v.imageSize, v.imageSize];
  const pixelCount = numel(pixelShape);
  const inputFeeds = (pixels: Float32Array, ids: ArrayLike<number | bigint>): Record<string, ort.Tensor> => {
    if (pixels.length !== pixelCount)
      throw new Error(`training step: ${pixels.length} pixel values, expected ${pixelCount} (batch ${batch})`);
    if (ids.length !== batch * seq)
      throw new Error(`training step: ${ids.length} input ids, expected ${batch} x ${seq}`);
    return {
      ...paramFeeds,
      pixel_values: new (onnxruntime().Tensor)('float32', pixels, pixelShape),
      input_ids: new (onnxruntime().Tensor)(
        'int64',
        BigInt64Array.from(Array.from(ids), (x) => BigInt(x)),
        [batch, seq],
      ),
    };
  };
  const pick = (session: ort.InferenceSession, feeds: Record<string, ort.Tensor>) =>
    Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]]));

  let moments: Map<string, { m: Float32Array; v: Float32Array }> | undefined;
  let steps = 0;
  // Allocated at the first step and populated whole: a loop holds them from its second step on, while the
  // step's activations are live. Filled as the first step's gradients came, they made one step peak below
  // the steps after it (vit-b-32 batch 8: 2278 MiB, then 2504); populated, 2325 then 2377.
  const allocateMoments = () => {
    const lengths = new Map([...params].map(([n, q]) => [n, q.length]));
    const [first, second] = withPhase('train AdamW moments (two float32 copies of the parameters)', () => [
      parameterViews(lengths, 'at once'),
      parameterViews(lengths, 'at once'),
    ]);
    return new Map([...params.keys()].map((n) => [n, { m: first.get(n)!, v: second.get(n)! }]));
  };
  const adamwUpdate = (name: string, g: Float32Array): void => {
    const p = params.get(name)!;
    const { m, v: s } = moments!.get(name)!;
    const { lr, beta1, beta2, eps, weightDecay } = adamw;
    const t = steps + 1;
    const stepSize = lr / (1 - beta1 ** t);
    const correction2 = Math.sqrt(1 - beta2 ** t);
    const decay = 1 - lr * weightDecay;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      const mi = beta1 * m[i] + (1 - beta1) * gi;
      const si = beta2 * s[i] + (1 - beta2) * gi * gi;
      m[i] = mi;
      s[i] = si;
      p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(si) / correction2 + eps);
    }
  };

  const trainer: OnnxTrainer = {
    config,
    params,
    get steps() {
      return steps;
    },
    async loss(pixels, ids) {
      const out = await head.run(pick(head, inputFeeds(pixels, ids)), ['loss']);
      return (out.loss.data as Float32Array)[0];
    },
    async computeGradients(pixels, ids, visit) {
      // Every graph's outputs become feeds by name: hidden states, feature and hidden-state gradients.
      const feeds: Record<string, ort.Tensor> = inputFeeds(pixels, ids);
      const out = await head.run(pick(head, feeds));
      Object.assign(feeds, out);
      const loss = (out.loss.data as Float32Array)[0];
      for (const segment of backward) {
        const result = await segment.session.run(pick(segment.session, feeds), segment.fetches);
        for (const [name, value] of Object.entries(result))
          if (segment.fetches[name] === null) feeds[name] = value as ort.Tensor;
        for (const [name, grad] of segment.views) visit(name, grad);
      }
      visit('logit_scale', out[gradName('logit_scale')].data as Float32Array);
      return loss;
    },
    async step(pixels, ids) {
      moments ??= allocateMoments();
      const loss = await trainer.computeGradients(pixels, ids, adamwUpdate);
      steps++;
      return loss;
    },
    async close() {
      for (const session of [head, ...backward.map((b) => b.session)]) await session.release();
    },
  };
  return trainer;
}
