// The one in-memory form of a checkpoint tensor, shared by the loaders, the runtimes and the scenarios.

/** safetensors dtype names (the spelling in the file header). */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export type TensorData =
  Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface Tensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Element view: F16 and BF16 as raw Uint16Array bits, BOOL as Uint8Array. */
  readonly data: TensorData;
}

/** Tensors by name, in checkpoint order. */
export type TensorMap = Map<string, Tensor>;
