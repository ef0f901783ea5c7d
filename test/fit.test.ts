// `clip-mem fit`: the search over batches and changes on paper, then the end-to-end check: under a
// 1500M cgroup the answer's batch trains and the next one is killed, both run in children and shown.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { presetConfig } from '../src/clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../src/clip/onnx/train';
import { estimatePhase } from '../src/estimate/estimate';
import { cheapest, fitPlan, largestFitting, limitedFigure } from '../src/estimate/fit';
import type { RuntimeRecord } from '../src/estimate/store';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');
const MiB = 2 ** 20;

test('largestFitting: the last batch that fits, 0 when batch 1 does not, bounded by maxBatch', (t) => {
  t.is(largestFitting((b) => b <= 37, 256), 37);
  t.is(largestFitting((b) => b <= 1, 256), 1);
  t.is(largestFitting(() => false, 256), 0);
  t.is(largestFitting(() => true, 100), 100);
});

function record(): RuntimeRecord {
  const phases = { load: { rss: 98 * MiB, vmSize: 1100 * MiB }, forward: { rss: 124 * MiB, vmSize: 1200 * MiB }, train: { rss: 137 * MiB, vmSize: 1400 * MiB } };
  return { key: 'test runtime', backend: 'onnxruntime', versions: { backend: 'x', node: 'y', clipMem: 'z' }, threads: 2, baseline: { measuredAt: '', phases }, calibrations: [] };
}

test('fitPlan: AdamW training of vit-b-32 does not fit 1500 MiB; the cheapest change is plain SGD, at the last batch under the limit', (t) => {
  const limit = { kind: 'mem' as const, bytes: 1500 * MiB };
  const plan = fitPlan({ model: 'vit-b-32', dtype: 'fp32', optimizer: 'adamw', segments: DEFAULT_TRAINING_SEGMENTS }, 'train', limit, record(), 256);
  t.is(plan.answer.batch, 0);
  t.deepEqual(plan.alternatives.map((a) => a.change.split(' (')[0]), ['--dtype fp16', '--segments 12', '--optimizer sgd', '--optimizer sgd and --segments 12', '--model vit-b-16', '--model tiny']);
  const choice = cheapest(plan)!;
  t.is(choice.optimizer, 'sgd');
  t.is(choice.segments, DEFAULT_TRAINING_SEGMENTS);
  t.true(choice.batch >= 1);
  const config = presetConfig('vit-b-32');
  const at = (batch: number) => limitedFigure(estimatePhase(config, { model: 'vit-b-32', dtype: 'fp32', optimizer: 'sgd', batch, phase: 'train' }, record()), 'mem', config);
  t.true(at(choice.batch) <= limit.bytes);
  t.true(at(choice.batch + 1) > limit.bytes);
  t.is(choice.next!.batch, choice.batch + 1);
});

test('fitPlan: --limit-as compares VmSize, --limit-data leaves out the read-only weight mapping', (t) => {
  const r = record();
  const config = presetConfig('vit-b-32');
  const e = estimatePhase(config, { model: 'vit-b-32', dtype: 'fp32', optimizer: 'adamw', batch: 2, phase: 'forward' }, r);
  t.is(limitedFigure(e, 'as', config), e.predicted.vmSize);
  t.is(limitedFigure(e, 'data', config), e.predicted.vmSize - 605_110_268);
  t.is(limitedFigure(e, 'mem', config), e.predicted.rss);
});

test.serial('fit --verify --limit-mem 1500M --phase train: a batch that trains under the limit and the next one that is killed, both run', (t) => {
  const result = spawnSync(process.execPath, [bin, 'fit', '--verify', '--limit-mem', '1500M', '--phase', 'train'], { encoding: 'utf8', timeout: 900_000 });
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
  const runs = /verify: (\d+) run\(s\) .* \(a bisection of 1..--max-batch could need (\d+)\)/.exec(out)!;
  t.true(Number(runs[1]) <= Number(runs[2]), out);
});
