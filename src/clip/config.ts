// CLIP model configurations (presets and Hugging Face config.json) and the checkpoint layout they imply.
// The layout is generated from the config the way transformers' CLIPModel registers its parameters and
// buffers, so any config (a preset, a user's model directory) gets the exact tensor list of its
// model.safetensors; test/clip-config.test.ts checks it against the real files' lists.
//
// API:
//   PRESET_NAMES, DEFAULT_PRESET ('vit-b-32'), PresetName, presetConfig(name): ClipConfig
//   parseHfConfig(json, source): ClipConfig         a parsed config.json (CLIPConfig); source names it in errors
//   readHfConfig(fileOrDir): ClipConfig             reads <dir>/config.json or the file itself
//   resolveClipConfig(presetOrDir): ClipConfig      a preset name, a model directory or a config.json path
//   WEIGHT_FORMATS, WeightFormat = 'fp32' | 'fp16' | 'int8'
//   clipLayout(config, format = 'fp32'): TensorSpec[]    in module order (the order of *.tensors.tsv)
//   fileOrder(specs): TensorSpec[]                  the order of a real file: dtype size descending, then name
//   layoutTotals(specs): LayoutTotals               entries, parameters, bytes per dtype, total bytes
//   describeLayout(presetOrConfig, format): { config, tensors, totals }   what the probe's --model check uses
//
// Weight formats: fp32 as published; fp16 turns every F32 tensor into F16; int8 weight-only stores each
// F32 tensor of rank >= 2 (linear weights, embeddings, the patch convolution) as I8 plus an F32 per-row
// scale tensor named `<name>.scale` (shape [rows]; value = q * scale[row]); biases, norms,
// class_embedding and logit_scale stay F32. The I64 position_ids buffers are kept in every format.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DTYPE_BYTES, int8ScaleName, tensorBytes } from './dtype';
import type { DType } from './tensor';

export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  layerNormEps: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  hiddenAct: string;
}

export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  layerNormEps: number;
  hiddenAct: string;
}

export interface ClipConfig {
  /** The preset name, or the config.json path it came from. */
  name: string;
  projectionDim: number;
  logitScaleInitValue: number;
  text: ClipTextConfig;
  vision: ClipVisionConfig;
}

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
  /** numel x dtype size. */
  bytes: number;
}

export interface LayoutTotals {
  entries: number;
  /** Elements of the model's parameters (the I64 position_ids buffers and int8 scales excluded). */
  parameters: number;
  bytesByDtype: Partial<Record<DType, number>>;
  totalBytes: number;
}

export const WEIGHT_FORMATS = ['fp32', 'fp16', 'int8'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

export const PRESET_NAMES = ['vit-b-32', 'vit-b-16', 'vit-l-14', 'tiny'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];
export const DEFAULT_PRESET: PresetName = 'vit-b-32';

// The defaults of transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig: a config.json only lists
// what differs from them.
const TEXT_DEFAULTS: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 512,
  intermediateSize: 2048,
  numHiddenLayers: 12,
  numAttentionHeads: 8,
  maxPositionEmbeddings: 77,
  layerNormEps: 1e-5,
  bosTokenId: 49406,
  eosTokenId: 49407,
  padTokenId: 1,
  hiddenAct: 'quick_gelu',
};

const VISION_DEFAULTS: ClipVisionConfig = {
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  imageSize: 224,
  patchSize: 32,
  numChannels: 3,
  layerNormEps: 1e-5,
  hiddenAct: 'quick_gelu',
};

const PRESETS: Record<PresetName, ClipConfig> = {
  'vit-b-32': {
    name: 'vit-b-32',
    projectionDim: 512,
    logitScaleInitValue: 2.6592,
    text: TEXT_DEFAULTS,
    vision: VISION_DEFAULTS,
  },
  'vit-b-16': {
    name: 'vit-b-16',
    projectionDim: 512,
    logitScaleInitValue: 2.6592,
    text: TEXT_DEFAULTS,
    vision: { ...VISION_DEFAULTS, patchSize: 16 },
  },
  'vit-l-14': {
    name: 'vit-l-14',
    projectionDim: 768,
    logitScaleInitValue: 2.6592,
    text: { ...TEXT_DEFAULTS, hiddenSize: 768, intermediateSize: 3072, numAttentionHeads: 12 },
    vision: {
      ...VISION_DEFAULTS,
      hiddenSize: 1024,
      intermediateSize: 4096,
      numHiddenLayers: 24,
      numAttentionHeads: 16,
      patchSize: 14,
    },
  },
  // The layout of ../shared/clip/reference/config.json (the tiny checkpoint with PyTorch outputs).
  tiny: {
    name: 'tiny',
    projectionDim: 16,
    logitScaleInitValue: 2.6592,
    text: {
      ...TEXT_DEFAULTS,
      vocabSize: 100,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      maxPositionEmbeddings: 16,
      bosTokenId: 98,
      eosTokenId: 99,
    },
    vision: {
      ...VISION_DEFAULTS,
      hiddenSize: 32,
      intermediateSize: 64,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      imageSize: 32,
      patchSize: 8,
    },
  },
};

