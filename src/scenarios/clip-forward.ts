// clip-forward: both towers and the contrastive loss at --batch (2 by default), no gradients.
import { forwardScenario } from './model-runtime';
import type { Scenario } from './scenario';

export const clipForward: Scenario = {
  name: 'clip-forward',
  summary: 'image and text towers + contrastive loss, --batch (default 2), no gradients',
  usesCheckpoint: true,
  run: (options) => forwardScenario(options, options.batch, 'clip-forward'),
};
