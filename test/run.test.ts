// `clip-mem run` end to end, on real children under real limits. vit-b-32 only where the issue's
// figures need it (the seed's 101187584-byte allocation, the cgroup kill, the default run); the rest on tiny.
import test from 'ava';
import Ajv from 'ajv';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readResults, type ScenarioResult } from '../src/report/result';
import { inheritedMemoryLimit, readCgroups } from '../src/probe/cgroup';
import { clipMemCacheDir } from '../src/clip/synthetic';
import { resolveClipModel } from '../src/clip/checkpoint';
import { scratchDir } from './helpers/scratch';

// Tests that run several children, minutes each under load: ava's 10-minute inactivity timeout waits for them.
const LONG_TEST_MS = 20 * 60_000;

const root = path.resolve(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'clip-mem.js');
const MiB = 1024 * 1024;

const validate = new Ajv({ allErrors: true, allowUnionTypes: true }).compile(
  JSON.parse(fs.readFileSync(path.join(root, 'schema', 'clip-mem-run.schema.json'), 'utf8')),
);

/** Where a JSONL line breaks the versioned schema in schema/ ('' when it follows it). */
function schemaErrors(line: unknown): string {
  return validate(line) ? '' : JSON.stringify(validate.errors);
}

function tempDir(): string {
  return scratchDir('clip-mem-run-test-');
}

