// Every bad value of every option of every command is a usage error before any work: exit 2, a message
// naming the option, no child started, nothing written. Then 1,000 seeded random command lines: no stack
// trace, no hang, exit 0, 1 or 2. Both run in-process in one child (test/helpers/cli-batch.ts).
import test from 'ava';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { runCliBatch, type CliCase } from './helpers/cli-batch';
import { bin as CLI } from './helpers/probe-cli';
import { sampleResults } from './helpers/run-results';
import { scratchDir } from './helpers/scratch';

const root = scratchDir('clip-mem-usage-');
const work = path.join(root, 'work');
const cache = path.join(root, 'cache');
const inputs = path.join(root, 'inputs');
for (const dir of [work, cache, inputs]) fs.mkdirSync(dir);
const env = { ...process.env, CLIPMEM_CACHE: cache, CLIP_MEM_CACHE: cache };

const run = sampleResults();
const runFile = path.join(inputs, 'run.json');
fs.writeFileSync(runFile, [run.header, ...run.scenarios, run.end].map((l) => JSON.stringify(l)).join('\n') + '\n');
fs.writeFileSync(path.join(inputs, 'null.json'), 'null\n');
const notExecutable = path.join(inputs, 'script.sh');
fs.writeFileSync(notExecutable, 'true\n', { mode: 0o644 });

const sizes = ['0', '100', '1.5', '-5G', '12Q', 'abc', '', '1e30', '4095', '200T', '0.5K'];
const counts = ['0', '-3', 'abc', '1.5', '1e9', '', '99999999999999999999', '0x10'];
const durations = ['0', '-1', 'abc', '1e9', '', '8d', '700000'];
const missing = '/nonexistent/x';

/** [argv, the option the message must name]: each starts work only if its validation is broken. */
const table: [string[], string][] = [];
const add = (argv: string[], option: string) => table.push([argv, option]);
const marker = ['--', 'touch', 'MARKER'];
for (const limit of ['--limit-as', '--limit-data', '--limit-mem']) {
  for (const value of sizes) {
    add(['trace', limit, value, ...marker], limit);
    add(['run', 'basic-ops', limit, value], limit);
  }
  add(['fit', limit, '0'], limit);
}
add(['trace', '--limit-as', '1G', '--limit-as', '2G', ...marker], '--limit-as');
for (const value of durations) {
  add(['trace', '--timeout', value, ...marker], '--timeout');
  add(['run', 'basic-ops', '--timeout', value], '--timeout');
}
for (const value of counts) {
  for (const option of ['--batch', '--large-batch', '--threads', '--jobs'])
    add(['run', 'basic-ops', option, value], option);
  for (const option of ['--batch', '--threads', '--segments']) add(['estimate', option, value], option);
  for (const option of ['--max-batch', '--threads', '--segments'])
    add(['fit', '--limit-as', '2G', option, value], option);
  if (value !== '0' && value !== '1e9') add(['checkpoint', 'tiny', '--seed', value], '--seed');
}
for (const value of ['0', '1,0', 'a,b', '1,,4', '-1'])
  add(['estimate', '--calibrate-batches', value], '--calibrate-batches');
for (const option of ['--dtype', '--backend']) add(['run', 'basic-ops', option, 'nope'], option.slice(2));
add(['run', 'nope'], 'scenarios');
add(['run', 'basic-ops', 'small-mlp', '--jobs', '2', '--limit-mem', '1G'], '--jobs');
add(['run', 'basic-ops', 'small-mlp', '--jobs', '2', '--slurm'], '--jobs');
add(['run', 'basic-ops', '--model', missing], '--model');
add(['run', 'basic-ops', '--model', ''], '--model');
add(['run', 'basic-ops', '--markdown', `${missing}.md`], '--markdown');
add(['run', 'basic-ops', '--html', `${missing}.html`], '--html');
add(['run', 'basic-ops', '--json', 'same.out', '--markdown', './same.out'], '--markdown');
for (const rule of ['bogus', 'exit=300', 'exit=', 'output=', 'exit=a'])
  add(['fit', '--for', 'as', '--pass-if', rule, ...marker], '--pass-if');
