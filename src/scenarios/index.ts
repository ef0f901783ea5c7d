// The scenarios' implementations, by name (the names, order and summaries are in catalog.ts).
import { basicOps } from './basic-ops';
import { catalogEntry } from './catalog';
import { clipForward } from './clip-forward';
import { clipLoad } from './clip-load';
import { clipLoadCopy } from './clip-load-copy';
import { clipProcessor } from './clip-processor';
import { clipTrain } from './clip-train';
import { largeBatch } from './large-batch';
import type { Scenario } from './scenario';
import { smallMlp } from './small-mlp';

const SCENARIOS: readonly Scenario[] = [
  basicOps,
  smallMlp,
  clipProcessor,
  clipLoad,
  clipLoadCopy,
  clipForward,
  clipTrain,
  largeBatch,
];

/** The implementation of a catalog scenario (this loads every runtime: for the child, not the CLI). */
export function scenarioByName(name: string): Scenario {
  const entry = catalogEntry(name);
  return SCENARIOS.find((s) => s.name === entry.name)!;
}