function run(args: string[]): {
  pid: number;
  status: number | null;
  stdout: string;
  stderr: string;
  results: ReturnType<typeof readResults>;
} {
  const json = path.join(tempDir(), 'run.json');
  const result = spawnSync(process.execPath, [bin, 'run', ...args, '--json', json], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  return {
    pid: result.pid,
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr,
    results: readResults(json),
  };
}

function scenario(results: ReturnType<typeof readResults>, name: string): ScenarioResult {
  const found = results.scenarios.find((s) => s.name === name);
  if (!found) throw new Error(`no ${name} in the results`);
  return found;
}

test.serial(
  'clip-load-copy under RLIMIT_AS with ~50 MiB of headroom: the 101187584-byte token embedding fails, with a fix that works',
  (t) => {
    // The headroom is measured, not guessed: VmSize when loading starts. V8 sizes its own reservations to
    // RLIMIT_AS, so that is read under a limit like the one tested: first from an unlimited run, then again
    // under the limit it gave, until the limit leaves ~50 MiB above it (the first large tensor does not fit).
    const baseline = run(['clip-load-copy']);
    t.is(baseline.status, 0, baseline.stdout + baseline.stderr);
    let bound = scenario(baseline.results, 'clip-load-copy').memory.vmSizeBefore! + 50 * MiB;
    // clip-load-copy fails first, and clip-load still runs after it (a failure never stops the others).
    let limited = run(['clip-load-copy', 'clip-load', '--limit-as', String(bound)]);
    for (let tries = 0; tries < 3 && scenario(limited.results, 'clip-load-copy').failure?.size !== 101187584; tries++) {
      bound = scenario(limited.results, 'clip-load-copy').memory.vmSizeBefore! + 50 * MiB;
      limited = run(['clip-load-copy', 'clip-load', '--limit-as', String(bound)]);
    }
    t.is(limited.status, 1);
    const copy = scenario(limited.results, 'clip-load-copy');
    t.is(copy.status, 'failed');
    t.is(copy.failure!.size, 101187584);
    t.is(copy.failure!.errnoName, 'ENOMEM');
    t.regex(copy.failure!.phase, /text_model\.embeddings\.token_embedding\.weight/);
    t.is(copy.diagnosis.cause, 'address-space');
    t.regex(
      limited.stdout,
      /FAIL clip-load-copy[^]*\(101,187,584 B \(97 MiB\)\) failed with ENOMEM during "text_model\.embeddings\.token_embedding\.weight"/,
    );
    t.is(copy.analysis.required! - copy.analysis.available! > 0, true);
    for (const line of limited.results.scenarios) t.is(schemaErrors(line), '');

    // clip-load: the whole file's read-only mapping, its exact length, fails under the same bound.
    const mapped = scenario(limited.results, 'clip-load');
    const fileSize = fs.statSync(path.join(clipMemCacheDir(), 'clip-vit-b-32-fp32-seed0-v1.safetensors')).size;
    t.is(mapped.status, 'failed');
    t.is(mapped.failure!.fn, 'mmap');
    t.is(mapped.failure!.size, fileSize);
    t.is(mapped.diagnosis.cause, 'address-space');

    // The fix offered for the copy load: raise the address-space limit to a computed bound. It works.
    const raise = copy.fixes.find((f) => f.kind === 'raise-limit');
    t.truthy(raise, JSON.stringify(copy.fixes));
    t.falsy(
      copy.fixes.find((f) => f.kind === 'dtype'),
      'fp16 (302 MB) cannot fit in 50 MiB: no dtype fix',
    );
    const target = Number(/--limit-as (\d+)M/.exec(raise!.command!)![1]) * MiB;
    const fixed = run(['clip-load-copy', '--limit-as', String(target)]);
    t.is(fixed.status, 0, fixed.stdout);

    // The same bound as RLIMIT_DATA does not fail the mapping, and says why.
    const data = run(['clip-load', '--limit-data', String(bound)]);
    t.is(data.status, 0, data.stdout);
    t.is(scenario(data.results, 'clip-load').status, 'passed');
    t.regex(data.stdout, /read-only file mappings are not data, so RLIMIT_DATA .* does not count them/);
  },
);

test.serial(
  'clip-train under a 1 GiB cgroup: cgroup-oom-kill with the last phase and counters, and no cgroup left',
  (t) => {
    const limited = run(['clip-train', '--limit-mem', '1G']);
    t.is(limited.status, 1);
    const train = scenario(limited.results, 'clip-train');
    t.is(train.diagnosis.cause, 'cgroup-oom-kill');
    t.is(train.exit.signal, 'SIGKILL');
    t.regex(train.lastPhase, /train/);
    // Killed mid-scenario, the child still handed over where it started (the report it wrote first).
    t.true(train.memory.vmSizeBefore! > 0 && train.memory.rssBefore! > 0, JSON.stringify(train.memory));
    t.is(train.memory.rssAfter, null);
    t.true(Number(train.figures.mallocArenaHeaps) > 0, JSON.stringify(train.figures));
    t.true(
      train.diagnosis.evidence.some((e) => /last seen before the kill: phase ".+", RSS .*, heap /.test(e)),
      train.diagnosis.evidence.join('\n'),
    );
    t.true(train.fixes.some((f) => f.kind === 'slurm-mem'));
    t.deepEqual(leftoverCgroups(limited.pid), []);
  },
);

/** The child groups (clipmem-<runner pid>-<n>) a runner left under this process's own memory cgroup. */
function leftoverCgroups(runnerPid: number): string[] {
  const own = readCgroups().hierarchies[0]?.groups[0]?.directory;
  if (!own) return [];
  return fs.readdirSync(own).filter((name) => name.startsWith(`clipmem-${runnerPid}-`));
}

test.serial('killing the runner keeps every finished scenario in the JSONL and leaves no cgroup behind', async (t) => {
  const json = path.join(tempDir(), 'run.json');
  const child = spawn(
    process.execPath,
    [bin, 'run', 'basic-ops', 'clip-train', 'small-mlp', '--model', 'tiny', '--limit-mem', '2G', '--json', json],
    { stdio: 'ignore' },
  );
  // As soon as the first scenario's line is on disk, the second one is running under its cgroup.
  const deadline = Date.now() + 120_000;
  while (
    Date.now() < deadline &&
    !(fs.existsSync(json) && fs.readFileSync(json, 'utf8').includes('"kind":"scenario"'))
  ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  t.is(code, 143);
  const results = readResults(json);
  t.deepEqual(
    results.scenarios.map((s) => s.name),
    ['basic-ops'],
  );
  t.is(results.end, null);
  t.deepEqual(leftoverCgroups(child.pid!), []);
});

test.serial('every scenario on tiny: reports written, reproducible commands, --help lists the scenarios', (t) => {
  const dir = tempDir();
  const md = path.join(dir, 'run.md');
  const html = path.join(dir, 'run.html');
  const result = run(['--model', 'tiny', '--markdown', md, '--html', html]);
  t.is(result.status, 0, result.stdout + result.stderr);
  t.deepEqual(
    result.results.scenarios.map((s) => s.name),
    [
      'basic-ops',
      'small-mlp',
      'clip-processor',
      'clip-load',
      'clip-load-copy',
      'clip-forward',
      'clip-train',
      'large-batch',
    ],
  );
  t.true(result.results.scenarios.every((s) => s.status === 'passed'));
  t.is(result.results.end!.passed, 8);
  const train = scenario(result.results, 'clip-train');
  t.true(train.memory.rssPeak! > train.memory.rssBefore!);
  t.true(train.timeline.length > 2);
  t.is(
    train.command,
    'clip-mem run clip-train --model tiny --dtype fp32 --batch 2 --backend auto --threads ' +
      result.results.header.options.threads,
  );
  t.regex(fs.readFileSync(md, 'utf8'), /8 of 8 scenarios passed/);
  for (const line of [result.results.header, ...result.results.scenarios, result.results.end])
    t.is(schemaErrors(line), '');
  t.is((fs.readFileSync(html, 'utf8').match(/<svg /g) ?? []).length, 8);
  const help = spawnSync(process.execPath, [bin, 'run', '--help'], { encoding: 'utf8' });
  for (const name of [
    'basic-ops',
    'small-mlp',
    'clip-processor',
    'clip-load',
    'clip-load-copy',
    'clip-forward',
    'clip-train',
    'large-batch',
  ]) {
    t.regex(help.stdout, new RegExp(`\\n  ${name} `));
  }
});

test.serial('--jobs 2: two children at once, the longest started first, results in the order asked for', (t) => {
  // Inside a memory-limited cgroup (a container, a Slurm job) the scenarios share the limit: refused.
  if (inheritedMemoryLimit() !== null) {
    const refused = spawnSync(process.execPath, [bin, 'run', 'clip-load', 'clip-processor', '--jobs', '2'], {
      encoding: 'utf8',
    });
    t.is(refused.status, 2);
    t.regex(refused.stderr, /--jobs: this runs in a cgroup limited to /);
    return;
  }
  const dir = tempDir();
  const json = path.join(dir, 'run.json');
  const result = spawnSync(
    process.execPath,
    [bin, 'run', 'clip-load', 'clip-processor', 'clip-load-copy', '--model', 'tiny', '--jobs', '2', '--json', json],
    { encoding: 'utf8', timeout: 600_000 },
  );
  t.is(result.status, 0, result.stdout + result.stderr);
  const results = readResults(json);
  t.deepEqual(
    results.scenarios.map((s) => s.name),
    ['clip-load', 'clip-processor', 'clip-load-copy'],
  );
  t.is(results.header.options.jobs, 2);
  t.regex(results.header.command, / --jobs 2 --json /);
  t.regex(result.stdout, /2 scenarios at once/);
  // They overlapped: the whole run took less than its scenarios one after another.
  const total = results.scenarios.reduce((sum, s) => sum + s.wallMs, 0);
  t.true(results.end!.wallMs < total, `run ${results.end!.wallMs} ms, scenarios ${total} ms in all`);
  // The longest by the catalog started first (clip-load-copy, then clip-processor beside it); the progress
  // on standard error says so.
  t.deepEqual(
    [...result.stderr.matchAll(/^\[\d\/3\] (\S+) +0\.0 s +starting/gm)].map((m) => m[1]),
    ['clip-load-copy', 'clip-processor', 'clip-load'],
  );
  for (const line of [results.header, ...results.scenarios, results.end]) t.is(schemaErrors(line), '');
});

test.serial('the default run: all eight scenarios pass on vit-b-32, and compare gates a 10% regression', (t) => {
  t.timeout(LONG_TEST_MS);
  const result = run([]);
  t.is(result.status, 0, result.stdout + result.stderr);
  t.is(result.results.header.options.model, 'vit-b-32');
  t.is(result.results.scenarios.length, 8);
  t.true(
    result.results.scenarios.every((s) => s.status === 'passed'),
    result.stdout,
  );
  t.regex(result.stdout, /8 passed, 0 failed/);

  // compare: the same run passes; one with every train figure 10% larger fails.
  const dir = tempDir();
  const base = path.join(dir, 'base.json');
  const worse = path.join(dir, 'worse.json');
  const lines =
    JSON.stringify(result.results.header) +
    '\n' +
    result.results.scenarios.map((s) => JSON.stringify(s)).join('\n') +
    '\n';
  fs.writeFileSync(base, lines);
  const regressed = result.results.scenarios.map((s) =>
    s.name === 'clip-train'
      ? { ...s, wallMs: s.wallMs * 1.1, memory: { ...s.memory, rssPeak: Math.round(s.memory.rssPeak! * 1.1) } }
      : s,
  );
  fs.writeFileSync(
    worse,
    JSON.stringify(result.results.header) + '\n' + regressed.map((s) => JSON.stringify(s)).join('\n') + '\n',
  );
  const same = spawnSync(process.execPath, [bin, 'compare', base, base], { encoding: 'utf8' });
  t.is(same.status, 0, same.stdout);
  const gate = spawnSync(process.execPath, [bin, 'compare', base, worse, '--max-growth', '5%'], { encoding: 'utf8' });
  t.is(gate.status, 1, gate.stdout);
  t.regex(gate.stdout, /clip-train +rssPeak .* \+10\.0% +REGRESSION/);
  t.regex(gate.stdout, /clip-train +wallMs .* \+10\.0% +REGRESSION/);
});

test.serial(
  'clip-train under RLIMIT_AS between one AdamW moment and two: the holders at the failure name the weights and the moments by their phase',
  (t) => {
    // The training step allocates the second moment after the first: 3300M leaves room for the weights and
    // one moment (VmSize 3.04 GiB here), not for the other. Their blocks share every native frame (node's
    // ArrayBuffer allocator): the phase each was allocated in tells them apart.
    const result = run(['clip-train', '--limit-as', '3300M']);
    const train = scenario(result.results, 'clip-train');
    t.is(train.status, 'failed');
    t.is(train.failure!.size, 605109252, 'the second moment: one float32 copy of the parameters');
    t.regex(train.failure!.phase, /^train AdamW moments/);
    const holders = train.diagnosis.evidence.find((e) => e.startsWith('at failure #1: '));
    t.truthy(holders, train.diagnosis.evidence.join('\n'));
    t.regex(holders!, /\b5\d\d MiB held by .* in phase "train weights \(float32 parameters\)"/);
    t.regex(holders!, /, 5\d\d MiB by .* in phase "train AdamW moments \(two float32 copies of the parameters\)"/);
  },
);

test.serial(
  'dtype and MALLOC_ARENA_MAX fixes are offered only when the measured headroom supports them, and then they work',
  (t) => {
    const baseline = run(['clip-load-copy']);
    const measured = scenario(baseline.results, 'clip-load-copy');
    const before = measured.memory.vmSizeBefore!;
    // What the load's threads may reserve besides the weights (a 64 MiB arena heap each, at most): then
    // fp32 weights (577 MiB) do not fit in 450 MiB of headroom above it, and fp16 (289 MiB) do.
    const { otherThreadsBefore, mallocArenaHeapsBefore } = measured.figures as Record<string, number>;
    const bound = before + Math.max(0, otherThreadsBefore! - mallocArenaHeapsBefore!) * 64 * MiB + 450 * MiB;
    const limited = run(['clip-load-copy', '--limit-as', String(bound)]);
    const copy = scenario(limited.results, 'clip-load-copy');
    t.is(copy.status, 'failed');
    t.is(copy.diagnosis.cause, 'address-space', copy.diagnosis.evidence.join('\n'));
    const dtype = copy.fixes.find((f) => f.kind === 'dtype');
    t.truthy(dtype, JSON.stringify(copy.fixes));
    t.regex(dtype!.text, /^fp16 weights need 302,55\d,\d{3} B/);
    const fixed = run(dtype!.command!.replace(/^clip-mem run /, '').split(' '));
    t.is(fixed.status, 0, fixed.stdout);

    // Node's threads each reserved a 64 MiB malloc arena: capping them returns more than is missing.
    const arena = copy.fixes.find((f) => f.kind === 'malloc-arena-max');
    t.truthy(arena, JSON.stringify(copy.fixes));
    t.regex(arena!.command!, /^MALLOC_ARENA_MAX=2 clip-mem run clip-load-copy /);
    const capped = spawnSync(
      process.execPath,
      [bin, ...arena!.command!.replace(/^MALLOC_ARENA_MAX=2 clip-mem /, '').split(' ')],
      {
        encoding: 'utf8',
        env: { ...process.env, MALLOC_ARENA_MAX: '2' },
      },
    );
    t.is(capped.status, 0, capped.stdout);
  },
);

test.serial(
  "with the estimate's runtime baseline measured, a cgroup kill gets the limit its batch needs, and that limit works",
  (t) => {
    t.timeout(LONG_TEST_MS);
    const env = { ...process.env, CLIP_MEM_CACHE: scratchDir('clip-mem-fix-estimate-') };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 600_000 });
    const baseline = cli(['estimate', '--model', 'tiny', '--phase', 'train']);
    t.is(baseline.status, 0, baseline.stderr);
    const json = path.join(tempDir(), 'run.json');
    // tiny's training step charges ~50 MiB to its cgroup: measured killed at 40M, 46M and 50M, passed at
    // 56M and 64M (at 50M it once passed: the kernel reclaimed file pages); 32M leaves a margin of ~20 MiB.
    const killed = cli(['run', 'clip-train', '--model', 'tiny', '--limit-mem', '32M', '--json', json]);
    t.is(killed.status, 1, killed.stdout);
    const train = scenario(readResults(json), 'clip-train');
    t.is(train.diagnosis.cause, 'cgroup-oom-kill');
    const slurm = train.fixes.filter((f) => f.kind === 'slurm-mem');
    t.is(slurm.length, 1, JSON.stringify(train.fixes));
    t.regex(
      slurm[0].text,
      /^train at batch 2 is predicted to need .* \(RSS, not calibrated: `clip-mem estimate --calibrate` narrows it\): in Slurm, `--mem` at least \d+M$/,
    );
    t.regex(slurm[0].command!, /^clip-mem run clip-train --model tiny .*--limit-mem \d+M$/);
    const fixed = cli(slurm[0].command!.replace(/^clip-mem /, '').split(' '));
    t.is(fixed.status, 0, fixed.stdout);
  },
);

