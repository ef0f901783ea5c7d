// `clip-mem fit`: the search over batches and changes on paper, then the issue's end-to-end check: under a
// 1500M cgroup the answer's batch trains and the next one is killed, both run in children and shown.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { presetConfig } from '../src/clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../src/clip/onnx/train';
import { estimatePhase } from '../src/estimate/estimate';
import {
  cheapest,
  fitPlan,
  largestFitting,
  limitedFigure,
  maxSearchRuns,
  searchBoundary,
  type BatchRange,
  type Boundary,
} from '../src/estimate/fit';
import type { RuntimeRecord } from '../src/estimate/store';
import { scratchDir } from './helpers/scratch';

// Tests that run several children, minutes each under load: ava's 10-minute inactivity timeout waits for them.
const LONG_TEST_MS = 20 * 60_000;

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');
const MiB = 2 ** 20;

test('largestFitting: the last batch that fits, 0 when batch 1 does not, bounded by maxBatch', (t) => {
  t.is(
    largestFitting((b) => b <= 37, 256),
    37,
  );
  t.is(
    largestFitting((b) => b <= 1, 256),
    1,
  );
  t.is(
    largestFitting(() => false, 256),
    0,
  );
  t.is(
    largestFitting(() => true, 100),
    100,
  );
});

/** The batches the search runs when exactly the batches up to `boundary` pass (0: none does), and what it finds. */
function searched(
  maxBatch: number,
  expected: number | BatchRange | undefined,
  boundary: number,
): { tried: number[]; found: Boundary } {
  const search = searchBoundary(maxBatch, typeof expected === 'number' ? { from: expected, to: expected } : expected);
  const tried: number[] = [];
  let step = search.next();
  while (!step.done) {
    tried.push(step.value);
    step = search.next(step.value <= boundary);
  }
  return { tried, found: step.value };
}

test('searchBoundary: the prediction and the batch above it when it is right, else a bisection of 1..maxBatch in at most ceil(log2(maxBatch)) + 1 runs', (t) => {
  t.deepEqual([1, 2, 3, 100, 128, 256, 257].map(maxSearchRuns), [1, 2, 3, 8, 8, 9, 10]);
  // Right: 2 runs, the one nearer the middle of 1..256 first
  t.deepEqual(searched(256, 17, 17), { tried: [18, 17], found: { passed: 17, failed: 18 } });
  t.deepEqual(searched(256, 200, 200), { tried: [200, 201], found: { passed: 200, failed: 201 } });
  // The edges: batch 1 fails; --max-batch passes (nothing above it to run), at the bound exactly
  t.deepEqual(searched(256, 17, 0), { tried: [18, 17, 8, 4, 2, 1], found: { passed: 0, failed: 1 } });
  t.deepEqual(searched(256, 17, 256), {
    tried: [18, 137, 197, 227, 242, 249, 253, 255, 256],
    found: { passed: 256, failed: 257 },
  });
  t.deepEqual(searched(256, 256, 256), { tried: [256], found: { passed: 256, failed: 257 } });
  t.deepEqual(searched(256, 1, 0), { tried: [2, 1], found: { passed: 0, failed: 1 } });
  // Wrong by a few: 18 passing leaves 18..256, which 8 runs can only settle by halving it from the top
  t.deepEqual(searched(256, 17, 22), {
    tried: [18, 137, 77, 47, 32, 25, 21, 23, 22],
    found: { passed: 22, failed: 23 },
  });
  t.deepEqual(searched(256, 17, 16), { tried: [18, 17, 8, 12, 14, 15, 16], found: { passed: 16, failed: 17 } });
  // No prediction (fit's search on the estimate): the plain bisection
  t.deepEqual(searched(256, undefined, 37), {
    tried: [128, 64, 32, 48, 40, 36, 38, 37],
    found: { passed: 37, failed: 38 },
  });
  t.deepEqual(searched(1, 1, 1), { tried: [1], found: { passed: 1, failed: 2 } });
});

test('searchBoundary: every boundary under every prediction found within the bound, the passing batch and the one above it both run', (t) => {
  const wrong: string[] = [];
  for (const maxBatch of [1, 2, 3, 5, 8, 13, 33, 100, 256]) {
    for (let predicted = 1; predicted <= maxBatch; predicted++) {
      for (let boundary = 0; boundary <= maxBatch; boundary++) {
        const { tried, found } = searched(maxBatch, predicted, boundary);
        const ok =
          found.passed === boundary &&
          found.failed === boundary + 1 &&
          tried.length <= maxSearchRuns(maxBatch) &&
          new Set(tried).size === tried.length &&
          tried.every((b) => b >= 1 && b <= maxBatch) &&
          (boundary === 0 || tried.includes(boundary)) &&
          (boundary === maxBatch || tried.includes(boundary + 1));
        if (!ok)
          wrong.push(`maxBatch ${maxBatch}, predicted ${predicted}, boundary ${boundary}: ran ${tried.join(', ')}`);
      }
    }
  }
  t.deepEqual(wrong, []);
});

