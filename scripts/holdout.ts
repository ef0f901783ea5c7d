// The holdout protocol of `clip-mem estimate` (issue 17): configurations the calibration never saw, each
// run in its own child (`clip-mem run`'s runner; plain SGD in clip-mem's training child, the path
// `fit --verify` uses) and compared with the estimate's figure and band, for peak RSS and VmSize. Prints
// each run as it ends, then coverage (the share of measured values inside the stated band) and the band's
// width, per family (calibrated, transferred, uncalibrated) and overall. Runs go cheapest first; Ctrl-C
// stops the running child and still prints and writes what was measured.
//
//   npm run build:ts && nice node dist/scripts/holdout.js [--quick] [--json FILE] [--max-rss 7G] [--only vit-b-32,...] [--skip FILE]
//
// --json writes the runtime records (baseline, calibrations) and every measurement, so the measurements
// become recorded real ones: test/fixtures/holdout-*.json are such files, and the band's tests read them.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { presetConfig, type WeightFormat } from '../src/clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../src/clip/onnx/train';
import { calibrate, ensureBaseline } from '../src/commands/calibrate';
import { runPhases, runTrainStep } from '../src/commands/phase-runs';
import { formatBytes, parseBytes } from '../src/core/units';
import { estimatePhase, insideBand, type PhaseEstimate } from '../src/estimate/estimate';
import type { Optimizer, Phase } from '../src/estimate/model';
import { loadRuntimeRecord, type Peak, type RuntimeRecord } from '../src/estimate/store';
import { stopSignal, stopTraces } from '../src/track/launcher';
import { HOLDOUT_SCHEMA, type HoldoutConfig, type HoldoutFile, type HoldoutRow } from '../src/estimate/holdout';
import { coverage } from '../src/estimate/holdout';

/** The calibration the holdout is measured against: what `estimate --calibrate` runs by default. */
const CALIBRATED = { model: 'vit-b-32', dtypes: ['fp32', 'fp16'] as WeightFormat[], batches: [1, 4], threads: 2 };

const row = (
  model: string,
  dtype: WeightFormat,
  phase: Phase,
  batch: number,
  optimizer: Optimizer = 'adamw',
  threads = 2,
): HoldoutConfig => ({ model, dtype, phase, batch: phase === 'load' ? 1 : batch, optimizer, threads });

/**
 * Every preset that runs here, batches to 32 (train) and 128 (forward), fp32/fp16/int8, AdamW and SGD, 1 and
 * 2 threads; and tiny's forward at 1024 and 4096, where `run`'s and `fit`'s batch proposals under small limits
 * land (a forward model judged to batch 128 once proposed a tiny batch its cgroup killed).
 */
function fullGrid(): HoldoutConfig[] {
  const grid: HoldoutConfig[] = [];
  for (const model of ['tiny', 'vit-b-32', 'vit-b-16', 'vit-l-14']) {
    const large = model === 'vit-l-14';
    for (const dtype of ['fp32', 'fp16', 'int8'] as WeightFormat[]) {
      grid.push(row(model, dtype, 'load', 1));
      const forward = large ? [1, 2, 8, 32] : [2, 8, 32, 128, ...(model === 'tiny' ? [1024, 4096] : [])];
      for (const batch of forward) grid.push(row(model, dtype, 'forward', batch));
      if (dtype === 'int8') continue;
      for (const batch of large ? [1, 2] : [2, 8, 16, 32]) grid.push(row(model, dtype, 'train', batch));
      if (dtype === 'fp32')
        for (const batch of large ? [1, 2] : [2, 8, 32]) grid.push(row(model, dtype, 'train', batch, 'sgd'));
    }
    for (const batch of large ? [2] : [8, 32]) {
      grid.push(row(model, 'fp32', 'forward', batch, 'adamw', 1));
      grid.push(row(model, 'fp32', 'train', large ? 1 : batch, 'adamw', 1));
    }
  }
  return grid;
}

