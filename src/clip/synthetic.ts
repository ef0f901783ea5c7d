// Synthetic CLIP checkpoints: the exact layout and byte size of the real model.safetensors (same entries,
// same file order, same space-padded header and "__metadata__": {"format": "pt"}), filled with
// deterministic seeded values, written to a cache directory through a temporary file and a rename so an
// interrupted write never leaves a corrupt checkpoint. Values are generated per tensor from
// (seed, tensor name) in bounded chunks, so writing vit-b-32 never holds more than a few MiB.
//
// API:
//   clipMemCacheDir(env = process.env): string   $CLIPMEM_CACHE (or the old $CLIP_MEM_CACHE), else ~/.cache/clip-mem
//   syntheticCheckpointPath({ config, format, seed, cacheDir }): string
//   ensureSyntheticCheckpoint(options): { file, created }   reuses a cached file whose header matches
//   writeSyntheticCheckpoint(file, options)                  writes (temp file + rename) unconditionally
//   syntheticTensorValues(spec, config, seed): Float32Array  the fp32 values of one tensor (tests, int8)
//   interface SyntheticProgress { bytesWritten, totalBytes, tensor }
// Values: position_ids = 0..n-1; logit_scale = config.logitScaleInitValue; norm weights 1 +- 0.1; biases
// and class_embedding +-0.02; embeddings uniform with std 0.02; other weights uniform with std
// 1/sqrt(fan_in). fp16 rounds those values to nearest even; int8 stores round(v / scale[row]) with
// scale[row] = max|v[row]| / 127 (see config.ts for the int8 layout).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipConfig, TensorSpec, WeightFormat, clipLayout, fileOrder, isPresetName, resolveClipConfig } from './config';
import { DTYPE_BYTES, float32ToFloat16Array, int8RowScales, quantizeInt8Rows } from './dtype';
import { WriteProgress, readSafetensorsHeader, writeSafetensorsFile } from './safetensors';
import { mulberry32 } from '../core/random';
import { envValue } from '../core/env';

export const DEFAULT_SEED = 0;
/** Part of the cache file name: bump when the generated values change. */
const GENERATOR_VERSION = 1;
const CHUNK_ELEMENTS = 1 << 20;

export type SyntheticProgress = WriteProgress;

export interface SyntheticOptions {
  /** A preset name, a model directory / config.json, or a config already read. Default vit-b-32. */
  config?: string | ClipConfig;
  format?: WeightFormat;
  seed?: number;
  cacheDir?: string;
  onProgress?: (progress: SyntheticProgress) => void;
}

export function clipMemCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return envValue('CACHE', env) || path.join(os.homedir(), '.cache', 'clip-mem');
}

function configOf(options: SyntheticOptions): ClipConfig {
  const config = options.config ?? 'vit-b-32';
  return typeof config === 'string' ? resolveClipConfig(config) : config;
}

export function syntheticCheckpointPath(options: SyntheticOptions = {}): string {
  const config = configOf(options);
  const format = options.format ?? 'fp32';
  const seed = options.seed ?? DEFAULT_SEED;
  const { name: _name, ...shapes } = config;
  const id = isPresetName(config.name)
    ? config.name
    : `config-${createHash('sha256').update(JSON.stringify(shapes)).digest('hex').slice(0, 12)}`;
  return path.join(
    options.cacheDir ?? clipMemCacheDir(),
    `clip-${id}-${format}-seed${seed}-v${GENERATOR_VERSION}.safetensors`,
  );
}

/** The cached checkpoint for these options, written first when missing or not matching the layout. */
export function ensureSyntheticCheckpoint(options: SyntheticOptions = {}): { file: string; created: boolean } {
  const file = syntheticCheckpointPath(options);
  if (fs.existsSync(file) && matchesLayout(file, configOf(options), options.format ?? 'fp32'))
    return { file, created: false };
  writeSyntheticCheckpoint(file, options);
  return { file, created: true };
}

function matchesLayout(file: string, config: ClipConfig, format: WeightFormat): boolean {
  try {
    const header = readSafetensorsHeader(file);
    const expected = fileOrder(clipLayout(config, format));
    return (
      header.entries.length === expected.length &&
      header.entries.every(
        (e, i) =>
          e.name === expected[i].name && e.dtype === expected[i].dtype && e.shape.join() === expected[i].shape.join(),
      )
    );
  } catch {
    return false;
  }
}

/** Writes the synthetic checkpoint to `file` (temp file in the same directory, then rename). */
export function writeSyntheticCheckpoint(file: string, options: SyntheticOptions = {}): void {
  const config = configOf(options);
  const format = options.format ?? 'fp32';
  const seed = options.seed ?? DEFAULT_SEED;
  const specs = fileOrder(clipLayout(config, format));
  const fp32ByName = new Map(clipLayout(config, 'fp32').map((s) => [s.name, s]));
  writeSafetensorsFile(file, specs, (spec) => encodedChunks(spec, fp32ByName, config, seed), options.onProgress);
}

