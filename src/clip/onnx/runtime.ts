// CLIP inference through onnxruntime-node, clip-mem's default inference runtime. The ONNX model is built
// in memory; its weights are initializers with external data pointing at byte ranges of the safetensors
// file itself (onnxruntime maps them), so nothing is copied and no .onnx file is written. fp16 weights
// are cast to float32 inside the graph and int8 weight-only weights dequantized (DequantizeLinear with
// the per-row scale); constant folding and pre-packing are switched off so those stay lazy and the
// weights are held once, in the file's dtype.
//
// API:
//   createOnnxClip(model, options?): Promise<OnnxClip>
//     model: what resolveClipModel takes (a preset name: its synthetic checkpoint; a model directory; a
//            model.safetensors beside its config.json; a hub id in the local cache), or { config, weightsFile }
//     options: { format?: 'fp32' | 'fp16' | 'int8' (presets), threads?: number (default 2) }
//   OnnxClip.encodeImage(pixels: Float32Array, batch): Promise<Float32Array>   normalised [batch, P]
//   OnnxClip.encodeText(ids: ArrayLike<number|bigint>, batch): Promise<Float32Array>  normalised [batch, P]
//   OnnxClip.forward(pixels, ids, batch): Promise<ClipOutputs>   embeddings, logits_per_image, loss
//   OnnxClip.weightFormat: 'fp32' | 'fp16' | 'int8' (from the file's dtypes); OnnxClip.close()
//   buildInferenceModel(header, config, graph: 'image' | 'text' | 'both', batch, seq): Uint8Array
//   inferenceGraph(...same): Graph                              the graph before serialization
//   resolveModel(model, options): { config, weightsFile }      shared with train.ts
//   sessionOptions(threads, externalDataDir?)                   the options of every clip-mem ORT session
//   onnxruntime(): the onnxruntime-node module, loaded on first use
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { ResolveOptions, resolveClipModel } from '../checkpoint';
import type { ClipConfig, WeightFormat } from '../config';
import { int8ScaleName } from '../dtype';
import { readSafetensorsHeader, SafetensorsEntry, SafetensorsHeader } from '../safetensors';
import { clipHead, ClipParams, imageFeatures, normalize, textFeatures } from './clip-graph';
import { ElemType, Graph, Value, numel } from './graph';

/** A checkpoint: a spec for resolveClipModel, or weights with their config. */
export type ClipModelSpec = string | { config: ClipConfig; weightsFile: string };

export interface OnnxClipOptions extends ResolveOptions {
  threads?: number;
}

export function resolveModel(
  model: ClipModelSpec,
  options: ResolveOptions = {},
): { config: ClipConfig; weightsFile: string } {
  const { config, weightsFile } = typeof model === 'string' ? resolveClipModel(model, options) : model;
  return { config, weightsFile: path.resolve(weightsFile) };
}

export interface ClipOutputs {
  imageEmbeds: Float32Array;
  textEmbeds: Float32Array;
  /** [batch, batch] row-major. */
  logitsPerImage: Float32Array;
  loss: number;
}

export interface OnnxClip {
  readonly config: ClipConfig;
  readonly file: string;
  readonly weightFormat: WeightFormat;
  encodeImage(pixels: Float32Array, batch: number): Promise<Float32Array>;
  encodeText(ids: ArrayLike<number | bigint>, batch: number): Promise<Float32Array>;
  forward(pixels: Float32Array, ids: ArrayLike<number | bigint>, batch: number): Promise<ClipOutputs>;
  close(): Promise<void>;
}

/**
 * onnxruntime-node, loaded on first use: importing the graph builders (the estimator does) stays light.
 * Its Linux build starts Microsoft's telemetry unless ORT_DISABLE_TELEMETRY is set (measured: a thread,
 * ~3 MB of RSS and an empty /tmp/mat-debug-PID.log per process): off unless the user chose otherwise,
 * so that the memory clip-mem measures is the model's, and nothing is left behind.
 */
export function onnxruntime(): typeof ort {
  process.env.ORT_DISABLE_TELEMETRY ??= '1';
  return require('onnxruntime-node') as typeof ort;
}

const ELEM: Partial<Record<string, ElemType>> = { F32: ElemType.FLOAT, F16: ElemType.FLOAT16, I8: ElemType.INT8 };

