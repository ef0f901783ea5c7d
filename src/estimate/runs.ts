// The measured side of estimate and fit: one phase of one model, run in children through the run
// engineer's scenario runner (the tracker's launcher underneath: limits before exec, a cgroup per child,
// every child's memory peaks). Nothing here starts a process of its own.
import { commandLine } from '../cli/commands/run';
import { resolveClipModel } from '../clip/checkpoint';
import type { WeightFormat } from '../clip/config';
import type { Limits, RunOptions, ScenarioResult } from '../report/result';
import { runScenarios, type ProgressEvent } from '../scenarios/runner';
import type { ScenarioOptions } from '../scenarios/scenario';
import type { Phase } from './model';

/** The scenario of `clip-mem run` that measures each phase. */
export const PHASE_SCENARIOS: Record<Phase, string> = { load: 'clip-load-copy', forward: 'clip-forward', train: 'clip-train' };

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
  const names = request.phases.map((phase) => PHASE_SCENARIOS[phase]);
  const options: RunOptions = {
    model: request.model,
    dtype: request.dtype,
    batch: request.batch,
    backend: 'auto',
    threads: request.threads,
    limits: request.limits ?? {},
    timeoutMs: (request.timeoutS ?? 600) * 1000,
    scenarios: names,
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
    command: commandLine(names, options, scenarioOptions),
    scenarioCommand: (name) => commandLine([name], options, scenarioOptions),
    progress: (event: ProgressEvent) => {
      const line = `${request.model} ${request.dtype} batch ${request.batch}: ${event.scenario}${event.phase ? ` (${event.phase})` : ''}`;
      if (line !== shown) progress(line);
      shown = line;
    },
  });
  return results.scenarios.map((result) => ({ phase: request.phases[names.indexOf(result.name)], batch: request.batch, result }));
}
