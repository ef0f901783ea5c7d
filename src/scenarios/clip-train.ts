// clip-train: one training step at --batch (2 by default): loss, every gradient, an AdamW update.
import { trainScenario } from './model-runtime';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const clipTrain: Scenario = {
  ...catalogEntry('clip-train'),
  run: (options) => trainScenario(options, options.batch),
};
