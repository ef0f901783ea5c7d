// What estimate measures once and keeps: the runtime baseline and the calibration fits, in the clip-mem
// cache directory, each under the key of the runtime it belongs to (backend and its version, Node,
// clip-mem, threads): another onnxruntime or another Node measures again.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clipMemCacheDir } from '../clip/synthetic';
import { EstimateUnavailable, type Phase } from './model';
import { makeDirectory, writeError, writeFileAtomic } from '../core/files';

export const ESTIMATE_STORE_SCHEMA = 'clip-mem-estimate/1';
export const ESTIMATE_BACKEND = 'onnxruntime';

/** Bytes of one phase's peak. */
export interface Peak {
  rss: number;
  vmSize: number;
}

export interface LinearFit {
  /** bytes */
  constant: number;
  /** bytes per sample of the batch */
  slope: number;
}

export interface Calibration {
  model: string;
  dtype: string;
  phase: Phase;
  /** train: the optimizer of the runs (`clip-mem run` trains with AdamW). */
  optimizer?: string;
  measuredAt: string;
  /** What the children measured at each batch, and what the model terms + baseline predicted then. */
  points: { batch: number; measured: Peak; modelled: Peak }[];
  /** measured = constant + slope x batch (least squares over the points). */
  measuredFit: { rss: LinearFit; vmSize: LinearFit };
  /** measured - modelled = constant + slope x batch when calibrated, for reference: estimates take the mean of measured - modelled against the current model (a constant). */
  residualFit: { rss: LinearFit; vmSize: LinearFit };
}

/**
 * A peak measured outside calibration that landed outside the band stated for it (`fit --verify` records
 * each one): the next estimate of the same model and phase fits it with the calibration's points and
 * widens its band to cover it.
 */
export interface Observation {
  model: string;
  dtype: string;
  phase: Phase;
  optimizer: string;
  segments: number;
  batch: number;
  measured: Peak;
  /** The estimate and its band (half-widths) when it was measured. */
  predicted: Peak;
  band: Peak;
  /** What measured it, e.g. `fit --verify --limit-mem 1.46 GiB`. */
  source: string;
  measuredAt: string;
}

export interface RuntimeRecord {
  key: string;
  backend: string;
  versions: { backend: string; node: string; clipMem: string };
  threads: number;
  /** Runtime baseline per phase: the tiny preset's measured peak minus its own (negligible) terms. */
  baseline?: {
    measuredAt: string;
    phases: Record<Phase, Peak>;
    /**
     * The same for a training step in clip-mem's own training child (plain SGD, other segment counts:
     * what `clip-mem run` does not offer), which loads less than the scenario runner (tiny: 38 MiB less RSS).
     */
    trainChild?: Peak;
  };
  calibrations: Calibration[];
  /** Runs that landed outside their band (absent in stores written before them). */
  observations?: Observation[];
  /**
   * The calibrations of the same runtime at other thread counts, read with the record and never saved
   * with it: a thread count not calibrated borrows them (its own baseline holds what threads change).
   */
  otherThreads?: RuntimeRecord[];
}

interface StoreFile {
  schema: string;
  runtimes: Record<string, RuntimeRecord>;
}

export function storeFile(): string {
  return path.join(clipMemCacheDir(), 'estimate.json');
}

/**
 * clip-mem's version and a digest of the code that decides what a measured phase holds (the onnx runtime
 * and trainer, the scenarios): a change there measures again, as a new version would. The estimate's own
 * model is not in it: calibration keeps the measured points and fits them against the current model.
 */
function implementationDigest(): string {
  const hash = createHash('sha256');
  const dist = path.resolve(__dirname, '..');
  for (const dir of ['clip/onnx', 'scenarios']) {
    for (const file of fs
      .readdirSync(path.join(dist, dir))
      .filter((f) => f.endsWith('.js'))
      .sort()) {
      hash.update(file).update(fs.readFileSync(path.join(dist, dir, file)));
    }
  }
  return hash.digest('hex').slice(0, 12);
}

export function runtimeVersions(): RuntimeRecord['versions'] {
  return {
    backend: `onnxruntime-node ${(require('onnxruntime-node/package.json') as { version: string }).version}`,
    node: process.version,
    clipMem: `${(require('../../../package.json') as { version: string }).version} (code ${implementationDigest()})`,
  };
}

export function runtimeKey(threads: number): string {
  const v = runtimeVersions();
  return `${v.backend}, node ${v.node}, clip-mem ${v.clipMem}, ${threads} thread(s)`;
}

function readStore(): StoreFile {
  const file = storeFile();
  if (!fs.existsSync(file)) return { schema: ESTIMATE_STORE_SCHEMA, runtimes: {} };
  let parsed: StoreFile;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as StoreFile;
  } catch (error) {
    throw new EstimateUnavailable(
      `${file}: not valid JSON (${(error as Error).message}); delete it and clip-mem measures again`,
    );
  }
  // Another schema is another clip-mem's: measure again rather than misread it.
  return parsed.schema === ESTIMATE_STORE_SCHEMA ? parsed : { schema: ESTIMATE_STORE_SCHEMA, runtimes: {} };
}

export function loadRuntimeRecord(threads: number): RuntimeRecord {
  const key = runtimeKey(threads);
  const runtimes = readStore().runtimes;
  const record = runtimes[key] ?? {
    key,
    backend: ESTIMATE_BACKEND,
    versions: runtimeVersions(),
    threads,
    calibrations: [],
  };
  const others = Object.values(runtimes).filter(
    (r) => r.key !== key && JSON.stringify(r.versions) === JSON.stringify(record.versions),
  );
  return { ...record, otherThreads: others };
}

/** Adds runs that landed outside their band to this runtime's record, for the next estimate and calibration. */
export function recordObservations(threads: number, observations: readonly Observation[]): void {
  if (!observations.length) return;
  const record = loadRuntimeRecord(threads);
  record.observations = [...(record.observations ?? []), ...observations];
  saveRuntimeRecord(record);
}

export function saveRuntimeRecord(record: RuntimeRecord): void {
  const store = readStore();
  const { otherThreads: _borrowed, ...own } = record;
  store.runtimes[record.key] = own;
  const file = storeFile();
  try {
    makeDirectory(path.dirname(file));
  } catch (error) {
    throw writeError(error, file);
  }
  writeFileAtomic(file, JSON.stringify(store, null, 1) + '\n');
}
