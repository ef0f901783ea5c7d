// clip-forward: both towers and the contrastive loss at --batch (2 by default), no gradients.
import { forwardScenario } from './model-runtime';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const clipForward: Scenario = {
  ...catalogEntry('clip-forward'),
  run: (options) => forwardScenario(options, options.batch, 'clip-forward'),
};