/** The batch fix's number and its command, checked against the run's own limit option. */
function batchFix(result: ScenarioResult, limitOption: string): { batch: number; command: string } {
  const fix = result.fixes.find((f) => f.kind === 'batch');
  if (!fix) throw new Error(`no batch fix in ${JSON.stringify(result.fixes)}`);
  const batch = Number(/^batch (\d+) is predicted to need /.exec(fix.text)?.[1]);
  if (!fix.command!.includes(` --large-batch ${batch} `) || !fix.command!.endsWith(` ${limitOption}`))
    throw new Error(`the command does not run batch ${batch} ${limitOption}: ${fix.command}`);
  return { batch, command: fix.command! };
}

test.serial(
  'a large batch killed by its cgroup gets the largest batch the estimate fits, and that batch passes',
  (t) => {
    t.timeout(LONG_TEST_MS);
    const env = { ...process.env, CLIP_MEM_CACHE: scratchDir('clip-mem-fix-batch-') };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 600_000 });
    t.is(cli(['estimate', '--model', 'tiny', '--phase', 'forward']).status, 0);
    // tiny at batch 4096 peaks at ~770 MiB RSS (activations ~150 KiB a sample): 400 MiB kills it.
    const json = path.join(tempDir(), 'run.json');
    const killed = cli([
      'run',
      'large-batch',
      '--model',
      'tiny',
      '--large-batch',
      '4096',
      '--limit-mem',
      '400M',
      '--json',
      json,
    ]);
    t.is(killed.status, 1, killed.stdout);
    const large = scenario(readResults(json), 'large-batch');
    t.is(large.diagnosis.cause, 'cgroup-oom-kill');
    const { batch, command } = batchFix(large, '--limit-mem 400M');
    t.true(batch > 1 && batch < 4096, String(batch));
    t.regex(
      killed.stdout,
      new RegExp(`fix: batch ${batch} is predicted to need .* it fits under 400 MiB; batch ${batch + 1} would not`),
    );
    const fixed = cli(command.replace(/^clip-mem /, '').split(' '));
    t.is(fixed.status, 0, `${command}\n${fixed.stdout}`);
  },
);