test("searchBoundary: a band's range is bisected first, then what is left of 1..maxBatch, within the same bound", (t) => {
  // fit --verify's SGD case (3 December 2026): proposed 11 by the band's upper edge, 25 by its lower one; 21 passes.
  // The batch above the range first: once it fails, 26 candidates are left for 8 runs, and 4 bisect the range.
  t.deepEqual(searched(256, { from: 11, to: 25 }, 21), {
    tried: [26, 18, 22, 20, 21],
    found: { passed: 21, failed: 22 },
  });
  // The range's ends, and a boundary outside it on either side
  t.deepEqual(searched(256, { from: 11, to: 25 }, 11), {
    tried: [26, 18, 14, 12, 11],
    found: { passed: 11, failed: 12 },
  });
  t.deepEqual(searched(256, { from: 11, to: 25 }, 25), {
    tried: [26, 18, 22, 24, 25],
    found: { passed: 25, failed: 26 },
  });
  t.deepEqual(searched(256, { from: 11, to: 25 }, 40).found, { passed: 40, failed: 41 });
  t.deepEqual(searched(256, { from: 11, to: 25 }, 3).found, { passed: 3, failed: 4 });
  const wrong: string[] = [];
  for (const maxBatch of [1, 2, 3, 5, 8, 13, 33]) {
    for (let from = 0; from <= maxBatch; from++) {
      for (let to = from; to <= maxBatch; to++) {
        for (let boundary = 0; boundary <= maxBatch; boundary++) {
          const { tried, found } = searched(maxBatch, { from, to }, boundary);
          const ok =
            found.passed === boundary &&
            found.failed === boundary + 1 &&
            tried.length <= maxSearchRuns(maxBatch) &&
            new Set(tried).size === tried.length &&
            tried.every((b) => b >= 1 && b <= maxBatch);
          if (!ok)
            wrong.push(`maxBatch ${maxBatch}, expected ${from}-${to}, boundary ${boundary}: ran ${tried.join(', ')}`);
        }
      }
    }
  }
  t.deepEqual(wrong, []);
});

function record(): RuntimeRecord {
  const phases = {
    load: { rss: 98 * MiB, vmSize: 1100 * MiB },
    forward: { rss: 124 * MiB, vmSize: 1200 * MiB },
    train: { rss: 137 * MiB, vmSize: 1400 * MiB },
  };
  return {
    key: 'test runtime',
    backend: 'onnxruntime',
    versions: { backend: 'x', node: 'y', clipMem: 'z' },
    threads: 2,
    baseline: { measuredAt: '', phases },
    calibrations: [],
  };
}

test("fitPlan: AdamW training of vit-b-32 does not fit 1500 MiB; the cheapest change is plain SGD, at the last batch whose band's upper edge is under the limit", (t) => {
  const limit = { kind: 'mem' as const, bytes: 1500 * MiB };
  const plan = fitPlan(
    { model: 'vit-b-32', dtype: 'fp32', optimizer: 'adamw', segments: DEFAULT_TRAINING_SEGMENTS },
    'train',
    limit,
    record(),
    256,
  );
  t.is(plan.answer.batch, 0);
  t.deepEqual(
    plan.alternatives.map((a) => a.change.split(' (')[0]),
    [
      '--dtype fp16',
      '--segments 12',
      '--optimizer sgd',
      '--optimizer sgd and --segments 12',
      '--model vit-b-16',
      '--model tiny',
    ],
  );
  const choice = cheapest(plan)!;
  t.is(choice.optimizer, 'sgd');
  t.is(choice.segments, DEFAULT_TRAINING_SEGMENTS);
  t.true(choice.batch >= 1);
  const config = presetConfig('vit-b-32');
  const at = (batch: number) =>
    limitedFigure(
      estimatePhase(config, { model: 'vit-b-32', dtype: 'fp32', optimizer: 'sgd', batch, phase: 'train' }, record()),
      'mem',
      config,
    );
  // The proposal carries the band: the upper edge fits, the next batch's does not
  t.deepEqual(choice.limited, at(choice.batch));
  t.is(choice.limited.upper, choice.limited.predicted + choice.limited.band);
  t.true(choice.limited.band > 0);
  t.true(choice.limited.upper <= limit.bytes);
  t.true(at(choice.batch + 1).upper > limit.bytes);
  t.is(choice.next!.batch, choice.batch + 1);
  t.deepEqual(choice.nextLimited, at(choice.batch + 1));
});