export function isPresetName(value: string): value is PresetName {
  return (PRESET_NAMES as readonly string[]).includes(value);
}

export function presetConfig(name: string): ClipConfig {
  if (!isPresetName(name)) {
    throw new Error(
      `unknown CLIP preset "${name}": use one of ${PRESET_NAMES.join(', ')}, or a model directory with a config.json`,
    );
  }
  const preset = PRESETS[name];
  return { ...preset, text: { ...preset.text }, vision: { ...preset.vision } };
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field<T extends number | string>(
  section: Json,
  key: string,
  fallback: T,
  where: string,
  check: 'positive-int' | 'int' | 'positive' | 'string',
): T {
  const value = section[key];
  if (value === undefined || value === null) return fallback;
  const ok =
    check === 'string'
      ? typeof value === 'string'
      : typeof value === 'number' &&
        Number.isFinite(value) &&
        (check === 'positive' ? value > 0 : Number.isSafeInteger(value) && (check === 'int' ? value >= 0 : value > 0));
  if (!ok) {
    const wanted = {
      'positive-int': 'a positive integer',
      int: 'a non-negative integer',
      positive: 'a positive number',
      string: 'a string',
    }[check];
    throw new Error(`${where}.${key}: expected ${wanted}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

/** A parsed Hugging Face CLIPConfig (config.json); `source` names the file in error messages. */
export function parseHfConfig(json: unknown, source: string): ClipConfig {
  if (!isObject(json)) throw new Error(`${source}: expected a JSON object (a Hugging Face CLIPConfig)`);
  if (json.model_type !== undefined && json.model_type !== 'clip') {
    throw new Error(
      `${source}: model_type is ${JSON.stringify(json.model_type)}, clip-mem reads CLIP configs (model_type "clip")`,
    );
  }
  // Old transformers releases wrote text_config_dict / vision_config_dict.
  const textJson = json.text_config ?? json.text_config_dict ?? {};
  const visionJson = json.vision_config ?? json.vision_config_dict ?? {};
  if (!isObject(textJson)) throw new Error(`${source}: text_config must be an object`);
  if (!isObject(visionJson)) throw new Error(`${source}: vision_config must be an object`);
  const t = `${source}: text_config`;
  const v = `${source}: vision_config`;
  const text: ClipTextConfig = {
    vocabSize: field(textJson, 'vocab_size', TEXT_DEFAULTS.vocabSize, t, 'positive-int'),
    hiddenSize: field(textJson, 'hidden_size', TEXT_DEFAULTS.hiddenSize, t, 'positive-int'),
    intermediateSize: field(textJson, 'intermediate_size', TEXT_DEFAULTS.intermediateSize, t, 'positive-int'),
    numHiddenLayers: field(textJson, 'num_hidden_layers', TEXT_DEFAULTS.numHiddenLayers, t, 'positive-int'),
    numAttentionHeads: field(textJson, 'num_attention_heads', TEXT_DEFAULTS.numAttentionHeads, t, 'positive-int'),
    maxPositionEmbeddings: field(
      textJson,
      'max_position_embeddings',
      TEXT_DEFAULTS.maxPositionEmbeddings,
      t,
      'positive-int',
    ),
    layerNormEps: field(textJson, 'layer_norm_eps', TEXT_DEFAULTS.layerNormEps, t, 'positive'),
    bosTokenId: field(textJson, 'bos_token_id', TEXT_DEFAULTS.bosTokenId, t, 'int'),
    eosTokenId: field(textJson, 'eos_token_id', TEXT_DEFAULTS.eosTokenId, t, 'int'),
    padTokenId: field(textJson, 'pad_token_id', TEXT_DEFAULTS.padTokenId, t, 'int'),
    hiddenAct: field(textJson, 'hidden_act', TEXT_DEFAULTS.hiddenAct, t, 'string'),
  };
  const vision: ClipVisionConfig = {
    hiddenSize: field(visionJson, 'hidden_size', VISION_DEFAULTS.hiddenSize, v, 'positive-int'),
    intermediateSize: field(visionJson, 'intermediate_size', VISION_DEFAULTS.intermediateSize, v, 'positive-int'),
    numHiddenLayers: field(visionJson, 'num_hidden_layers', VISION_DEFAULTS.numHiddenLayers, v, 'positive-int'),
    numAttentionHeads: field(visionJson, 'num_attention_heads', VISION_DEFAULTS.numAttentionHeads, v, 'positive-int'),
    imageSize: field(visionJson, 'image_size', VISION_DEFAULTS.imageSize, v, 'positive-int'),
    patchSize: field(visionJson, 'patch_size', VISION_DEFAULTS.patchSize, v, 'positive-int'),
    numChannels: field(visionJson, 'num_channels', VISION_DEFAULTS.numChannels, v, 'positive-int'),
    layerNormEps: field(visionJson, 'layer_norm_eps', VISION_DEFAULTS.layerNormEps, v, 'positive'),
    hiddenAct: field(visionJson, 'hidden_act', VISION_DEFAULTS.hiddenAct, v, 'string'),
  };
  if (text.hiddenSize % text.numAttentionHeads) {
    throw new Error(
      `${t}: hidden_size ${text.hiddenSize} is not divisible by num_attention_heads ${text.numAttentionHeads}`,
    );
  }
  if (vision.hiddenSize % vision.numAttentionHeads) {
    throw new Error(
      `${v}: hidden_size ${vision.hiddenSize} is not divisible by num_attention_heads ${vision.numAttentionHeads}`,
    );
  }
  if (vision.imageSize % vision.patchSize) {
    throw new Error(`${v}: image_size ${vision.imageSize} is not divisible by patch_size ${vision.patchSize}`);
  }
  return {
    name: source,
    projectionDim: field(json, 'projection_dim', 512, source, 'positive-int'),
    logitScaleInitValue: field(json, 'logit_scale_init_value', 2.6592, source, 'positive'),
    text,
    vision,
  };
}

/** Reads a Hugging Face config.json: the file itself, or `config.json` inside a model directory. */
export function readHfConfig(fileOrDir: string): ClipConfig {
  const file =
    fs.existsSync(fileOrDir) && fs.statSync(fileOrDir).isDirectory() ? path.join(fileOrDir, 'config.json') : fileOrDir;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the model config ${file}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  return parseHfConfig(json, file);
}

/** A preset name, a model directory (with config.json) or a config.json path. */
export function resolveClipConfig(presetOrPath: string): ClipConfig {
  if (isPresetName(presetOrPath)) return presetConfig(presetOrPath);
  if (!fs.existsSync(presetOrPath)) {
    throw new Error(
      `"${presetOrPath}" is neither a CLIP preset (${PRESET_NAMES.join(', ')}) nor an existing model directory or config.json`,
    );
  }
  return readHfConfig(presetOrPath);
}

function spec(name: string, dtype: DType, shape: number[]): TensorSpec {
  return { name, dtype, shape, bytes: tensorBytes(dtype, shape) };
}

function encoderLayers(prefix: string, layers: number, width: number, intermediate: number): TensorSpec[] {
  const out: TensorSpec[] = [];
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}.encoder.layers.${i}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) {
      out.push(
        spec(`${p}.self_attn.${proj}.weight`, 'F32', [width, width]),
        spec(`${p}.self_attn.${proj}.bias`, 'F32', [width]),
      );
    }
    out.push(
      spec(`${p}.layer_norm1.weight`, 'F32', [width]),
      spec(`${p}.layer_norm1.bias`, 'F32', [width]),
      spec(`${p}.mlp.fc1.weight`, 'F32', [intermediate, width]),
      spec(`${p}.mlp.fc1.bias`, 'F32', [intermediate]),
      spec(`${p}.mlp.fc2.weight`, 'F32', [width, intermediate]),
      spec(`${p}.mlp.fc2.bias`, 'F32', [width]),
      spec(`${p}.layer_norm2.weight`, 'F32', [width]),
      spec(`${p}.layer_norm2.bias`, 'F32', [width]),
    );
  }
  return out;
}

/** A tensor of the model whose size in one storage type is a given number of bytes. */
export interface TensorOfSize {
  name: string;
  shape: number[];
  /** fp16 and bf16 have the same size: one entry says both. */
  storage: 'fp32' | 'fp16/bf16' | 'int8';
}

/**
 * The model's parameters whose byte size in fp32, fp16/bf16 or int8 is exactly `bytes`: which tensor a
 * failed allocation of that size was most likely for.
 */
export function tensorsOfSize(config: ClipConfig, bytes: number): TensorOfSize[] {
  const storages = [
    ['fp32', 4],
    ['fp16/bf16', 2],
    ['int8', 1],
  ] as const;
  return clipLayout(config, 'fp32')
    .filter((t) => t.dtype === 'F32')
    .flatMap((t) =>
      storages
        .filter(([, size]) => (t.bytes / 4) * size === bytes)
        .map(([storage]) => ({ name: t.name, shape: t.shape, storage })),
    );
}

/** Every tensor of the CLIPModel state dict for `config`, in module order, in the given weight format. */
export function clipLayout(config: ClipConfig, format: WeightFormat = 'fp32'): TensorSpec[] {
  const { text, vision, projectionDim } = config;
  const patches = (vision.imageSize / vision.patchSize) ** 2;
  const fp32: TensorSpec[] = [
    spec('text_model.embeddings.token_embedding.weight', 'F32', [text.vocabSize, text.hiddenSize]),
    spec('text_model.embeddings.position_embedding.weight', 'F32', [text.maxPositionEmbeddings, text.hiddenSize]),
    spec('text_model.embeddings.position_ids', 'I64', [1, text.maxPositionEmbeddings]),
    ...encoderLayers('text_model', text.numHiddenLayers, text.hiddenSize, text.intermediateSize),
    spec('text_model.final_layer_norm.weight', 'F32', [text.hiddenSize]),
    spec('text_model.final_layer_norm.bias', 'F32', [text.hiddenSize]),
    spec('vision_model.embeddings.class_embedding', 'F32', [vision.hiddenSize]),
    spec('vision_model.embeddings.patch_embedding.weight', 'F32', [
      vision.hiddenSize,
      vision.numChannels,
      vision.patchSize,
      vision.patchSize,
    ]),
    spec('vision_model.embeddings.position_embedding.weight', 'F32', [patches + 1, vision.hiddenSize]),
    spec('vision_model.embeddings.position_ids', 'I64', [1, patches + 1]),
    spec('vision_model.pre_layrnorm.weight', 'F32', [vision.hiddenSize]),
    spec('vision_model.pre_layrnorm.bias', 'F32', [vision.hiddenSize]),
    ...encoderLayers('vision_model', vision.numHiddenLayers, vision.hiddenSize, vision.intermediateSize),
    spec('vision_model.post_layernorm.weight', 'F32', [vision.hiddenSize]),
    spec('vision_model.post_layernorm.bias', 'F32', [vision.hiddenSize]),
    spec('visual_projection.weight', 'F32', [projectionDim, vision.hiddenSize]),
    spec('text_projection.weight', 'F32', [projectionDim, text.hiddenSize]),
    spec('logit_scale', 'F32', []),
  ];
  if (format === 'fp32') return fp32;
  if (format === 'fp16') return fp32.map((s) => (s.dtype === 'F32' ? spec(s.name, 'F16', s.shape) : s));
  return fp32.flatMap((s) =>
    isInt8Quantized(s) ? [spec(s.name, 'I8', s.shape), spec(int8ScaleName(s.name), 'F32', [s.shape[0]])] : [s],
  );
}

/** Whether the int8 weight-only format stores this fp32 tensor as I8 + per-row scale. */
export function isInt8Quantized(fp32Spec: { dtype: DType; shape: readonly number[] }): boolean {
  return fp32Spec.dtype === 'F32' && fp32Spec.shape.length >= 2;
}

/** The order of entries in a real model.safetensors: dtype size descending (I64 first), then by name. */
export function fileOrder<T extends { name: string; dtype: DType }>(specs: readonly T[]): T[] {
  return [...specs].sort(
    (a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
}

export function layoutTotals(specs: readonly TensorSpec[]): LayoutTotals {
  const bytesByDtype: Partial<Record<DType, number>> = {};
  let parameters = 0;
  let totalBytes = 0;
  for (const s of specs) {
    bytesByDtype[s.dtype] = (bytesByDtype[s.dtype] ?? 0) + s.bytes;
    totalBytes += s.bytes;
    const isBuffer = s.name.endsWith('.position_ids');
    const isScale = s.name.endsWith('.scale');
    if (!isBuffer && !isScale) parameters += s.bytes / DTYPE_BYTES[s.dtype];
  }
  return { entries: specs.length, parameters, bytesByDtype, totalBytes };
}

/** Layout and byte totals of a preset, a model directory / config.json, or a config already read. */
export function describeLayout(
  presetOrConfig: string | ClipConfig = DEFAULT_PRESET,
  format: WeightFormat = 'fp32',
): { config: ClipConfig; tensors: TensorSpec[]; totals: LayoutTotals } {
  const config = typeof presetOrConfig === 'string' ? resolveClipConfig(presetOrConfig) : presetOrConfig;
  const tensors = clipLayout(config, format);
  return { config, tensors, totals: layoutTotals(tensors) };
}
