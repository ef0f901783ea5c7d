// The tfjs backend a scenario runs on: --backend names one tfjs backend, or leaves the usual order.
import {
  defaultTfjsBackendOrder,
  selectTfjsBackend,
  type TfjsBackendChoice,
  type TfjsBackendName,
} from '../clip/tfjs/backend';

export function tfjsBackendFor(backend: string): Promise<TfjsBackendChoice> {
  const named = (defaultTfjsBackendOrder as readonly string[]).includes(backend);
  return selectTfjsBackend(named ? [backend as TfjsBackendName] : defaultTfjsBackendOrder);
}
