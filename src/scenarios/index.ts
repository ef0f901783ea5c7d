// The scenarios' implementations, by name (the names, order and summaries are in catalog.ts). A child
// loads only the module of the scenario it runs: loading tfjs, sharp and onnxruntime together took every
// child ~1.2 s under load and ~34 MiB of RSS, whichever scenario it ran.
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

const LOADERS: Record<string, () => Scenario> = {
  'basic-ops': () => (require('./basic-ops') as typeof import('./basic-ops')).basicOps,
  'small-mlp': () => (require('./small-mlp') as typeof import('./small-mlp')).smallMlp,
  'clip-processor': () => (require('./clip-processor') as typeof import('./clip-processor')).clipProcessor,
  'clip-load': () => (require('./clip-load') as typeof import('./clip-load')).clipLoad,
  'clip-load-copy': () => (require('./clip-load-copy') as typeof import('./clip-load-copy')).clipLoadCopy,
  'clip-forward': () => (require('./clip-forward') as typeof import('./clip-forward')).clipForward,
  'clip-train': () => (require('./clip-train') as typeof import('./clip-train')).clipTrain,
  'large-batch': () => (require('./large-batch') as typeof import('./large-batch')).largeBatch,
};

/** The implementation of a catalog scenario, its module loaded now (for the child, not the CLI). */
export function scenarioByName(name: string): Scenario {
  return LOADERS[catalogEntry(name).name]();
}
