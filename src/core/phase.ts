// Phase labels: `setPhase("load text_model.embeddings.token_embedding.weight")` marks what this process is
// doing, so that a failed allocation or an OOM kill recorded by `clip-mem trace` says during what.
// Outside the tracker it does nothing and costs one environment lookup.
import { loadAddon } from './native';

interface PhaseAddon {
  setPhase(label: string): boolean;
}

const recordDirVariable = 'CLIPMEM_RECORD_DIR';
let addon: PhaseAddon | null | undefined;

function phaseAddon(): PhaseAddon | null {
  if (addon === undefined) {
    addon = null;
    if (process.env[recordDirVariable]) {
      try {
        addon = loadAddon<PhaseAddon>();
      } catch (error) {
        process.stderr.write(`clip-mem: phases are not recorded: ${(error as Error).message}\n`);
      }
    }
  }
  return addon;
}

let current = '';

/** Records `label` as the current phase when this process runs under `clip-mem trace`; else nothing. */
export function setPhase(label: string): void {
  current = label;
  phaseAddon()?.setPhase(label);
}

/**
 * Runs `work` in phase `label`, then goes back to the phase it was called in: an allocation inside a
 * longer phase named for what it is (the live-heap profile tells its blocks apart by phase).
 */
export function withPhase<T>(label: string, work: () => T): T {
  const outer = current;
  setPhase(label);
  try {
    return work();
  } finally {
    setPhase(outer);
  }
}