add(['fit', '--limit-as', '2G', '--pass-if', 'exit=0'], '--pass-if');
add(['fit', '--limit-as', '2G', '--max', '3G'], '--max');
add(['run', 'basic-ops', '--markdown', ''], '--markdown');
add(['run', 'basic-ops', '--json', `${missing}.json`], '--json');
add(['run', 'basic-ops', '--json', inputs], '--json');
add(['trace', '--json', `${missing}.json`, ...marker], '--json');
add(['trace', '--fail', 'malloc:nth=0', ...marker], '--fail');
add(['trace', '--fail', 'nope:nth=1', ...marker], '--fail');
add(['trace', '--fail', 'malloc', ...marker], '--fail');
add(['trace', '--', inputs], inputs);
add(['trace', '--', notExecutable], notExecutable);
add(['trace', '--', 'no-such-program-clip-mem'], 'no-such-program-clip-mem');
add(['checkpoint', missing], 'model');
add(['checkpoint', 'tiny', '--format', 'fp8'], 'format');
add(['estimate', '--model', missing], '--model');
add(['estimate', '--phase', 'nope'], 'phase');
add(['estimate', '--phase', 'train', '--dtype', 'int8'], '--phase');
add(['fit'], '--limit-as');
add(['fit', '--limit-as', '2G', '--limit-mem', '2G'], '--limit-as');
add(['fit', '--limit-as', '2G', '--model', missing], '--model');
add(['fit', '--limit-as', '2G', '--verify=abc'], '--verify');
add(['native-probe', '--model', missing], '--model');
add(['run', '--model', '--', '--batch', '0'], '--');
add(['estimate', '--', 'x'], '--');
add(['native-probe', '--model', ''], '--model');
add(['native-probe', '--weights', 'nope'], 'weights');
add(['native-probe', '--json', `${missing}.json`], '--json');
add(['compare', runFile], 'arguments');
add(['compare', runFile, missing], 'NEW');
add(['compare', missing, runFile], 'BASE');
add(['compare', runFile, inputs], 'NEW');
add(['compare', runFile, runFile, '--max-growth', 'x'], '--max-growth');
add(['compare', runFile, runFile, '--min-bytes', '-1'], '--min-bytes');
add(['compare', runFile, runFile, '--min-ms', '-5'], '--min-ms');
add(['compare', runFile, runFile, '--json', `${missing}.json`], '--json');

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('every bad value is a usage error before any work: exit 2, the option named, no child, nothing written', (t) => {
  const started = Date.now();
  const results = runCliBatch(
    table.map(([argv]) => ({ argv, cwd: work })),
    { env },
  );
  for (const [index, result] of results.entries()) {
    const [argv, option] = table[index]!;
    const label = argv.join(' ');
    t.is(result.status, 2, `${label}: exit status\n${result.stderr}`);
    t.regex(result.stderr, /^clip-mem: /, `${label}: a clip-mem message`);
    t.regex(result.stderr, new RegExp(escape(option)), `${label}: names ${option}\n${result.stderr}`);
    t.notRegex(result.stderr, /\n\s+at .*:\d+:\d+/, `${label}: no stack trace`);
    t.is(result.stdout, '', `${label}: nothing on standard output`);
  }
  t.deepEqual(fs.readdirSync(work), [], 'nothing written, no child started (no MARKER)');
  t.deepEqual(fs.readdirSync(cache), [], 'nothing cached');
  t.log(`${table.length} cases in ${Date.now() - started} ms`);
});

test('--help of every command states its exit codes', (t) => {
  const commands = ['native-probe', 'trace', 'run', 'compare', 'checkpoint', 'estimate', 'fit', 'slurm'];
  const results = runCliBatch(
    commands.map((command) => ({ argv: [command, '--help'], cwd: work })),
    { env },
  );
  for (const [index, result] of results.entries()) {
    t.is(result.status, 0, commands[index]);
    t.regex(result.stdout.replace(/\s+/g, ' '), /Exit status: .*2 (on )?a usage error/, commands[index]);
  }
});

