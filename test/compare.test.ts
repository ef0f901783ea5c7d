// `clip-mem compare` reads outcomes, refuses runs made with different options, refuses what is not a run
// file with exit 2, rounds for people and keeps JSON exact (schema/compare.schema.json).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RunResults } from '../src/report/result';
import { compareRuns, parseGrowth, readRunFile } from '../src/report/compare';
import { runCliBatch, type CliResult } from './helpers/cli-batch';
import { repoRoot } from './helpers/paths';
import { sampleResults } from './helpers/run-results';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';

const MiB = 2 ** 20;
const dir = scratchDir('clip-mem-compare-');
const file = (name: string) => path.join(dir, name);

function write(name: string, results: RunResults): string {
  const lines = [results.header, ...results.scenarios, ...(results.end ? [results.end] : [])];
  fs.writeFileSync(file(name), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return file(name);
}

function variant(change: (r: RunResults) => void): RunResults {
  const r = sampleResults();
  change(r);
  return r;
}

const base = write('base.json', sampleResults());
const slower = write(
  'slower.json',
  variant((r) => {
    r.scenarios[0]!.wallMs = 13584.100672999999;
    r.scenarios[0]!.memory.rssPeak = Math.round(r.scenarios[0]!.memory.rssPeak! * 1.1);
  }),
);
const nowFails = write(
  'now-fails.json',
  variant((r) => {
    r.scenarios[0]!.status = 'failed';
    r.scenarios[0]!.diagnosis = { cause: 'cgroup-oom-kill', evidence: [] };
  }),
);
const otherLimits = write(
  'other-limits.json',
  variant((r) => {
    r.header.options.limits = { mem: 1024 * MiB };
    r.scenarios[1]!.status = 'passed';
    r.scenarios[1]!.diagnosis = { cause: 'none', evidence: [] };
    r.scenarios[1]!.memory.rssPeak = 700 * MiB;
  }),
);
const otherLargeBatch = write(
  'other-large-batch.json',
  variant((r) => (r.header.options.largeBatch = 64)),
);
fs.writeFileSync(file('null.json'), 'null\n');
fs.writeFileSync(file('empty.json'), '');
fs.writeFileSync(file('garbage.json'), 'not json at all\nreally not\n');
fs.writeFileSync(file('array.json'), '[1, 2]\n');
fs.writeFileSync(file('trace.json'), JSON.stringify({ schema: 'clip-mem-trace/2', exit: {} }, null, 2));
fs.writeFileSync(file('header-only.json'), JSON.stringify(sampleResults().header) + '\n');

const batch = runCliBatch(
  [
    ['compare', base, slower],
    ['compare', base, nowFails],
    ['compare', nowFails, base],
    ['compare', base, otherLimits],
    ['compare', base, otherLimits, '--allow-different'],
    ['compare', base, otherLargeBatch],
    ['compare', base, nowFails, '--json', file('out.json')],
    ['compare', base, otherLimits, '--json', '-'],
    ...['null', 'empty', 'garbage', 'array', 'trace', 'header-only'].map((name) => [
      'compare',
      base,
      file(`${name}.json`),
    ]),
    ['compare', base, dir],
    ['compare', base, file('missing.json')],
    ['compare', base, base, '--max-growth', 'lots'],
    ['compare', base, base, '--min-bytes', '-1M'],
    ['compare', base, base, '--min-ms', 'abc'],
  ].map((argv) => ({ argv })),
);
const result = (...argv: string[]): CliResult => {
  const found = batch.find((r) => JSON.stringify(r.argv) === JSON.stringify(argv));
  if (!found) throw new Error(`no case ${argv.join(' ')}`);
  return found;
};

test('a grown figure is a regression (exit 1), shown rounded for people', (t) => {
  const r = result('compare', base, slower);
  t.is(r.status, 1, r.stdout + r.stderr);
  t.regex(r.stdout, /basic-ops +wallMs +0\.90 s +13\.58 s +\+1409\.3% +REGRESSION/);
  t.regex(r.stdout, /basic-ops: wallMs grew \+1409\.3% \(0\.90 s -> 13\.58 s\)/);
  t.regex(r.stdout, /basic-ops: rssPeak grew \+10\.0% \(75 MiB -> 83 MiB\)/);
  t.notRegex(r.stdout, /13584\.1/, 'no raw float for people');
});

test('pass -> fail is a regression, fail -> pass an improvement; two failures are not compared by figures', (t) => {
  const worse = result('compare', base, nowFails);
  t.is(worse.status, 1, worse.stdout + worse.stderr);
  t.regex(worse.stdout, /basic-ops +passed -> failed \(cgroup-oom-kill\) +REGRESSION/);
  t.regex(worse.stdout, /clip-load-copy +failed in both runs/);
  t.notRegex(worse.stdout, /clip-load-copy +rssPeak/);
  const better = result('compare', nowFails, base);
  t.is(better.status, 0, better.stdout + better.stderr);
  t.regex(better.stdout, /basic-ops +failed \(cgroup-oom-kill\) -> passed +IMPROVEMENT/);
  t.notRegex(better.stdout, /REGRESSION/);
});

test('runs made with different options are not compared (exit 2) unless --allow-different, and the differences are listed', (t) => {
  const refused = result('compare', base, otherLimits);
  t.is(refused.status, 2, refused.stdout + refused.stderr);
  t.regex(refused.stderr, /different options/);
  t.regex(refused.stderr, /--limit-as +base 1\.27 GiB \(1363148800 B\), new none/);
  t.regex(refused.stderr, /--limit-mem +base none, new 1\.00 GiB/);
  t.regex(refused.stderr, /--allow-different/);
  t.notRegex(refused.stdout + refused.stderr, /IMPROVEMENT|REGRESSION/);
  const allowed = result('compare', base, otherLimits, '--allow-different');
  t.is(allowed.status, 0, allowed.stdout + allowed.stderr);
  t.regex(allowed.stdout, /^warning: the two runs were made with different options/m);
  t.regex(allowed.stdout, /clip-load-copy +failed \(address-space\) -> passed +IMPROVEMENT/);
  // --large-batch changes only the large-batch scenario, which neither run has: nothing differs.
  const unrelated = result('compare', base, otherLargeBatch);
  t.is(unrelated.status, 0, unrelated.stdout + unrelated.stderr);
});

test('--json is versioned, exact and follows schema/compare.schema.json', (t) => {
  const r = result('compare', base, nowFails, '--json', file('out.json'));
  t.is(r.status, 1);
  const json = JSON.parse(fs.readFileSync(file('out.json'), 'utf8'));
  t.is(json.schema, 'clip-mem-compare/1');
  t.is(json.verdict, 'regression');
  t.is(schemaErrors('compare', json), '');
  const different = result('compare', base, otherLimits, '--json', '-');
  t.is(different.status, 2);
  const refused = JSON.parse(different.stdout);
  t.is(refused.verdict, 'not-comparable');
  t.is(schemaErrors('compare', refused), '');
  t.deepEqual(
    refused.differences.map((d: { option: string }) => d.option),
    ['--limit-as', '--limit-mem'],
  );
  const exact = compareRuns(readRunFile(base), readRunFile(slower), { maxGrowth: 0.05, minBytes: MiB, minMs: 50 });
  t.is(exact.figures.find((f) => f.figure === 'wallMs')!.next, 13584.100672999999);
  t.is(schemaErrors('compare', { schema: 'clip-mem-compare/1' }) !== '', true, 'the schema has teeth');
});

test('what is not a run file is a clear error with exit 2', (t) => {
  const expected: Record<string, RegExp> = {
    null: /null\.json:1: null is not a line of `clip-mem run --json`/,
    empty: /empty\.json is empty/,
    garbage: /garbage\.json:1: not a JSON line/,
    array: /array\.json:1: \[1,2\] is not a line/,
    trace: /trace\.json holds clip-mem-trace\/2 JSON, not the JSON lines of `clip-mem run --json`/,
    'header-only': /header-only\.json holds no scenario result/,
  };
  for (const [name, message] of Object.entries(expected)) {
    const r = result('compare', base, file(`${name}.json`));
    t.is(r.status, 2, `${name}: ${r.stderr}`);
    t.regex(r.stderr, message, name);
    t.notRegex(r.stderr, /\n\s+at /, `${name}: no stack trace`);
  }
  t.regex(result('compare', base, dir).stderr, /NEW .*: is a directory/);
  t.is(result('compare', base, dir).status, 2);
  t.regex(result('compare', base, file('missing.json')).stderr, /NEW .*missing\.json: no such file/);
  t.is(result('compare', base, file('missing.json')).status, 2);
});

test('bad bounds are usage errors naming the option', (t) => {
  for (const [option, value] of [
    ['--max-growth', 'lots'],
    ['--min-bytes', '-1M'],
    ['--min-ms', 'abc'],
  ] as const) {
    const r = result('compare', base, base, option, value);
    t.is(r.status, 2, r.stderr);
    t.regex(r.stderr, new RegExp(`^clip-mem: ${option}: "${value}"`));
  }
  t.is(parseGrowth('5%'), 0.05);
  t.is(parseGrowth('0.05'), 0.05);
  t.is(parseGrowth('5'), 0.05);
  t.throws(() => parseGrowth('5000%'), { message: /too large/ });
});

test('through bin/clip-mem.js: a regression exits 1, an unreadable file 2', (t) => {
  const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
  t.is(spawnSync(process.execPath, [bin, 'compare', base, nowFails]).status, 1);
  const bad = spawnSync(process.execPath, [bin, 'compare', base, file('null.json')], { encoding: 'utf8' });
  t.is(bad.status, 2);
  t.regex(bad.stderr, /null is not a line/);
});
