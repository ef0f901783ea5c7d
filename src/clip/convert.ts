// Converting a real checkpoint (safetensors or pytorch_model.bin, any float dtype) to one of clip-mem's
// weight formats, as a safetensors file in the clip-mem cache: how a user's own model runs as fp16 or
// int8 weight-only, and how a pytorch_model.bin becomes the safetensors file the runtimes map.
// Same rules as the synthetic checkpoints (config.ts): fp32 = every float tensor as F32; fp16 = as F16;
// int8 = float tensors of rank >= 2 as I8 + F32 per-row `<name>.scale`, the rest F32. Integer tensors
// (position_ids) are kept. Tensors are read by mmap and converted one at a time.
//
// API:
//   checkpointWeightFormat(entries): WeightFormat | undefined   the format a file already is (undefined: other/mixed)
//   convertedLayout(entries, format): TensorSpec[]             file order
//   convertCheckpoint(sourceFile, outFile, format, onProgress?)
//   convertedCheckpointPath(sourceFile, format, cacheDir?): string   keyed by the source's path, size and mtime
//   ensureConvertedCheckpoint(sourceFile, format, { cacheDir, onProgress }): { file, created }
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TensorSpec, WeightFormat, fileOrder } from './config';
import { float32ToFloat16Array, tensorBytes, int8RowScales, int8ScaleName, quantizeInt8Rows, toFloat32 } from './dtype';
import { loadPytorchCheckpoint } from './pytorch';
import { WriteProgress, loadSafetensors, writeSafetensorsFile } from './safetensors';
import { clipMemCacheDir } from './synthetic';
import type { DType, Tensor } from './tensor';

type EntryLike = { name: string; dtype: DType; shape: readonly number[] };

const FLOAT_DTYPES: readonly DType[] = ['F32', 'F16', 'BF16', 'F64'];
const isFloat = (dtype: DType) => FLOAT_DTYPES.includes(dtype);

/** fp32 / fp16 when every float tensor has that dtype; int8 when rank >= 2 weights are I8 with scales. */
export function checkpointWeightFormat(entries: readonly EntryLike[]): WeightFormat | undefined {
  const names = new Set(entries.map((e) => e.name));
  const floats = entries.filter((e) => isFloat(e.dtype));
  if (entries.some((e) => e.dtype === 'I8' && names.has(int8ScaleName(e.name)))) {
    const unquantized = floats.filter((e) => e.shape.length >= 2);
    return unquantized.length === 0 && floats.every((e) => e.dtype === 'F32') ? 'int8' : undefined;
  }
  if (floats.every((e) => e.dtype === 'F32')) return 'fp32';
  if (floats.every((e) => e.dtype === 'F16')) return 'fp16';
  return undefined;
}

/** The converted file's entries, in file order. */
export function convertedLayout(entries: readonly EntryLike[], format: WeightFormat): TensorSpec[] {
  const out: TensorSpec[] = [];
  for (const e of entries) {
    const shape = [...e.shape];
    if (!isFloat(e.dtype)) out.push({ name: e.name, dtype: e.dtype, shape, bytes: tensorBytes(e.dtype, shape) });
    else if (format === 'fp16') out.push({ name: e.name, dtype: 'F16', shape, bytes: tensorBytes('F16', shape) });
    else if (format === 'int8' && shape.length >= 2) {
      out.push({ name: e.name, dtype: 'I8', shape, bytes: tensorBytes('I8', shape) });
      out.push({ name: int8ScaleName(e.name), dtype: 'F32', shape: [shape[0]], bytes: tensorBytes('F32', [shape[0]]) });
    } else out.push({ name: e.name, dtype: 'F32', shape, bytes: tensorBytes('F32', shape) });
  }
  return fileOrder(out);
}

function loadAny(file: string) {
  const fd = fs.openSync(file, 'r');
  const magic = Buffer.alloc(2);
  fs.readSync(fd, magic, 0, 2, 0);
  fs.closeSync(fd);
  return magic.toString('latin1') === 'PK'
    ? loadPytorchCheckpoint(file, { mode: 'mmap' })
    : loadSafetensors(file, { mode: 'mmap' });
}

/** Writes `sourceFile` converted to `format` as safetensors at `outFile` (temp file + rename). */
export function convertCheckpoint(
  sourceFile: string,
  outFile: string,
  format: WeightFormat,
  onProgress?: (p: WriteProgress) => void,
): void {
  const source = loadAny(sourceFile);
  try {
    const tensors = [...source.tensors.values()];
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const scales = new Map<string, Float32Array>();
    const scalesOf = (weight: Tensor): Float32Array => {
      let s = scales.get(weight.name);
      if (!s) scales.set(weight.name, (s = int8RowScales(toFloat32(weight), weight.shape[0])));
      return s;
    };
    const layout = convertedLayout(tensors, format);
    writeSafetensorsFile(
      outFile,
      layout,
      function* (spec) {
        const tensor = byName.get(spec.name);
        if (!tensor) {
          yield new Uint8Array(scalesOf(byName.get(spec.name.slice(0, -'.scale'.length))!).buffer); // `<weight>.scale`
          return;
        }
        const { data } = tensor;
        if (spec.dtype === tensor.dtype) {
          yield new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          return;
        }
        const values = toFloat32(tensor);
        if (spec.dtype === 'F32') yield new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
        else if (spec.dtype === 'F16') yield new Uint8Array(float32ToFloat16Array(values).buffer);
        else
          yield new Uint8Array(quantizeInt8Rows(values, scalesOf(tensor), 0, values.length / tensor.shape[0]).buffer);
      },
      onProgress,
      { format: 'pt', 'clip-mem.converted-from': path.basename(sourceFile), 'clip-mem.weight-format': format },
    );
  } finally {
    source.close();
  }
}

export function convertedCheckpointPath(
  sourceFile: string,
  format: WeightFormat,
  cacheDir: string = clipMemCacheDir(),
): string {
  const real = fs.realpathSync(sourceFile);
  const stat = fs.statSync(real);
  const key = createHash('sha256').update(`${real}\0${stat.size}\0${stat.mtimeMs}`).digest('hex').slice(0, 12);
  return path.join(cacheDir, `converted-${path.basename(path.dirname(real))}-${key}-${format}.safetensors`);
}

/** The cached conversion of `sourceFile` to `format`, made first when missing. */
export function ensureConvertedCheckpoint(
  sourceFile: string,
  format: WeightFormat,
  options: { cacheDir?: string; onProgress?: (p: WriteProgress) => void } = {},
): { file: string; created: boolean } {
  const file = convertedCheckpointPath(sourceFile, format, options.cacheDir);
  if (fs.existsSync(file)) return { file, created: false };
  convertCheckpoint(sourceFile, file, format, options.onProgress);
  return { file, created: true };
}
