// `clip-mem fit -- <command>`: the smallest limit a command needs, proven by runs on real processes: the
// limit it prints passes, one step below fails, with the diagnosis of that failure.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { schemaErrors } from './helpers/schema';
import { allocProgram } from './helpers/trace';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const MiB = 2 ** 20;

function cli(args: string[], { timeout = 300_000 } = {}) {
  return spawnSync(process.execPath, [bin, ...args], { cwd: repoRoot, encoding: 'utf8', timeout });
}

interface Fit {
  outcome: string;
  passes: number | null;
  fails: number | null;
  step: number;
  recommended: number | null;
  say: string[];
  runs: { limit: number; passed: boolean; cause: string; evidence: string[] }[];
  maxRuns: number;
}

function fit(args: string[], command: string[]): { status: number | null; fit: Fit; stdout: string; stderr: string } {
  const result = cli(['fit', ...args, '--json', '-', '--', ...command]);
  const parsed = JSON.parse(result.stdout) as Fit;
  return { status: result.status, fit: parsed, stdout: result.stdout, stderr: result.stderr };
}

function trace(option: string, bytes: number, command: string[]) {
  const result = cli(['trace', option, String(bytes), '--json', '-', '--', ...command]);
  // The report follows the program's own output on standard output.
  const report = JSON.parse(result.stdout.slice(result.stdout.search(/^\{$/m))) as { diagnosis: { cause: string } };
  return { status: result.status, cause: report.diagnosis.cause };
}

test('--for data: a C program committing 64 MiB needs 64 MiB and its start-up VmData, found to one step', (t) => {
  const need = 64 * MiB;
  const command = [allocProgram, 'commit', String(need)];
  const { status, fit: result, stderr } = fit(['--for', 'data', '--step', '1M'], command);
  t.is(status, 0, stderr);
  t.is(schemaErrors('fit', result), '');
  t.is(result.outcome, 'found');
  t.is(result.passes! - result.fails!, MiB);
  t.true(result.passes! >= need && result.passes! <= need + 8 * MiB, `passes at ${result.passes}`);
  t.is(result.say[0], `ulimit -d ${Math.ceil(result.recommended! / 1024)}`);
  // Search runs within the bound, plus the top of the range and the repeat of the boundary.
  t.true(result.runs.length <= result.maxRuns + 3);
  t.true(result.runs.filter((r) => !r.passed).every((r) => r.cause === 'data-limit'));
  // What it says to ask for passes; one step below fails, for lack of data segment.
  t.is(trace('--limit-data', result.recommended!, command).status, 0);
  t.deepEqual(trace('--limit-data', result.fails!, command), { status: 1, cause: 'data-limit' });
  t.regex(stderr, /run 1 of at most \d+/);
});

test('--for mem: python3 touching 96 MiB gets the cgroup limit it passes under, and one step below is an OOM kill', (t) => {
  const command = ['python3', '-c', 'b = bytearray(96 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1'];
  const { status, fit: result, stderr } = fit(['--for', 'mem', '--step', '2M', '--runs', '3'], command);
  t.is(status, 0, stderr);
  t.is(schemaErrors('fit', result), '');
  t.is(result.outcome, 'found');
  t.true(result.passes! > 96 * MiB);
  t.regex(result.say.join(' '), /docker run --memory=\d+m/);
  t.true(result.runs.filter((r) => !r.passed).every((r) => r.cause === 'cgroup-oom-kill'));
  t.is(trace('--limit-mem', result.recommended!, command).status, 0);
});

test('--for mem -- clip-mem run clip-train: the cgroup limit proven by runs agrees with the CLIP estimate fit plans from, within 5%', (t) => {
  const estimate = JSON.parse(cli(['estimate', '--phase', 'train', '--batch', '2', '--json', '-']).stdout) as {
    estimates: { phase: string; predicted: { rss: number } }[];
  };
  const predicted = estimate.estimates.find((e) => e.phase === 'train')!.predicted.rss;
  // A 32 MiB step (1.5% of the boundary) keeps it to about ten runs of the training step.
  const result = cli(
    ['fit', '--for', 'mem', '--runs', '1', '--step', '32M', '--json', '-', '--'].concat(
      process.execPath,
      bin,
      'run',
      'clip-train',
      '--batch',
      '2',
    ),
    { timeout: 540_000 },
  );
  const found = JSON.parse(result.stdout) as Fit;
  t.is(schemaErrors('fit', found), '');
  // The boundary may move by a step on its repeat (the page cache the cgroup reclaims differs from run to
  // run): fit then says flaky and exits 1, and the limits it saw pass are still the ones to compare.
  t.deepEqual([found.outcome, result.status], found.outcome === 'flaky' ? ['flaky', 1] : ['found', 0], result.stderr);
  const ratio = predicted / found.passes!;
  t.true(Math.abs(ratio - 1) <= 0.05, `estimate ${predicted} B, proven ${found.passes} B: ratio ${ratio.toFixed(3)}`);
  // The top of the range, the search within its bound, the boundary's repeat.
  t.true(found.runs.length <= 1 + found.maxRuns + 2, `${found.runs.length} runs, at most ${found.maxRuns} searching`);
  // clip-mem run exits 1 when its scenario child is OOM-killed: the kill is in the evidence, the cause stays
  // unknown since the runner's exit code alone does not say it came from the kill.
  for (const run of found.runs.filter((r) => !r.passed)) {
    t.is(run.cause, 'unknown');
    t.true(
      run.evidence.some((e) => /was killed by the kernel OOM killer in cgroup /.test(e)),
      run.evidence.join('\n'),
    );
  }
});

test('--for slurm speaks in sbatch --mem, rounded up to MiB', (t) => {
  const command = ['python3', '-c', 'b = bytearray(32 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1'];
  const { status, fit: result } = fit(['--for', 'slurm', '--runs', '1'], command);
  t.is(status, 0);
  t.is(result.say[0], `sbatch --mem=${Math.ceil(result.recommended! / MiB)}M`);
});

test('a command that fails without any limit: nothing to fit, said at once', (t) => {
  const { status, fit: result } = fit([], ['sh', '-c', 'exit 3']);
  t.is(status, 1);
  t.is(result.outcome, 'fails-without-limit');
  t.is(result.runs.length, 0);
  const human = cli(['fit', '--', 'sh', '-c', 'exit 3']);
  t.regex(human.stdout, /fails without any limit: nothing to fit/);
});

test('a flaky command (passes, then fails, with nothing changed) is reported as flaky, not as a boundary', (t) => {
  const counter = path.join(scratchDir('clip-mem-flaky-'), 'n');
  const script = `n=$(cat ${counter} 2>/dev/null || echo 0); echo $((n + 1)) > ${counter}; [ $((n % 2)) -eq 0 ]`;
  const { status, fit: result } = fit(['--runs', '2'], ['sh', '-c', script]);
  t.is(status, 1);
  t.is(result.outcome, 'flaky');
  t.is(result.recommended, null);
});

test('a --limit-* option with a command, or a bad --runs, is a usage error before anything runs', (t) => {
  const marker = path.join(scratchDir('clip-mem-fit-usage-'), 'ran');
  for (const args of [
    ['--limit-mem', '1G'],
    ['--runs', '0'],
    ['--step', '100'],
  ]) {
    const result = cli(['fit', ...args, '--', 'touch', marker]);
    t.is(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
  }
  t.false(require('node:fs').existsSync(marker));
});

test('trace prints the least the failed run needed and the fit command that proves the real minimum', (t) => {
  const command = [allocProgram, 'commit', String(64 * MiB)];
  const result = cli(['trace', '--limit-data', '32M', '--json', '-', '--', ...command]);
  const report = JSON.parse(result.stdout.slice(result.stdout.search(/^\{$/m))) as {
    failures: { vmData: number; size: number }[];
    fix: { needAtLeast: number; text: string; command: string };
  };
  t.is(schemaErrors('trace', report), '');
  const failure = report.failures[0]!;
  t.is(report.fix.needAtLeast, failure.vmData + failure.size);
  t.regex(report.fix.text, /^VmData .* \+ 64 MiB requested: `ulimit -d` needs at least \d+ KiB/);
  t.is(report.fix.command, `clip-mem fit --for data -- ${command.join(' ')}`);
  t.regex(result.stderr, /fix: VmData/);
  // The command it prints finds a limit that passes, no lower than that least need (to the page).
  const proven = fit(['--for', 'data', '--step', '1M', '--runs', '1'], command).fit;
  t.is(proven.outcome, 'found');
  t.true(proven.passes! >= report.fix.needAtLeast - 4096);
});

test('--pass-if: an exit code and a text in the output define passing; a run that exits as asked without the text fails', (t) => {
  const need = 48 * MiB;
  // Exits 3 whether the allocation worked or not: only the printed "done" tells them apart.
  const command = ['sh', '-c', `${allocProgram} commit ${need} && echo done; exit 3`];
  const plain = fit(['--for', 'data', '--step', '1M', '--runs', '1'], command);
  t.is(plain.fit.outcome, 'fails-without-limit');
  const ruled = fit(
    ['--for', 'data', '--step', '1M', '--runs', '1', '--pass-if', 'exit=3', '--pass-if', 'output=done'],
    command,
  );
  t.is(ruled.status, 0, ruled.stderr);
  t.is(schemaErrors('fit', ruled.fit), '');
  t.is(ruled.fit.outcome, 'found');
  t.true(ruled.fit.passes! >= need && ruled.fit.passes! - ruled.fit.fails! === MiB);
  const failed = (
    ruled.fit as unknown as { runs: { passed: boolean; exit: { code: number }; evidence: string[] }[] }
  ).runs.filter((r) => !r.passed);
  t.true(failed.length > 0 && failed.every((r) => r.exit.code === 3 && r.evidence[0] === 'its output lacked "done"'));
  t.regex(ruled.stderr, /passing means: exit 3 and "done" in its output/);
});

test('SIGINT to fit -- <command>: the running child killed, no further run, the runs so far in the JSON, exit 130', async (t) => {
  const json = path.join(scratchDir('clip-mem-fit-stop-'), 'fit.json');
  const child = spawn(
    process.execPath,
    [bin, 'fit', '--for', 'as', '--runs', '3', '--json', json, '--', 'sh', '-c', 'echo ready; sleep 60'],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  let stderr = '';
  await new Promise<void>((resolve) =>
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes('without a limit: run 1 of 3')) resolve();
    }),
  );
  const status = await new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGINT');
  });
  t.is(status, 130, stderr);
  const result = JSON.parse(fs.readFileSync(json, 'utf8')) as Fit & { stoppedBy: string; free: unknown[] };
  t.is(schemaErrors('fit', result), '');
  t.is(result.outcome, 'stopped');
  t.is(result.stoppedBy, 'SIGINT');
  t.is(result.free.length, 0, 'the stopped run is not a result');
  t.regex(stdout, /stopped by SIGINT after 0 run\(s\): no boundary proven/);
  t.false(stderr.includes('without a limit: run 2 of 3'), 'no further run started');
});
