// The estimate's band on recorded real measurements: the peaks scripts/holdout.ts measured here (each a
// run in its own child, never calibrated on), with the runtime records they were estimated from
// (test/fixtures/holdout-*.json: the tuning file's misses set the arena term, the fresh file was measured
// after with its own baseline and calibration, the validation file after the training growth share changed;
// the training term's heap was then chosen on those three, and the heap-check file measured after it; the
// replay-check file with the forward replaying onnxruntime's arena, the tiny-large one on tiny's forward at
// batch 1024 and 4096, docs/estimate.md). Then `fit --verify`'s report of a run outside its band, and what the store learns.
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { presetConfig } from '../src/clip/config';
import { outsideTheBand, type VerifyRun } from '../src/commands/verify';
import { estimatePhase, WIDTH_GOAL } from '../src/estimate/estimate';
import { COVERAGE_GOAL, coverage, judge, type HoldoutFile } from '../src/estimate/holdout';
import { loadRuntimeRecord, recordObservations, runtimeKey, saveRuntimeRecord } from '../src/estimate/store';
import { fixtures } from './helpers/paths';

const read = (name: string) => JSON.parse(fs.readFileSync(path.join(fixtures, name), 'utf8')) as HoldoutFile;
const tuning = read('holdout-tuning.json');
const fresh = read('holdout-fresh.json');
const validation = read('holdout-validation.json');
const heapCheck = read('holdout-heap-check.json');
const replayCheck = read('holdout-replay-check.json');
const tinyLarge = read('holdout-tiny-large.json');

// The goal is 95% of each measure inside the band. The four files are the full grid on a quiet machine,
// judged with the estimate as it is now; the floors are the coverage measured on them (all 111 runs of
// each, RSS and VmSize), so the band cannot get worse unnoticed.
test('the band on the holdout: RSS and VmSize peaks inside it, 95% or more on the runs that tuned it and on fresh runs', (t) => {
  for (const [file, floor] of [
    [tuning, { rss: 1, vmSize: 1 }],
    [fresh, { rss: 1, vmSize: 1 }],
    [validation, { rss: 1, vmSize: 1 }],
    [heapCheck, { rss: 1, vmSize: 1 }],
    [replayCheck, { rss: 1, vmSize: 1 }],
  ] as const) {
    const overall = coverage(file).groups.find((g) => g.name === 'overall')!;
    t.log(`${file.note}\n  ${coverage(file).lines.join('\n  ')}`);
    t.true(overall.runs >= 100);
    t.true(overall.coverage.rss >= floor.rss - 1e-9, coverage(file).lines.join('\n'));
    t.true(overall.coverage.vmSize >= floor.vmSize - 1e-9, coverage(file).lines.join('\n'));
    t.true(Math.min(floor.rss, floor.vmSize) >= COVERAGE_GOAL);
  }
  // The calibrated family's widest band: ±9.1% of RSS (forward at batch 32, the token table's folios) and
  // ±6.4% of VmSize (train at batch 32), within the ±10% goal since the forward replays onnxruntime's arena.
  const calibrated = coverage(tuning).groups.find((g) => g.name === 'calibrated')!;
  t.true(calibrated.widest.rss <= 0.092 && calibrated.widest.vmSize <= 0.065, JSON.stringify(calibrated.widest));
});

test("tiny's forward at batch 1024 and 4096, where batch proposals under small limits land: every peak inside its band", (t) => {
  const judged = judge(tinyLarge);
  t.is(judged.length, 6);
  for (const j of judged) t.true(j.inside.rss && j.inside.vmSize, `${j.row.dtype} batch ${j.row.batch}`);
});

test('a band wider than ±10% (or uncalibrated) says so and why; a calibrated config within 12 samples of its calibration stays within it', (t) => {
  for (const j of [tuning, fresh, validation, heapCheck, replayCheck].flatMap((file) => judge(file))) {
    const u = j.estimate.uncertainty;
    const within = u.scope !== 'uncalibrated' && j.width.rss <= WIDTH_GOAL && j.width.vmSize <= WIDTH_GOAL;
    t.is(u.withinGoal, within);
    if (!within) t.regex(u.basis, /not within the ±10% goal: /);
    if (u.scope === 'calibrated' && j.row.batch <= 16) t.true(within, `${j.row.model} ${j.row.phase} ${j.row.batch}`);
  }
});