/** A few of each kind: the calibrated family at large batch, the other dtypes, SGD, 1 thread, each other preset. */
function quickGrid(): HoldoutConfig[] {
  return [
    row('tiny', 'fp32', 'forward', 128),
    row('tiny', 'fp32', 'train', 32),
    row('vit-b-32', 'int8', 'load', 1),
    row('vit-b-32', 'fp32', 'forward', 8),
    row('vit-b-32', 'fp32', 'forward', 32),
    row('vit-b-32', 'int8', 'forward', 8),
    row('vit-b-32', 'fp16', 'forward', 32),
    row('vit-b-32', 'fp32', 'forward', 8, 'adamw', 1),
    row('vit-b-32', 'fp32', 'train', 8),
    row('vit-b-32', 'fp32', 'train', 16),
    row('vit-b-32', 'fp32', 'train', 32),
    row('vit-b-32', 'fp16', 'train', 16),
    row('vit-b-32', 'fp32', 'train', 8, 'adamw', 1),
    row('vit-b-32', 'fp32', 'train', 16, 'sgd'),
    row('vit-b-16', 'fp32', 'load', 1),
    row('vit-b-16', 'fp32', 'forward', 8),
    row('vit-b-16', 'fp32', 'train', 4),
    row('vit-l-14', 'fp32', 'load', 1),
    row('vit-l-14', 'fp32', 'forward', 2),
    row('vit-l-14', 'fp32', 'train', 2),
  ];
}

/** The calibration's own points are not holdout. */
const calibratedPoint = (c: HoldoutConfig) =>
  c.model === CALIBRATED.model &&
  CALIBRATED.dtypes.includes(c.dtype) &&
  c.threads === CALIBRATED.threads &&
  c.optimizer === 'adamw' &&
  (c.phase === 'load' || CALIBRATED.batches.includes(c.batch));

const configKey = (c: HoldoutConfig) => [c.model, c.dtype, c.phase, c.batch, c.optimizer, c.threads].join(' ');

/** Relative cost of a run, to order the grid cheapest first: compute ~ parameters x batch x tokens. */
function cost(c: HoldoutConfig): number {
  const config = presetConfig(c.model);
  const params = config.vision.hiddenSize ** 2 * config.vision.numHiddenLayers;
  const tokens = (config.vision.imageSize / config.vision.patchSize) ** 2 + 1 + config.text.maxPositionEmbeddings;
  const work = c.phase === 'load' ? 0.2 : c.batch * tokens * (c.phase === 'train' ? 4 : 1);
  return (params * (1 + work)) / c.threads;
}

