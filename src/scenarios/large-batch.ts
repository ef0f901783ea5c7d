// large-batch: the forward pass at --large-batch (32 by default), where activations outgrow the weights.
import { forwardScenario } from './model-runtime';
import type { Scenario } from './scenario';

export const largeBatch: Scenario = {
  name: 'large-batch',
  summary: 'image and text towers + loss at --large-batch (default 32), no gradients',
  usesCheckpoint: true,
  run: (options) => forwardScenario(options, options.largeBatch, 'large-batch'),
};