/** Weights as file-backed initializers, converted to float32 where they are used. */
function fileParams(g: Graph, header: SafetensorsHeader): ClipParams {
  const entries = new Map(header.entries.map((e) => [e.name, e]));
  const location = path.basename(header.file);
  const declared = new Map<string, Value>();
  const entry = (name: string): SafetensorsEntry => {
    const e = entries.get(name);
    if (!e)
      throw new Error(`${header.file}: tensor ${JSON.stringify(name)} is missing (is this a CLIPModel checkpoint?)`);
    return e;
  };
  const stored = (name: string): Value => {
    let v = declared.get(name);
    if (!v) {
      const e = entry(name);
      const type = ELEM[e.dtype];
      if (type === undefined)
        throw new Error(
          `${header.file}: tensor ${name}: dtype ${e.dtype} is not one onnxruntime runs here (F32, F16, I8)`,
        );
      v = g.external(name, type, e.shape, { location, offset: header.dataOffset + e.begin, length: e.bytes });
      declared.set(name, v);
    }
    return v;
  };
  // onnxruntime runs every node whose inputs are ready as early as it likes: a Cast of an initializer
  // would run at the start, and all converted weights would be alive together. An Expand of the stored
  // weight to a shape derived from the activation's Shape (always [1]: a no-op broadcast) makes the
  // conversion wait for that activation, and keeps it out of reach of constant folding.
  const afterInput = (raw: Value, input: Value | undefined): Value => {
    if (!input) return raw;
    const batchDim = g.node('Shape', [input], [{ type: ElemType.INT64, shape: [1] }], {
      start: { kind: 'int', value: 0 },
      end: { kind: 'int', value: 1 },
    })[0];
    const one = g.add(g.mul(batchDim, g.int64s([0])), g.int64s([1]));
    return g.node('Expand', [raw, one], [{ type: raw.type, shape: raw.shape }])[0];
  };
  return {
    get(name, input) {
      const raw = stored(name);
      if (raw.type === ElemType.FLOAT) return raw;
      const lazy = afterInput(raw, input);
      return raw.type === ElemType.INT8
        ? g.dequantize(lazy, stored(int8ScaleName(name)), 0)
        : g.cast(lazy, ElemType.FLOAT);
    },
    rows(name, indices) {
      // Gather first, convert only the rows used: the table stays in its stored dtype.
      const raw = stored(name);
      const picked = g.cast(g.gather(raw, indices), ElemType.FLOAT);
      if (raw.type !== ElemType.INT8) return picked;
      const scales = g.reshape(g.gather(stored(int8ScaleName(name)), indices), [indices.shape[0], 1]);
      return g.mul(picked, scales);
    },
  };
}

export type InferenceGraph = 'image' | 'text' | 'both';

/** The inference model: inputs pixel_values / input_ids, outputs image_embeds / text_embeds (+ logits, loss). */
export function buildInferenceModel(
  header: SafetensorsHeader,
  config: ClipConfig,
  which: InferenceGraph,
  batch: number,
  seq: number,
): Uint8Array {
  return inferenceGraph(header, config, which, batch, seq).toModel();
}

/** The graph buildInferenceModel serializes (the benchmark counts its matrix products). */
export function inferenceGraph(
  header: SafetensorsHeader,
  config: ClipConfig,
  which: InferenceGraph,
  batch: number,
  seq: number,
): Graph {
  const g = new Graph(`clip_${which}`);
  const p = fileParams(g, header);
  const v = config.vision;
  let image: Value | undefined;
  let text: Value | undefined;
  if (which !== 'text') {
    const pixels = g.input('pixel_values', ElemType.FLOAT, [batch, v.numChannels, v.imageSize, v.imageSize]);
    image = g.output(normalize(g, imageFeatures(g, config, p, pixels)), 'image_embeds');
  }
  if (which !== 'image') {
    const ids = g.input('input_ids', ElemType.INT64, [batch, seq]);
    text = g.output(normalize(g, textFeatures(g, config, p, ids)), 'text_embeds');
  }
  if (image && text) {
    const head = clipHead(g, p, image, text);
    g.output(head.logitsPerImage, 'logits_per_image');
    if (head.loss) g.output(head.loss, 'loss');
  }
  return g;
}

