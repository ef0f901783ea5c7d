// large-batch: the forward pass at --large-batch (32 by default), where activations outgrow the weights.
import { forwardScenario } from './model-runtime';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const largeBatch: Scenario = {
  ...catalogEntry('large-batch'),
  run: (options) => forwardScenario(options, options.largeBatch, 'large-batch'),
};
