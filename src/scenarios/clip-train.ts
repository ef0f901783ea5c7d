// clip-train: one training step at --batch (2 by default): loss, every gradient, an AdamW update.
import { trainScenario } from './model-runtime';
import type { Scenario } from './scenario';

export const clipTrain: Scenario = {
  name: 'clip-train',
  summary: 'one training step, --batch (default 2): loss, gradients of every parameter, AdamW update',
  usesCheckpoint: true,
  run: (options) => trainScenario(options, options.batch),
};