/** Session options shared by every clip-mem ORT session (docs/library.md, CLIP on onnxruntime). */
export function sessionOptions(threads: number, externalDataDir?: string): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // No memory pattern: with it every run after the first allocates the whole planned block on top of the
    // arena the first run grew, and the block for the weights' size besides (address space only). A loop's
    // second forward then peaked 26-45% above the first (vit-b-32 fp32 batch 128: 1135 then 1525 MiB of RSS;
    // vit-b-16 fp16 batch 32: 830 then 1207), which the estimate, made from one forward, cannot see. Without
    // it: 1135 then 1137 MiB, the address space 577 MiB lower, the second run faster.
    enableMemPattern: false,
    extra: {
      session: {
        // The weights live in the checkpoint; keep them there instead of packed or folded copies.
        disable_prepacking: '1',
        ...(externalDataDir ? { model_external_initializers_file_folder_path: externalDataDir } : {}),
      },
      optimization: { disable_specified_optimizers: 'ConstantFolding' },
    },
  };
}

export function weightFormatOf(header: SafetensorsHeader): WeightFormat {
  const dtypes = new Set(header.entries.map((e) => e.dtype));
  return dtypes.has('I8') ? 'int8' : dtypes.has('F16') ? 'fp16' : 'fp32';
}

const toInt64 = (ids: ArrayLike<number | bigint>): BigInt64Array =>
  BigInt64Array.from(Array.from(ids), (x) => BigInt(x));

export async function createOnnxClip(model: ClipModelSpec, options: OnnxClipOptions = {}): Promise<OnnxClip> {
  const { config, weightsFile: file } = resolveModel(model, options);
  const dir = path.dirname(file);
  const header = readSafetensorsHeader(file);
  const threads = options.threads ?? 2;
  // One session per graph and input shape, created on first use.
  const sessions = new Map<string, Promise<ort.InferenceSession>>();
  const session = (which: InferenceGraph, batch: number, seq: number): Promise<ort.InferenceSession> => {
    const key = `${which}:${batch}:${seq}`;
    let s = sessions.get(key);
    if (!s) {
      const model = buildInferenceModel(header, config, which, batch, seq);
      s = onnxruntime().InferenceSession.create(model, sessionOptions(threads, dir));
      sessions.set(key, s);
    }
    return s;
  };
  const v = config.vision;
  const pixelTensor = (pixels: Float32Array, batch: number): ort.Tensor => {
    const shape = [batch, v.numChannels, v.imageSize, v.imageSize];
    if (pixels.length !== numel(shape)) {
      throw new Error(
        `encodeImage: ${pixels.length} pixel values for batch ${batch}; expected [${shape.join(', ')}] = ${numel(shape)}`,
      );
    }
    return new (onnxruntime().Tensor)('float32', pixels, shape);
  };
  const idsTensor = (ids: ArrayLike<number | bigint>, batch: number): ort.Tensor => {
    if (batch < 1 || ids.length % batch !== 0)
      throw new Error(`encodeText: ${ids.length} ids do not split into ${batch} rows`);
    return new (onnxruntime().Tensor)('int64', toInt64(ids), [batch, ids.length / batch]);
  };
  const data = (t: ort.OnnxValue): Float32Array => (t as ort.Tensor).data as Float32Array;
  return {
    config,
    file,
    weightFormat: weightFormatOf(header),
    async encodeImage(pixels, batch) {
      const s = await session('image', batch, 0);
      return data((await s.run({ pixel_values: pixelTensor(pixels, batch) })).image_embeds);
    },
    async encodeText(ids, batch) {
      const input = idsTensor(ids, batch);
      const s = await session('text', batch, input.dims[1]);
      return data((await s.run({ input_ids: input })).text_embeds);
    },
    async forward(pixels, ids, batch) {
      const input = idsTensor(ids, batch);
      const s = await session('both', batch, input.dims[1]);
      const out = await s.run({ pixel_values: pixelTensor(pixels, batch), input_ids: input });
      return {
        imageEmbeds: data(out.image_embeds),
        textEmbeds: data(out.text_embeds),
        logitsPerImage: data(out.logits_per_image),
        loss: data(out.loss)[0],
      };
    },
    async close() {
      for (const s of sessions.values()) await (await s).release();
      sessions.clear();
    },
  };
}
