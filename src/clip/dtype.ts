// Element sizes of the safetensors dtypes and the conversions between the weight formats clip-mem
// builds (fp32, fp16, int8 weight-only).
//
// API:
//   DTYPE_BYTES: Record<DType, number>          bytes per element
//   isDType(s): s is DType                       a dtype name as spelled in a safetensors header
//   typedArrayFor(dtype, buffer, byteOffset, numel) / allocateTypedArray(dtype, numel)
//   float32ToFloat16Bits(x) / float16BitsToFloat32(h)   IEEE half, round to nearest even
//   bfloat16BitsToFloat32(h)
//   toFloat32(tensor): Float32Array              F32 (same array), F16, BF16, F64, ints -> float32
//   dequantizeInt8(weight, scale): Float32Array  int8 weight-only: w[r, ...] = q[r, ...] * scale[r]
//   int8ScaleName(weightName)                    `${weightName}.scale` (see WeightFormat in config.ts)
//   float32ToFloat16Array(values): Uint16Array
//   int8RowScales(values, rows): Float32Array    per row: max |v| / 127 (1 for an all-zero row)
//   quantizeInt8Rows(values, scales, firstRow): Int8Array   round(v / scale[row]), clamped to +-127
import type { DType, Tensor, TensorData } from './tensor';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8,
  I64: 8,
  F32: 4,
  I32: 4,
  F16: 2,
  BF16: 2,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, value);
}

/** Elements in a tensor of this shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of a tensor of this dtype and shape. */
export function tensorBytes(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * DTYPE_BYTES[dtype];
}

/** A typed view of `numel` elements at `byteOffset` (which must be aligned for the dtype). */
export function typedArrayFor(dtype: DType, buffer: ArrayBufferLike, byteOffset: number, numel: number): TensorData {
  switch (dtype) {
    case 'F64':
      return new Float64Array(buffer, byteOffset, numel);
    case 'F32':
      return new Float32Array(buffer, byteOffset, numel);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buffer, byteOffset, numel);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, numel);
    case 'I32':
      return new Int32Array(buffer, byteOffset, numel);
    case 'I16':
      return new Int16Array(buffer, byteOffset, numel);
    case 'I8':
      return new Int8Array(buffer, byteOffset, numel);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(buffer, byteOffset, numel);
  }
}

/** A fresh zeroed typed array (throws RangeError "Array buffer allocation failed" when memory is short). */
export function allocateTypedArray(dtype: DType, numel: number): TensorData {
  return typedArrayFor(dtype, new ArrayBuffer(numel * DTYPE_BYTES[dtype]), 0, numel);
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

export function float32ToFloat16Bits(value: number): number {
  scratch[0] = value;
  const x = scratchBits[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0); // inf, nan
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mantissa & ((1 << shift) - 1);
    let result = mantissa >>> shift;
    if (rest > half || (rest === half && result & 1)) result++;
    return sign | result;
  }
  let result = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && result & 1)) result++; // may carry into the exponent: correct
  return sign | result;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function bfloat16BitsToFloat32(bits: number): number {
  scratchBits[0] = bits << 16;
  return scratch[0];
}

/** The tensor's values as float32 (the same array for F32; a new one otherwise). */
export function toFloat32(tensor: Tensor): Float32Array {
  const { data, dtype } = tensor;
  if (dtype === 'F32') return data as Float32Array;
  const out = new Float32Array(data.length);
  if (dtype === 'F16') {
    const table = halfTable();
    const bits = data as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  } else if (dtype === 'BF16') {
    const bits = data as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = bfloat16BitsToFloat32(bits[i]);
  } else if (data instanceof BigInt64Array) {
    for (let i = 0; i < data.length; i++) out[i] = Number(data[i]);
  } else {
    for (let i = 0; i < data.length; i++) out[i] = data[i] as number;
  }
  return out;
}

let halfToFloat: Float32Array | undefined;
function halfTable(): Float32Array {
  if (!halfToFloat) {
    halfToFloat = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfToFloat[h] = float16BitsToFloat32(h);
  }
  return halfToFloat;
}

/** Name of the F32 per-row scale tensor stored beside an int8 weight. */
export function int8ScaleName(weightName: string): string {
  return `${weightName}.scale`;
}

/** Dequantize an int8 weight-only tensor: row r (first dimension) is q[r, ...] * scale[r]. */
export function dequantizeInt8(weight: Tensor, scale: Tensor): Float32Array {
  if (weight.dtype !== 'I8' || scale.dtype !== 'F32') {
    throw new Error(
      `dequantizeInt8: ${weight.name} must be I8 and ${scale.name} F32 (got ${weight.dtype}, ${scale.dtype})`,
    );
  }
  const rows = weight.shape[0];
  if (scale.data.length !== rows) {
    throw new Error(`dequantizeInt8: ${scale.name} has ${scale.data.length} scales, ${weight.name} has ${rows} rows`);
  }
  const q = weight.data as Int8Array;
  const s = scale.data as Float32Array;
  const rowLength = rows ? q.length / rows : 0;
  const out = new Float32Array(q.length);
  for (let r = 0; r < rows; r++) {
    const base = r * rowLength;
    for (let i = 0; i < rowLength; i++) out[base + i] = q[base + i] * s[r];
  }
  return out;
}

export function float32ToFloat16Array(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]);
  return out;
}

/** Per-row scales of an int8 weight-only tensor (rows = first dimension). */
export function int8RowScales(values: Float32Array, rows: number): Float32Array {
  const rowLength = rows ? values.length / rows : 0;
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let i = r * rowLength; i < (r + 1) * rowLength; i++) max = Math.max(max, Math.abs(values[i]));
    scales[r] = max > 0 ? max / 127 : 1;
  }
  return scales;
}

/** Quantizes whole rows (values holds rows firstRow, firstRow + 1, ... of the tensor). */
export function quantizeInt8Rows(
  values: Float32Array,
  scales: Float32Array,
  firstRow: number,
  rowLength: number,
): Int8Array {
  const q = new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const scale = scales[firstRow + Math.floor(i / rowLength)];
    q[i] = Math.max(-127, Math.min(127, Math.round(values[i] / scale)));
  }
  return q;
}