test.serial(
  'under RLIMIT_AS the batch fix waits for a calibrated estimate, and then the batch and the limit it proposes both pass',
  (t) => {
    t.timeout(LONG_TEST_MS);
    const env = { ...process.env, CLIP_MEM_CACHE: scratchDir('clip-mem-fix-batch-as-') };
    const cli = (args: string[]) =>
      spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 600_000 });
    t.is(cli(['estimate', '--model', 'tiny', '--phase', 'forward']).status, 0);
    // tiny at batch 4096 peaks at ~2.17 GiB of VmSize: 1700M fails it in the forward.
    const failing = ['run', 'large-batch', '--model', 'tiny', '--large-batch', '4096', '--limit-as', '1700M'];
    const runFailing = () => {
      const json = path.join(tempDir(), 'run.json');
      const result = cli([...failing, '--json', json]);
      t.is(result.status, 1, result.stdout);
      const large = scenario(readResults(json), 'large-batch');
      t.is(large.diagnosis.cause, 'address-space', large.diagnosis.evidence.join('\n'));
      return large;
    };
    // The uncalibrated VmSize model under-predicts this batch by ~20%: no batch or limit from it, and no
    // MALLOC_ARENA_MAX from the failed allocation's shortfall alone (the phase needs far more).
    // It says how to calibrate instead; that command is what makes the batch fix possible.
    const uncalibrated = runFailing();
    t.deepEqual(
      uncalibrated.fixes.filter((f) => f.kind === 'batch' || f.kind === 'malloc-arena-max'),
      [],
      JSON.stringify(uncalibrated.fixes),
    );
    const calibrate = uncalibrated.fixes.find((f) => f.kind === 'calibrate');
    t.regex(
      calibrate?.command ?? '',
      /^clip-mem estimate --calibrate --model tiny --dtype fp32 --threads \d+ --phase forward --calibrate-batches 1024,4096$/,
    );
    t.is(cli(calibrate!.command!.replace(/^clip-mem /, '').split(' ')).status, 0);
    // --phase forward measured the forward only: load and train keep no calibration of their own.
    const stored = JSON.parse(cli(['estimate', '--model', 'tiny', '--json']).stdout) as {
      estimates: { phase: string; calibration: { kind: string } }[];
    };
    t.deepEqual(
      stored.estimates.map((e) => [e.phase, e.calibration.kind]),
      [
        ['load', 'none'],
        ['forward', 'this config'],
        ['train', 'none'],
      ],
    );
    const calibrated = runFailing();
    const { batch, command } = batchFix(calibrated, '--limit-as 1700M');
    t.true(batch > 1 && batch < 4096, String(batch));
    const raise = calibrated.fixes.find((f) => f.kind === 'raise-limit');
    t.regex(
      raise!.text,
      /^forward at batch 4096 is predicted to need .* \(VmSize, uncertainty included\): raise `ulimit -v` to at least /,
    );
    for (const fix of [command, raise!.command!]) {
      const rerun = cli(fix.replace(/^clip-mem /, '').split(' '));
      t.is(rerun.status, 0, `${fix}\n${rerun.stdout}`);
    }
  },
);