/** Where this machine's memory cgroups are mounted: the v1 memory hierarchy, else the v2 tree. */
const MEMORY_HIERARCHY = (() => {
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' '));
  const v1 = mounts.find((f) => f[f.indexOf('-') + 1] === 'cgroup' && f.at(-1)!.split(',').includes('memory'));
  return (v1 ?? mounts.find((f) => f[f.indexOf('-') + 1] === 'cgroup2'))![4]!;
})();

test('--limit-mem where no cgroup can be made: refused before any work (no checkpoint written, no child)', (t) => {
  // The memory hierarchy bind-mounted read-only in a private mount namespace: as root too, mkdir fails.
  const command = `mount -o bind,ro ${MEMORY_HIERARCHY} ${MEMORY_HIERARCHY} && exec "$@"`;
  for (const argv of [
    ['run', 'clip-load', '--limit-mem', '1G'],
    ['trace', '--limit-mem', '300M', ...marker],
    ['fit', '--limit-mem', '1500M', '--verify'],
    ['fit', '--for', 'mem', ...marker],
  ]) {
    const result = spawnSync('unshare', ['-m', 'sh', '-c', command, 'sh', process.execPath, CLI, ...argv], {
      cwd: work,
      env,
      encoding: 'utf8',
    });
    const label = argv.join(' ');
    t.is(result.status, 2, `${label}\n${result.stderr}`);
    t.regex(result.stderr, /^clip-mem: cannot create the cgroup .* for --limit-mem: EROFS/, label);
  }
  t.deepEqual(fs.readdirSync(work), [], 'no child started (no MARKER)');
  t.deepEqual(fs.readdirSync(cache), [], 'no checkpoint written');
});

/** mulberry32: the same 1,000 cases on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const GARBAGE = [
  '',
  '-',
  '--',
  '-5',
  'abc',
  '1e9',
  '0',
  '-0',
  'NaN',
  'Infinity',
  '💥',
  '../..',
  '%s',
  '{}',
  'null',
  ' 2 ',
];
const VALUES: Record<string, string[]> = {
  size: ['1G', '600M', '4096', '2GB', ...sizes],
  count: ['1', '2', '4', ...counts],
  duration: ['5', '1.5', '10s', ...durations],
  model: ['tiny', 'vit-b-32', missing, inputs, ''],
  file: ['out.json', `${missing}.json`, inputs, '-'],
  growth: ['5%', '0.05', '5', 'x', '-1%', '5000%'],
  dtype: ['fp32', 'fp16', 'int8', 'fp8'],
  fail: ['malloc:nth=1', 'mmap:above=1048576', 'malloc:nth=0', 'nope:nth=1', 'malloc'],
  phase: ['load', 'forward', 'train', 'nope'],
};
const OPTIONS: Record<string, [string, keyof typeof VALUES | 'boolean'][]> = {
  'native-probe': [
    ['--model', 'model'],
    ['--weights', 'dtype'],
    ['--json', 'file'],
  ],
  trace: [
    ['--limit-as', 'size'],
    ['--limit-data', 'size'],
    ['--limit-mem', 'size'],
    ['--timeout', 'duration'],
    ['--fail', 'fail'],
    ['--json', 'file'],
  ],
  run: [
    ['--limit-as', 'size'],
    ['--limit-mem', 'size'],
    ['--batch', 'count'],
    ['--large-batch', 'count'],
    ['--threads', 'count'],
    ['--jobs', 'count'],
    ['--timeout', 'duration'],
    ['--model', 'model'],
    ['--dtype', 'dtype'],
    ['--markdown', 'file'],
    ['--json', 'file'],
  ],
  compare: [
    ['--max-growth', 'growth'],
    ['--min-bytes', 'size'],
    ['--min-ms', 'count'],
    ['--allow-different', 'boolean'],
    ['--json', 'file'],
  ],
  checkpoint: [
    ['--format', 'dtype'],
    ['--seed', 'count'],
    ['--layout', 'boolean'],
    ['--json', 'file'],
  ],
  estimate: [
    ['--model', 'model'],
    ['--dtype', 'dtype'],
    ['--batch', 'count'],
    ['--phase', 'phase'],
    ['--segments', 'count'],
    ['--threads', 'count'],
    ['--json', 'file'],
  ],
  fit: [
    ['--limit-as', 'size'],
    ['--limit-data', 'size'],
    ['--model', 'model'],
    ['--max-batch', 'count'],
    ['--segments', 'count'],
    ['--phase', 'phase'],
    ['--verify', 'boolean'],
    ['--json', 'file'],
  ],
};
/** Commands whose valid lines would start minutes of work: every case of theirs carries one bad value. */
const EXPENSIVE = new Set(['run', 'checkpoint', 'estimate', 'fit']);
const ALWAYS_BAD: Record<string, string[]> = {
  run: ['--batch', '0'],
  checkpoint: ['--seed', 'abc'],
  estimate: ['--threads', '-1'],
  fit: ['--max-batch', '1e12'],
};

