// `--json` means the same in every command (a file, or `-` / no file for standard output), and every
// command's JSON follows its versioned schema in schema/, checked here on real output.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { schemaErrors } from './helpers/schema';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
// One cache for the file: the estimate's runtime baseline is measured once, by the first command needing it.
const env = { ...process.env, CLIPMEM_CACHE: scratchDir('clip-mem-json-cache-') };

function cli(args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { cwd: repoRoot, encoding: 'utf8', env, timeout: 600_000 });
}

test("trace --json - writes the report alone on standard output (the program's output goes to standard error); it follows schema/trace.schema.json", (t) => {
  const result = cli(['trace', '--json', '-', '--', 'sh', '-c', 'echo from-the-program']);
  t.is(result.status, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  t.is(report.schema, 'clip-mem-trace/2');
  t.is(schemaErrors('trace', report), '');
  t.true(result.stderr.startsWith('from-the-program\n'));
  t.regex(result.stderr, /diagnosis: none/);
});

test('a bare --json is standard output too, and --json FILE writes the file', (t) => {
  const bare = cli(['trace', '--json', '--', 'true']);
  t.is(bare.status, 0, bare.stderr);
  t.is(schemaErrors('trace', JSON.parse(bare.stdout)), '');
  const file = path.join(scratchDir('clip-mem-json-'), 'trace.json');
  const toFile = cli(['trace', '--json', file, '--', 'true']);
  t.is(toFile.status, 0, toFile.stderr);
  t.is(toFile.stdout, '');
  t.is(schemaErrors('trace', JSON.parse(fs.readFileSync(file, 'utf8'))), '');
});

test('--json into a directory that does not exist is a usage error before anything runs', (t) => {
  const marker = path.join(scratchDir('clip-mem-json-'), 'ran');
  const result = cli(['trace', '--json', '/nonexistent/dir/x.json', '--', 'touch', marker]);
  t.is(result.status, 2);
  t.regex(result.stderr, /--json \/nonexistent\/dir\/x\.json: cannot write there/);
  t.false(fs.existsSync(marker));
  const run = cli(['run', 'basic-ops', '--markdown', '/nonexistent/dir/x.md']);
  t.is(run.status, 2);
  t.regex(run.stderr, /--markdown \/nonexistent\/dir\/x\.md: cannot write there/);
});

test('run --json - streams the JSON lines on standard output and the summary on standard error', (t) => {
  const result = cli(['run', 'clip-processor', '--model', 'tiny', '--batch', '1', '--json', '-']);
  t.is(result.status, 0, result.stderr);
  const lines = result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { kind: string });
  t.deepEqual(
    lines.map((line) => line.kind),
    ['run', 'scenario', 'end'],
  );
  for (const line of lines) t.is(schemaErrors('clip-mem-run', line), '');
  t.regex(result.stderr, /clip-processor/);
});

test('estimate --json and fit --json follow their schemas', (t) => {
  const estimate = cli(['estimate', '--model', 'tiny', '--json']);
  t.is(estimate.status, 0, estimate.stderr);
  const estimates = JSON.parse(estimate.stdout);
  t.is(estimates.schema, 'clip-mem-estimate/1');
  t.is(schemaErrors('estimate', estimates), '');
  const fit = cli(['fit', '--model', 'tiny', '--limit-mem', '1500M', '--phase', 'forward', '--json', '-']);
  t.is(fit.status, 0, fit.stderr);
  const plan = JSON.parse(fit.stdout);
  t.is(plan.schema, 'clip-mem-fit/1');
  t.is(schemaErrors('fit', plan), '');
});

test('native-probe --json follows its schema through the same option', (t) => {
  const probe = cli(['native-probe', '--json', '-']);
  t.is(probe.status, 0, probe.stderr);
  t.is(schemaErrors('native-probe', JSON.parse(probe.stdout)), '');
});
