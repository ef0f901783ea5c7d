// Library entry point: every capability's public types and functions.
export { loadAddon, packageRoot } from './native';
export { formatBytes, parseBytes } from './units';
export * from './probe/field';
export * from './probe/cgroup';
export * from './clip/config';
export * from './clip/dtype';
export type { DType, Tensor, TensorData, TensorMap } from './clip/tensor';
export * from './clip/safetensors';
export * from './clip/synthetic';
export * from './clip/checkpoint';
export * from './clip/onnx';
export * from './clip/tokenizer';
export * from './clip/tfjs/backend';
export * from './clip/tfjs/adamw';
export * from './clip/tfjs/model';
export * from './clip/processor';
