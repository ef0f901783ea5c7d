// `clip-mem fit -- <command>`: how many runs and how much wall time the proof of a limit takes, beside the
// search's bound (ceil(log2(range / step)) + 1, plus the top of the range and the repeat of the boundary),
// for a C program committing 64 MiB (--for data), Debian's PyTorch building CLIP ViT-B/32 (--for as, mem)
// and clip-mem's own CLIP training step on vit-b-32 (--for mem); then `fit --verify --limit-mem 1500M
// --phase train` (vit-b-32 training children under a cgroup) beside issue 16's goal of 60 s.
//
//   npm run build:ts && nice node dist/scripts/bench-fit.js [--skip pytorch,clip-train,verify]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { formatBytes } from '../src/core/units';

const root = path.resolve(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'clip-mem.js');
const skip = new Set((process.argv[process.argv.indexOf('--skip') + 1] ?? '').split(','));
const python = ['python3', '/usr/bin/python3'].find(
  (p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0,
);

const cases: { name: string; args: string[]; command: string[]; group: string }[] = [
  {
    name: 'C program, 64 MiB of data',
    group: 'c',
    args: ['--for', 'data', '--step', '1M'],
    command: [path.join(root, 'build', 'test-programs', 'alloc_program'), 'commit', String(64 << 20)],
  },
  ...(['as', 'mem'] as const).map((target) => ({
    name: `PyTorch builds CLIP ViT-B/32 (--for ${target})`,
    group: 'pytorch',
    args: ['--for', target, '--step', '16M'],
    command: [python ?? 'python3', path.join(root, 'test', 'fixtures', 'python', 'build_clip.py')],
  })),
  {
    // As test/fit-command.test.ts runs it beside the CLIP estimate (agreement within 5%).
    name: 'clip-mem run clip-train, vit-b-32 (--for mem)',
    group: 'clip-train',
    args: ['--for', 'mem', '--step', '32M', '--runs', '1'],
    command: [process.execPath, bin, 'run', 'clip-train', '--batch', '2'],
  },
];

console.log('case'.padEnd(46) + 'runs'.padStart(6) + 'bound'.padStart(7) + 'wall s'.padStart(9) + '  limit to ask for');
for (const c of cases) {
  if (skip.has(c.group) || (c.group === 'pytorch' && !python)) {
    console.log(`${c.name.padEnd(46)}  skipped${c.group === 'pytorch' && !python ? ' (no python3-torch)' : ''}`);
    continue;
  }
  const started = performance.now();
  const result = spawnSync(process.execPath, [bin, 'fit', ...c.args, '--json', '-', '--', ...c.command], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const seconds = (performance.now() - started) / 1000;
  const fit = JSON.parse(result.stdout) as {
    free: unknown[];
    runs: unknown[];
    maxRuns: number;
    outcome: string;
    recommended: number | null;
  };
  const limit = fit.recommended !== null ? formatBytes(fit.recommended) : fit.outcome;
  console.log(
    c.name.padEnd(46) +
      String(fit.free.length + fit.runs.length).padStart(6) +
      String(fit.free.length + fit.maxRuns + 3).padStart(7) +
      seconds.toFixed(1).padStart(9) +
      `  ${limit}`,
  );
}

// The CLIP search's proof: training children at the batches the search picks, each under the cgroup limit.
const VERIFY_GOAL_SECONDS = 60;
if (!skip.has('verify')) {
  const started = performance.now();
  const result = spawnSync(
    process.execPath,
    [bin, 'fit', '--limit-mem', '1500M', '--phase', 'train', '--verify', '--json', '-'],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  const seconds = (performance.now() - started) / 1000;
  const output =
    result.status === 0
      ? (JSON.parse(result.stdout) as {
          choice: { optimizer: string; estimate: { uncertainty: { scope: string } } } | null;
          verification: { runs: unknown[] } | null;
        })
      : null;
  const runs = output?.verification?.runs.length ?? '?';
  // The runs the search needs follow the band's width: say which band the proposal had.
  const band = output?.choice ? `${output.choice.optimizer}'s band ${output.choice.estimate.uncertainty.scope}` : '?';
  console.log(
    `\nfit --verify --limit-mem 1500M --phase train: ${seconds.toFixed(1)} s, ${runs} training runs (${band}; exit ${result.status}); ` +
      `goal <= ${VERIFY_GOAL_SECONDS} s: ${(seconds / VERIFY_GOAL_SECONDS).toFixed(2)}x of it, ${seconds <= VERIFY_GOAL_SECONDS ? 'met' : 'NOT met'}`,
  );
}
