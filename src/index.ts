// Library entry point: every capability's public types and functions.
export { loadAddon, packageRoot } from './native';
export { formatBytes, parseBytes } from './units';
export * from './probe/field';
export * from './probe/cgroup';
export * from './probe/proc';
export { NATIVE_PROBE_SCHEMA_VERSION, runProbe } from './probe/probe';
export type { NativeProbeReport, ProbeOptions, ProcessMemory } from './probe/probe';
export { renderProbe } from './probe/render';
export { readSlurmJob, slurmNodeMemory } from './probe/slurm';
export type { SlurmJob } from './probe/slurm';
export { probeGpu, NVML_LIBRARY_VARIABLE, CUDA_LIBRARY_VARIABLE } from './probe/gpu';
export type * from './probe/native';
export { ADAMW_COPIES, constraints, describeConstraint, modelFit, verdict } from './probe/verdict';
export type { Constraint, Counts, FitCheck, ModelFit, ProbeFacts, Verdict } from './probe/verdict';
export * from './clip/config';
export * from './clip/dtype';
export type { DType, Tensor, TensorData, TensorMap } from './clip/tensor';
export * from './clip/safetensors';