test.serial(
  "onnxruntime's library refused by the dynamic loader under RLIMIT_AS is address space, not 'not-memory'",
  (t) => {
    const before = scenario(run(['clip-forward', '--model', 'tiny']).results, 'clip-forward').memory.vmSizeBefore!;
    // libonnxruntime.so.1 maps ~45 MB: 16 MiB above the VmSize the scenario starts from cannot hold it.
    const limited = run(['clip-forward', '--model', 'tiny', '--limit-as', String(before + 16 * MiB)]);
    const forward = scenario(limited.results, 'clip-forward');
    t.is(forward.status, 'failed');
    t.regex(forward.error ?? '', /failed to map segment from shared object/);
    t.is(forward.diagnosis.cause, 'address-space');
    t.regex(forward.diagnosis.evidence[0], /^the dynamic loader could not map libonnxruntime\.so\.1 /);
  },
);

test.serial('--timeout kills the child with its process group, and the run goes on to the next scenario', (t) => {
  const result = run(['clip-train', 'clip-load', '--model', 'tiny', '--timeout', '0.3']);
  t.is(result.status, 1);
  const train = scenario(result.results, 'clip-train');
  t.true(train.timedOut);
  t.is(train.exit.signal, 'SIGKILL');
  t.regex(train.diagnosis.evidence[0], /^killed with its process group after the 0\.3 s timeout/);
  t.deepEqual(
    result.results.scenarios.map((s) => s.name),
    ['clip-train', 'clip-load'],
  );
});

