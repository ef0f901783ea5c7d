// The measured side of estimate and fit: one phase of one model, run in children through the run
// engineer's scenario runner, and the training steps `clip-mem run` does not offer (plain SGD, other
// segment counts) in clip-mem's own training child; both through the tracker's launcher (limits before
// exec, a cgroup per child, every child's memory peaks).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveClipModel } from '../clip/checkpoint';
import type { WeightFormat } from '../clip/config';
import type { Limits } from '../core/limits';
import type { Cause } from '../diagnose';
import { buildTraceReport } from '../report/trace-report';
import type { Optimizer } from '../estimate/model';
import {
  TRAIN_REQUEST_ENV,
  TRAIN_RESULT_ENV,
  type TrainStepReport,
  type TrainStepRequest,
} from '../estimate/train-child';
import type { ScenarioResult } from '../report/result';
import { scenarioMeasuring, type Phase } from '../scenarios/catalog';
import type { RunOptions, ScenarioOptions } from '../scenarios/scenario';
import { traceCommand } from '../track/launcher';
import { runScenarios, type ProgressEvent } from './run-scenarios';

export interface PhaseRunRequest {
  model: string;
  dtype: WeightFormat;
  batch: number;
  phases: readonly Phase[];
  threads: number;
  limits?: Limits;
  timeoutS?: number;
  progress?: (line: string) => void;
}

export interface PhaseRun {
  phase: Phase;
  batch: number;
  result: ScenarioResult;
}

/** Runs the phases' scenarios, each in its own child, one after another. */
export async function runPhases(request: PhaseRunRequest): Promise<PhaseRun[]> {
  const progress = request.progress ?? (() => undefined);
  const source = resolveClipModel(request.model, {
    format: request.dtype,
    onProgress: ({ bytesWritten, totalBytes }) => {
      if (bytesWritten === totalBytes) progress(`made the synthetic ${request.model} ${request.dtype} checkpoint`);
    },
  });
  const names = request.phases.map((phase) => scenarioMeasuring(phase).name);
  const options: RunOptions = {
    model: request.model,
    dtype: request.dtype,
    batch: request.batch,
    largeBatch: request.batch,
    backend: 'auto',
    threads: request.threads,
    limits: request.limits ?? {},
    timeoutMs: (request.timeoutS ?? 600) * 1000,
    scenarios: names,
    // Measurements: each phase alone, so that its peak is its own (and its page cache charged to it).
    jobs: 1,
  };
  const scenarioOptions: ScenarioOptions = {
    model: request.model,
    config: source.config,
    tokenizer: source.tokenizer,
    checkpoint: source.weightsFile,
    dtype: request.dtype,
    batch: request.batch,
    largeBatch: request.batch,
    backend: 'auto',
    threads: request.threads,
  };
  let shown = '';
  const results = await runScenarios({
    options,
    scenarioOptions,
    progress: (event: ProgressEvent) => {
      const line = `${request.model} ${request.dtype} batch ${request.batch}: ${event.scenario}${event.phase ? ` (${event.phase})` : ''}`;
      if (line !== shown) progress(line);
      shown = line;
    },
  });
  if (results.stoppedBy) throw new Error(`stopped by ${results.stoppedBy} while running ${names.join(', ')}`);
  return results.scenarios.map((result) => ({
    phase: request.phases[names.indexOf(result.name)],
    batch: request.batch,
    result,
  }));
}

export interface TrainStepRunRequest {
  model: string;
  dtype: WeightFormat;
  batch: number;
  optimizer: Optimizer;
  /** The trainer's backward graphs per tower. */
  segments: number;
  threads: number;
  limits?: Limits;
  progress?: (line: string) => void;
}

export interface TrainStepRun {
  passed: boolean;
  rssPeak: number | null;
  vmSizePeak: number | null;
  /** The child's memory cgroup's charge peak (null without --limit-mem). */
  cgroupPeak: number | null;
  /** 'none' when it passed, else the diagnosis' cause and its evidence. */
  cause: Cause;
  evidence: string[];
}

/** One training step in clip-mem's own child (train-child.ts) through the tracker's launcher. */
export async function runTrainStep(request: TrainStepRunRequest): Promise<TrainStepRun> {
  const { model, dtype, batch, optimizer, segments, threads } = request;
  const limits = request.limits ?? {};
  const source = resolveClipModel(model, { format: dtype });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-train-step-'));
  const resultFile = path.join(dir, 'result.json');
  const childRequest: TrainStepRequest = {
    model,
    weightsFile: source.weightsFile,
    batch,
    threads,
    optimizer,
    segments,
    lr: 1e-3,
  };
  request.progress?.(
    `${model} ${dtype} batch ${batch}: ${optimizer} training step (${segments} segment(s)) in clip-mem's training child`,
  );
  try {
    const run = await traceCommand({
      command: [process.execPath, path.join(__dirname, '..', 'estimate', 'train-child.js')],
      limits,
      timeoutMs: 600_000,
      env: { ...process.env, [TRAIN_REQUEST_ENV]: JSON.stringify(childRequest), [TRAIN_RESULT_ENV]: resultFile },
    });
    if (run.stoppedBy) throw new Error(`stopped by ${run.stoppedBy} during the ${optimizer} training step`);
    const report = fs.existsSync(resultFile)
      ? (JSON.parse(fs.readFileSync(resultFile, 'utf8')) as TrainStepReport)
      : null;
    const passed = run.exit.code === 0 && report !== null;
    const record = run.record;
    // The one path from a traced run to its diagnosis (the holders of the live heap included), as trace's.
    const diagnosis = buildTraceReport(run, { heapProfile: 'diagnosis' }).diagnosis;
    const tracked = (v: number | undefined) => (v !== undefined && v > 0 ? v : null);
    return {
      passed,
      rssPeak: report?.rssPeak ?? tracked(record?.counters.rssPeak),
      vmSizePeak: report?.vmSizePeak ?? tracked(record?.counters.vmPeak),
      cgroupPeak: run.cgroup?.peak ?? null,
      cause: passed ? 'none' : diagnosis.cause,
      evidence: diagnosis.evidence,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
