// What a scenario is: one CLIP (or warm-up) operation that `clip-mem run` executes alone in a child
// process under the limits being tested. The child measures the process around `run`; the scenario sets
// the tracker's phase labels as it goes and returns the figures it measured itself.
import type { TokenizerFiles } from '../clip/checkpoint';
import type { ClipConfig } from '../clip/config';
import type { Limits } from '../core/limits';
import type { CatalogEntry } from './catalog';

/** What a run was asked for: the scenarios, the model and how to run it, the limits. */
export interface RunOptions {
  model: string;
  dtype: string;
  batch: number;
  /** Batch of the large-batch scenario (--large-batch). */
  largeBatch: number;
  backend: string;
  threads: number;
  limits: Limits;
  timeoutMs: number;
  scenarios: string[];
  /** How many scenarios run at once, each in its own child (--jobs). */
  jobs: number;
}

export interface ScenarioOptions {
  /** Preset name, model directory or safetensors file, as given to --model. */
  model: string;
  /** The model's shapes (from the preset or the model's config.json). */
  config: ClipConfig;
  /** The model's tokenizer files; absent for a preset (a synthetic vocabulary of its size). */
  tokenizer?: TokenizerFiles;
  /** The checkpoint the parent prepared (the synthetic cache file, or the user's file). */
  checkpoint: string;
  /** Weight format: fp32, fp16 or int8. */
  dtype: string;
  /** Batch of clip-forward and clip-train. */
  batch: number;
  /** Batch of large-batch. */
  largeBatch: number;
  /** auto, onnxruntime, or a tfjs backend name (tensorflow-gpu, tensorflow, wasm, cpu). */
  backend: string;
  /** Compute threads for onnxruntime (intra-op) and tfjs-node. */
  threads: number;
}

/** Scenario-specific measured figures: counts, bytes, losses, shapes. */
export type Figures = Record<string, number | string>;

export interface Scenario extends CatalogEntry {
  run(options: ScenarioOptions): Promise<Figures>;
}