function tensorSeed(name: string, seed: number): number {
  return createHash('sha256').update(`${seed}\0${name}`).digest().readUInt32LE(0);
}

/** How the values of one fp32 tensor are drawn: value = center + spread * (2u - 1). */
function distribution(spec: TensorSpec, config: ClipConfig): { center: number; spread: number } {
  const { name, shape } = spec;
  if (name === 'logit_scale') return { center: config.logitScaleInitValue, spread: 0 };
  const isNorm = /layer_norm|layrnorm|layernorm/.test(name);
  if (isNorm && name.endsWith('.weight')) return { center: 1, spread: 0.1 };
  if (shape.length < 2) return { center: 0, spread: 0.02 };
  const sqrt3 = Math.sqrt(3); // uniform on [-a, a] has std a / sqrt(3)
  if (name.includes('embedding.weight') && !name.includes('patch_embedding'))
    return { center: 0, spread: 0.02 * sqrt3 };
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return { center: 0, spread: sqrt3 / Math.sqrt(fanIn) };
}

/** Fills `out` with the next values of the tensor's stream. */
function fill(out: Float32Array, next: () => number, center: number, spread: number): void {
  for (let i = 0; i < out.length; i++) out[i] = center + spread * (2 * next() - 1);
}

/** The fp32 values of one tensor of the fp32 layout (what the fp16 and int8 formats are derived from). */
export function syntheticTensorValues(spec: TensorSpec, config: ClipConfig, seed: number = DEFAULT_SEED): Float32Array {
  const numel = spec.bytes / DTYPE_BYTES[spec.dtype];
  const out = new Float32Array(numel);
  if (spec.dtype === 'I64') {
    for (let i = 0; i < numel; i++) out[i] = i;
    return out;
  }
  const { center, spread } = distribution(spec, config);
  fill(out, mulberry32(tensorSeed(spec.name, seed)), center, spread);
  return out;
}

/** The fp32 values of a tensor in chunks of whole rows (at most ~CHUNK_ELEMENTS): [first row, values]. */
function* valueChunks(spec: TensorSpec, config: ClipConfig, seed: number): Generator<[number, Float32Array]> {
  const numel = spec.bytes / 4;
  const rows = spec.shape.length ? spec.shape[0] : 1;
  const rowLength = numel / rows;
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLength));
  const { center, spread } = distribution(spec, config);
  const next = mulberry32(tensorSeed(spec.name, seed));
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const values = new Float32Array(Math.min(rowsPerChunk, rows - r0) * rowLength);
    fill(values, next, center, spread);
    yield [r0, values];
  }
}

/** Per-row scales of an int8 weight, from a first pass over its values. */
function int8Scales(spec: TensorSpec, config: ClipConfig, seed: number): Float32Array {
  const rows = spec.shape[0];
  const rowLength = spec.bytes / 4 / rows;
  const scales = new Float32Array(rows);
  for (const [r0, values] of valueChunks(spec, config, seed))
    scales.set(int8RowScales(values, values.length / rowLength), r0);
  return scales;
}

/** The bytes of one entry of the (possibly converted) layout, in chunks of at most ~CHUNK_ELEMENTS. */
function* encodedChunks(
  spec: TensorSpec,
  fp32ByName: Map<string, TensorSpec>,
  config: ClipConfig,
  seed: number,
): Generator<Uint8Array> {
  if (spec.dtype === 'I64') {
    const numel = spec.bytes / 8;
    const ids = new BigInt64Array(numel);
    for (let i = 0; i < numel; i++) ids[i] = BigInt(i);
    yield new Uint8Array(ids.buffer);
    return;
  }
  const source = fp32ByName.get(spec.name);
  if (!source) {
    // an int8 scale tensor: `<weight>.scale`
    const weight = fp32ByName.get(spec.name.slice(0, -'.scale'.length))!;
    yield new Uint8Array(int8Scales(weight, config, seed).buffer);
    return;
  }
  const rowLength = source.shape.length ? source.bytes / 4 / source.shape[0] : 1;
  const scales = spec.dtype === 'I8' ? int8Scales(source, config, seed) : undefined;
  for (const [r0, values] of valueChunks(source, config, seed)) {
    if (spec.dtype === 'F32') yield new Uint8Array(values.buffer);
    else if (spec.dtype === 'F16') yield new Uint8Array(float32ToFloat16Array(values).buffer);
    else yield new Uint8Array(quantizeInt8Rows(values, scales!, r0, rowLength).buffer);
  }
}
