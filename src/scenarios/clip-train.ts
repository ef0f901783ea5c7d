// clip-train: two training steps at --batch (2 by default): loss, every gradient, an AdamW update each;
// the second step holds the moments the first filled, as a training loop does.
import { trainScenario } from './model-runtime';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const clipTrain: Scenario = {
  ...catalogEntry('clip-train'),
  run: (options) => trainScenario(options, options.batch),
};
