// Library entry point: every capability's public types and functions.
export { loadAddon, packageRoot } from './core/native';
export { formatBytes, parseBytes } from './core/units';
export * from './core/field';
export * from './probe/cgroup';
export * from './probe/proc';
export { NATIVE_PROBE_SCHEMA, probeJson, runProbe } from './probe/probe';
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
export * from './clip/synthetic';
export * from './clip/checkpoint';
export * from './clip/onnx';
export * from './clip/tokenizer';
export * from './clip/tfjs/backend';
export * from './clip/tfjs/adamw';
export * from './clip/tfjs/model';
export * from './clip/processor';
export { setPhase } from './core/phase';
export { readRecord, listRecords, finalRecordOf } from './track/record';
export type {
  AllocationRecord,
  RecordFailure,
  RecordFrame,
  RecordCounters,
  RecordPhase,
  RecordSample,
  TrackedFn,
} from './track/record';
export { traceCommand } from './track/launcher';
export type { TraceOptions, TraceRun, CgroupOutcome } from './track/launcher';
export type { Limits, LimitKind } from './core/limits';
export { buildTraceReport, formatTraceReport } from './report/trace-report';
export type { TraceReport, TraceFailure } from './report/trace-report';
export { symbolize, formatFrame } from './track/symbolize';
export { createChildCgroup, removeCgroup, removeStaleCgroups, readChildCgroup } from './track/cgroup';
export type { ChildCgroup } from './track/cgroup';
export { programKind } from './track/program';
export { causes, diagnose, errnoName, explainFailure } from './diagnose';
export type { Cause, Diagnosis, DiagnosisInput, FailureFacts } from './diagnose';
export * from './clip/pytorch';
export * from './clip/convert';
export * from './estimate/model';
export { forwardGraphMemory, plannedPeak, trainingGraphMemory } from './estimate/graph-memory';
export type { GraphMemory, TrainingGraphsMemory } from './estimate/graph-memory';
export { accelerateFigures, estimatePhase, fitLine } from './estimate/estimate';
export { calibrate, ensureBaseline } from './commands/calibrate';
export { verifyBoundary } from './commands/verify';
export type { Verification, VerifyRun } from './commands/verify';
export type { EstimateRequest, PhaseEstimate, Uncertainty } from './estimate/estimate';
export type { Calibration, LinearFit, Peak, RuntimeRecord } from './estimate/store';
export { cheapest, fitPlan, largestFitting, limitedFigure, maxSearchRuns, searchBoundary } from './estimate/fit';
export type { Boundary, FitAnswer, FitConfig, FitLimit } from './estimate/fit';
