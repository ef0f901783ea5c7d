// The scenarios of `clip-mem run`, in the order they run (cheap checks first, as in the seed report).
import { basicOps } from './basic-ops';
import { clipForward } from './clip-forward';
import { clipLoad } from './clip-load';
import { clipLoadCopy } from './clip-load-copy';
import { clipProcessor } from './clip-processor';
import { clipTrain } from './clip-train';
import { largeBatch } from './large-batch';
import type { Scenario } from './scenario';
import { smallMlp } from './small-mlp';

export const SCENARIOS: readonly Scenario[] = [basicOps, smallMlp, clipProcessor, clipLoad, clipLoadCopy, clipForward, clipTrain, largeBatch];

export const SCENARIO_NAMES = SCENARIOS.map((s) => s.name);

export function scenarioByName(name: string): Scenario {
  const scenario = SCENARIOS.find((s) => s.name === name);
  if (!scenario) throw new Error(`unknown scenario "${name}": choose from ${SCENARIO_NAMES.join(', ')}`);
  return scenario;
}