function option(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

async function measure(
  c: HoldoutConfig,
  progress: (line: string) => void,
): Promise<Pick<HoldoutRow, 'measured' | 'status'>> {
  if (c.phase === 'train' && c.optimizer === 'sgd') {
    const r = await runTrainStep({ ...c, segments: DEFAULT_TRAINING_SEGMENTS, progress });
    if (stopSignal()) throw new Error('stopped');
    const measured =
      r.passed && r.rssPeak !== null && r.vmSizePeak !== null ? { rss: r.rssPeak, vmSize: r.vmSizePeak } : null;
    return { measured, status: r.passed ? 'passed' : `failed: ${r.cause}` };
  }
  const [run] = await runPhases({
    model: c.model,
    dtype: c.dtype,
    batch: c.batch,
    phases: [c.phase],
    threads: c.threads,
    progress,
  });
  const m = run.result.memory;
  const passed = run.result.status === 'passed' && m.rssPeak !== null && m.vmSizePeak !== null;
  return {
    measured: passed ? { rss: m.rssPeak!, vmSize: m.vmSizePeak! } : null,
    status: passed ? 'passed' : `${run.result.status}: ${run.result.error ?? run.result.diagnosis.cause}`,
  };
}

const percent = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;

function describe(r: HoldoutRow, e: PhaseEstimate): string {
  const name = `${r.model} ${r.dtype} ${r.phase}${r.phase === 'load' ? '' : ` b${r.batch}`}${r.phase === 'train' ? ` ${r.optimizer}` : ''} ${r.threads}t`;
  if (!r.measured) return `${name.padEnd(34)} ${r.status}`;
  const cell = (key: keyof Peak) => {
    const band = e.uncertainty[key];
    const inside = insideBand(e, r.measured!, key);
    return `${formatBytes(r.measured![key]).padStart(9)} pred ${formatBytes(e.predicted[key]).padStart(9)} ± ${(
      (100 * band) /
      e.predicted[key]
    ).toFixed(
      1,
    )}% miss ${percent((r.measured![key] - e.predicted[key]) / e.predicted[key]).padStart(6)} ${inside ? 'in ' : 'OUT'}`;
  };
  return `${name.padEnd(34)} RSS ${cell('rss')} | VmSize ${cell('vmSize')}  [${e.uncertainty.scope}]`;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const jsonFile = option('json');
  const maxRss = parseBytes(option('max-rss') ?? '7G', '--max-rss');
  const only = option('only')?.split(',');
  // --skip FILE: leave out the configurations a former holdout file measured (a second, fresh holdout).
  const skipFile = option('skip');
  const measured = new Set(
    skipFile ? (JSON.parse(fs.readFileSync(skipFile, 'utf8')) as HoldoutFile).rows.map((r) => configKey(r)) : [],
  );
  const progress = (line: string) => process.stderr.write(`  ${line}\n`);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => stopTraces(signal));

  const threadCounts = [...new Set((quick ? quickGrid() : fullGrid()).map((c) => c.threads))];
  for (const threads of threadCounts) await ensureBaseline(threads, progress);
  for (const dtype of CALIBRATED.dtypes) {
    const record = loadRuntimeRecord(CALIBRATED.threads);
    if (!record.calibrations.some((c) => c.model === CALIBRATED.model && c.dtype === dtype)) {
      progress(`calibrating ${CALIBRATED.model} ${dtype} at batch ${CALIBRATED.batches.join(' and ')} first`);
      await calibrate(CALIBRATED.model, dtype, CALIBRATED.batches, CALIBRATED.threads, progress);
    }
  }
  const records: Record<number, RuntimeRecord> = Object.fromEntries(threadCounts.map((t) => [t, loadRuntimeRecord(t)]));
  const grid = (quick ? quickGrid() : fullGrid())
    .filter((c) => !calibratedPoint(c) && !measured.has(configKey(c)) && (!only || only.includes(c.model)))
    .filter((c) => {
      const e = estimatePhase(presetConfig(c.model), c, records[c.threads]);
      const fits = e.predicted.rss + e.uncertainty.rss <= maxRss;
      if (!fits) progress(`skipped ${c.model} ${c.dtype} ${c.phase} batch ${c.batch}: predicted above --max-rss`);
      return fits;
    })
    .sort((a, b) => cost(a) - cost(b));

  const rows: HoldoutRow[] = [];
  const fileOf = (): HoldoutFile => ({
    schema: HOLDOUT_SCHEMA,
    measuredAt: new Date().toISOString(),
    machine: `${os.hostname()}: ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
    records,
    rows,
  });
  // Written after every run, so a stopped or killed holdout keeps what it measured.
  const save = () => jsonFile && fs.writeFileSync(jsonFile, JSON.stringify(fileOf(), null, 1) + '\n');
  const started = Date.now();
  console.log(
    `holdout: ${grid.length} run(s), cheapest first; ${os.hostname()}, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(2)}`,
  );
  for (const [i, c] of grid.entries()) {
    if (stopSignal()) break;
    progress(
      `[${i + 1}/${grid.length}, ${((Date.now() - started) / 60000).toFixed(1)} min] ${c.model} ${c.dtype} ${c.phase} batch ${c.batch} ${c.optimizer} ${c.threads} thread(s)`,
    );
    const t0 = Date.now();
    let result: Pick<HoldoutRow, 'measured' | 'status'>;
    try {
      result = await measure(c, progress);
    } catch (error) {
      if (stopSignal()) break;
      result = { measured: null, status: `error: ${(error as Error).message}` };
    }
    const r: HoldoutRow = { ...c, ...result, durationMs: Date.now() - t0, load: os.loadavg()[0] };
    rows.push(r);
    save();
    console.log(describe(r, estimatePhase(presetConfig(c.model), c, records[c.threads])));
  }

  const table = coverage(fileOf());
  console.log(
    `\ncoverage (share of measured values inside the band) and the widest band, ${rows.filter((r) => r.measured).length} measured run(s):`,
  );
  for (const line of table.lines) console.log(`  ${line}`);
  if (jsonFile) console.log(`wrote ${jsonFile}`);
  const stopped = stopSignal();
  if (stopped) {
    console.log(`stopped by ${stopped}: ${rows.length} of ${grid.length} run(s) measured`);
    process.exitCode = 128 + os.constants.signals[stopped];
  }
}

main().catch((error) => {
  process.stderr.write(`holdout: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