test('fitPlan: --limit-as compares VmSize, --limit-data leaves out the read-only weight mapping', (t) => {
  const r = record();
  const config = presetConfig('vit-b-32');
  const e = estimatePhase(
    config,
    { model: 'vit-b-32', dtype: 'fp32', optimizer: 'adamw', batch: 2, phase: 'forward' },
    r,
  );
  t.deepEqual(limitedFigure(e, 'as', config), {
    predicted: e.predicted.vmSize,
    band: e.uncertainty.vmSize,
    upper: e.predicted.vmSize + e.uncertainty.vmSize,
  });
  t.is(limitedFigure(e, 'data', config).predicted, e.predicted.vmSize - 605_110_268);
  t.is(limitedFigure(e, 'data', config).band, e.uncertainty.vmSize);
  t.deepEqual(limitedFigure(e, 'mem', config), {
    predicted: e.predicted.rss,
    band: e.uncertainty.rss,
    upper: e.predicted.rss + e.uncertainty.rss,
  });
});

test.serial(
  'fit --verify --limit-mem 1500M --phase train: a batch that trains under the limit and the next one that is killed, both run',
  (t) => {
    t.timeout(LONG_TEST_MS);
    const result = spawnSync(process.execPath, [bin, 'fit', '--verify', '--limit-mem', '1500M', '--phase', 'train'], {
      encoding: 'utf8',
      timeout: 900_000,
    });
    t.is(result.status, 0, result.stdout + result.stderr);
    const out = result.stdout;
    t.log(out);
    const proven = /proven: batch (\d+) passes and batch (\d+) fails under the limit/.exec(out);
    t.truthy(proven, out);
    const [passed, failed] = [Number(proven![1]), Number(proven![2])];
    t.is(failed, passed + 1);
    t.regex(out, new RegExp(`batch +${passed}  PASS  RSS peak `));
    t.regex(out, new RegExp(`batch +${failed}  FAIL  RSS peak .* cause cgroup-oom-kill`));
    t.regex(out, /cheapest change that fits: --optimizer sgd/);
    t.regex(out, /\(proposed \d+; expected between \d+ and \d+ by the band(, found outside)?\)/);
    // The note stands where SGD's band is the uncalibrated one (a store here may hold an SGD calibration).
    const sgdLine = out.split('\n').find((line) => line.startsWith('  --optimizer sgd (no optimizer state)'))!;
    t.is(/band uncalibrated/.test(sgdLine), /note: plain SGD is not calibrated/.test(out), out);
    t.regex(
      out,
      /every passing run landed inside the estimate's band|outside the band: batch \d+ (RSS|VmSize) .* recorded in /,
    );
    const runs = /verify: (\d+) run\(s\) .* \(at most (\d+): ceil\(log2\(--max-batch\)\) \+ 1\)/.exec(out)!;
    t.is(Number(runs[2]), 9);
    t.true(Number(runs[1]) <= 9, out);
    t.is(out.match(/^ {2}batch +\d+ {2}(PASS|FAIL)/gm)!.length, Number(runs[1]));
  },
);

test.serial(
  "estimate --calibrate --optimizer sgd: the plain SGD step calibrated in the training child, AdamW's calibration kept, fit's note gone",
  (t) => {
    t.timeout(LONG_TEST_MS);
    const env = { ...process.env, CLIP_MEM_CACHE: scratchDir('clip-mem-sgd-calibration-') };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 600_000 });
    const batches = ['--model', 'tiny', '--calibrate-batches', '1,2'];
    const adamw = cli(['estimate', '--calibrate', '--phase', 'train', ...batches]);
    t.is(adamw.status, 0, adamw.stdout + adamw.stderr);
    t.regex(
      adamw.stdout,
      /train \(sgd\): plain SGD is not calibrated .* `clip-mem estimate --calibrate --optimizer sgd`/,
    );
    const sgd = cli(['estimate', '--calibrate', '--optimizer', 'sgd', ...batches]);
    t.is(sgd.status, 0, sgd.stdout + sgd.stderr);
    t.regex(sgd.stdout, /^tiny fp32 train: measured peak RSS = .*\[batch 1: .*, batch 2: /m);
    t.notRegex(sgd.stdout, /not calibrated/);
    const trainEstimate = (optimizer: string) =>
      (
        JSON.parse(
          cli(['estimate', '--model', 'tiny', '--phase', 'train', '--optimizer', optimizer, '--json', '-']).stdout,
        ) as { estimates: { calibration: { kind: string }; uncertainty: { scope: string } }[] }
      ).estimates[0]!;
    for (const optimizer of ['sgd', 'adamw']) {
      t.is(trainEstimate(optimizer).calibration.kind, 'this config', optimizer);
      t.is(trainEstimate(optimizer).uncertainty.scope, 'calibrated', optimizer);
    }
    const fit = cli(['fit', '--model', 'tiny', '--phase', 'train', '--limit-mem', '300M']);
    t.is(fit.status, 0, fit.stdout + fit.stderr);
    t.regex(fit.stdout, /--optimizer sgd \(no optimizer state\): tiny fp32 sgd: batch \d+/);
    t.notRegex(fit.stdout, /note: plain SGD/);
    const refused = cli(['estimate', '--calibrate', '--optimizer', 'sgd', '--phase', 'forward', '--model', 'tiny']);
    t.is(refused.status, 2);
    t.regex(refused.stderr, /--optimizer sgd: only the train phase has an optimizer/);
  },
);