test("the issue's misses land inside the band: vit-l-14 fp32 train batch 2 (RSS was +9.2% outside), vit-b-32 fp32 train batch 32 (VmSize was +15%)", (t) => {
  const find = (model: string, batch: number) =>
    judge(tuning).find(
      (j) =>
        j.row.model === model &&
        j.row.dtype === 'fp32' &&
        j.row.phase === 'train' &&
        j.row.optimizer === 'adamw' &&
        j.row.threads === 2 &&
        j.row.batch === batch,
    )!;
  for (const j of [find('vit-l-14', 2), find('vit-b-32', 32)]) {
    t.deepEqual(j.inside, { rss: true, vmSize: true });
    t.log(
      `${j.row.model} batch ${j.row.batch}: RSS ${j.row.measured!.rss} in ${j.estimate.predicted.rss} ± ${j.estimate.uncertainty.rss}, VmSize ${j.row.measured!.vmSize} in ${j.estimate.predicted.vmSize} ± ${j.estimate.uncertainty.vmSize}`,
    );
  }
  // vit-l-14 is far from the calibrated vit-b-32: its band is wider, and says so only when over ±10%
  t.is(find('vit-l-14', 2).estimate.uncertainty.scope, 'transferred');
});

test('fit --verify: a passing run outside its band is reported and recorded in the estimate store; the next estimate takes it in and covers it', (t) => {
  // vit-b-32 plain SGD at batch 2 as measured (the training child, the path fit --verify takes), against
  // the record before any calibration: its VmSize 12.5% above the terms and the baseline (the address space
  // malloc's arenas reserve, which a calibration's constant holds), outside the band; its RSS inside.
  const row = tuning.rows.find((r) => r.model === 'vit-b-32' && r.optimizer === 'sgd' && r.batch === 2)!;
  const uncalibrated = { ...tuning.records[2], calibrations: [], otherThreads: [] };
  const config = { model: row.model, dtype: row.dtype, optimizer: row.optimizer, segments: 4 };
  const run: VerifyRun = {
    batch: row.batch,
    passed: true,
    rssPeak: row.measured!.rss,
    vmSizePeak: row.measured!.vmSize,
    limitedPeak: null,
    cause: 'none',
    evidence: [],
    command: '',
  };
  const limit = { kind: 'mem' as const, bytes: 4 * 2 ** 30 };
  const { outside, observations } = outsideTheBand(config, 'train', limit, [run], uncalibrated);
  const before = estimatePhase(presetConfig(row.model), { ...config, batch: row.batch, phase: 'train' }, uncalibrated);
  t.deepEqual(outside, [
    {
      batch: 2,
      measure: 'vmSize',
      measured: row.measured!.vmSize,
      predicted: before.predicted.vmSize,
      band: before.uncertainty.vmSize,
    },
  ]);
  t.is(observations.length, 1);
  t.is(observations[0].source, `fit --verify --limit-mem ${4 * 2 ** 30}`);
  // The failing runs of a search are stopped at the limit: never compared
  t.is(outsideTheBand(config, 'train', limit, [{ ...run, passed: false }], uncalibrated).outside.length, 0);

  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-band-'));
  const saved = process.env.CLIPMEM_CACHE;
  process.env.CLIPMEM_CACHE = cache;
  try {
    saveRuntimeRecord({ ...uncalibrated, key: runtimeKey(2) });
    recordObservations(2, observations);
    const learned = loadRuntimeRecord(2);
    t.is(learned.observations!.length, 1);
    const after = estimatePhase(presetConfig(row.model), { ...config, batch: row.batch, phase: 'train' }, learned);
    t.true(Math.abs(row.measured!.rss - after.predicted.rss) <= after.uncertainty.rss + 1);
    t.true(Math.abs(row.measured!.vmSize - after.predicted.vmSize) <= after.uncertainty.vmSize + 1);
    t.regex(after.uncertainty.basis, /widened to the largest miss of 1 run\(s\) recorded outside their band/);
    // a nearby batch of the same model and phase is widened too
    const near = estimatePhase(presetConfig(row.model), { ...config, batch: 1, phase: 'train' }, learned);
    t.true(
      near.uncertainty.vmSize >=
        ((row.measured!.vmSize - before.predicted.vmSize) / before.predicted.vmSize) * near.predicted.vmSize - 1,
    );
  } finally {
    process.env.CLIPMEM_CACHE = saved;
    if (saved === undefined) delete process.env.CLIPMEM_CACHE;
    fs.rmSync(cache, { recursive: true, force: true });
  }
});