test.serial(
  'clip-load-copy under RLIMIT_DATA: data-limit, and both fixes work (ulimit -d for the weights left, or load by mmap)',
  (t) => {
    const limited = run(['clip-load-copy', '--limit-data', '300M']);
    const copy = scenario(limited.results, 'clip-load-copy');
    t.is(copy.status, 'failed');
    t.is(copy.diagnosis.cause, 'data-limit', copy.diagnosis.evidence.join('\n'));
    const raise = copy.fixes.find((f) => f.kind === 'raise-limit');
    const mmap = copy.fixes.find((f) => f.kind === 'load-path');
    t.regex(raise!.text, /of weights still to load from ".+" on/);
    t.regex(mmap!.command!, /^clip-mem run clip-load .*--limit-data 300M$/);
    for (const fix of [raise!, mmap!]) {
      const rerun = run(fix.command!.replace(/^.*clip-mem run /, '').split(' '));
      t.is(rerun.status, 0, `${fix.command}\n${rerun.stdout}`);
    }
  },
);

test.serial(
  '--limit-mem with the checkpoint already in the page cache: the pages charged elsewhere are said, with the cold-start figure',
  (t) => {
    const weights = resolveClipModel('vit-b-32', { format: 'fp32' }).weightsFile;
    const size = fs.statSync(weights).size;
    // clip-forward reads every weight: cold, the run's cgroup is charged for the whole file.
    const load = () => scenario(run(['clip-forward', '--batch', '1', '--limit-mem', '2G']).results, 'clip-forward');
    // Out of the page cache (written back first: dirty pages cannot be dropped; then coreutils' documented
    // way to drop a file's cached pages), then run: only what checking the header read in, nothing to say.
    // Another test file running beside this one may read the same checkpoint back in: drop it again then.
    let cold: ScenarioResult;
    let attempts = 0;
    do {
      execFileSync('sync', [weights]);
      execFileSync('dd', [`if=${weights}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' });
      cold = load();
    } while (cold.memory.checkpointCached! >= 2 ** 20 && ++attempts < 3);
    t.true(cold.memory.checkpointCached! < 2 ** 20, `${cold.memory.checkpointCached} cached`);
    t.is(cold.analysis.note, undefined);
    // Read whole (cached, charged to this test's cgroup), then run: the run's cgroup is not charged for it.
    fs.readFileSync(weights);
    const warm = load();
    t.is(schemaErrors(warm), '');
    t.true(warm.memory.checkpointCached! > 0.95 * size, `${warm.memory.checkpointCached} of ${size} cached`);
    t.true(
      warm.memory.cgroupPeak! < cold.memory.cgroupPeak! - size / 2,
      `the warm run is charged less: ${warm.memory.cgroupPeak} vs ${cold.memory.cgroupPeak}`,
    );
    t.regex(
      warm.analysis.note!,
      /^the 5\d\d MiB of the checkpoint already in the page cache were charged elsewhere, not in this figure; a cold start that reads them all is charged up to .*, which fits$/,
    );
  },
);