function fuzzCases(count: number, seed: number): CliCase[] {
  const next = random(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  const commands = Object.keys(OPTIONS);
  const cases: CliCase[] = [];
  for (let i = 0; i < count; i++) {
    const command = pick(commands);
    const argv = [command];
    if (command === 'compare') argv.push(pick([runFile, path.join(inputs, 'null.json'), missing]), runFile);
    if (command === 'checkpoint' && next() < 0.5) argv.push(pick(VALUES.model!));
    const n = Math.floor(next() * 4);
    for (let k = 0; k < n; k++) {
      const [option, kind] = pick(OPTIONS[command]!);
      const roll = next();
      if (kind === 'boolean') argv.push(roll < 0.8 ? option : `${option}=${pick(GARBAGE)}`);
      else if (roll < 0.1) argv.push(option);
      else if (roll < 0.3) argv.push(option, pick(GARBAGE));
      else if (roll < 0.4) argv.push(`${option}=${pick(VALUES[kind]!)}`);
      else argv.push(option, pick(VALUES[kind]!));
    }
    if (next() < 0.1) argv.push(pick(['--nope', 'stray', '-x', pick(GARBAGE)]));
    if (EXPENSIVE.has(command)) argv.push(...ALWAYS_BAD[command]!);
    if (command === 'trace') argv.push('--timeout', '5', '--', pick(['true', 'false', missing, inputs]));
    cases.push({ argv, cwd: work });
  }
  return cases;
}

test('1,000 seeded random command lines: no stack trace, no hang, exit 0, 1 or 2', (t) => {
  const started = Date.now();
  const cases = fuzzCases(1000, 15);
  const results = runCliBatch(cases, { env, caseTimeoutMs: 20_000 });
  t.is(results.length, 1000);
  const statuses = new Map<number, number>();
  for (const result of results) {
    const label = JSON.stringify(result.argv);
    statuses.set(result.status, (statuses.get(result.status) ?? 0) + 1);
    t.false(result.hung, `${label}: hung`);
    // trace exits with its command's status: 128 + signal when a limit the fuzz gave (a valid --limit-mem 4096,
    // say) got the command killed. clip-mem's own statuses are 0, 1 and 2.
    const own = result.argv[0] === 'trace' && result.status > 128 && result.status < 160;
    t.true(own || [0, 1, 2].includes(result.status), `${label}: exit ${result.status}\n${result.stderr}`);
    t.notRegex(result.stderr, /\n\s+at .*:\d+:\d+|UNCAUGHT|TypeError|RangeError/, `${label}: ${result.stderr}`);
    if (EXPENSIVE.has(result.argv[0]!)) t.is(result.status, 2, `${label}: refused before work\n${result.stderr}`);
  }
  t.log(`exit statuses ${JSON.stringify(Object.fromEntries(statuses))} in ${Date.now() - started} ms`);
});
