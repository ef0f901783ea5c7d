// Does `fit -- <command>` (a limit proven by runs) agree with the CLIP estimate `fit` plans from? The same
// training step both ways: `clip-mem estimate --phase train` predicts its RSS, and `clip-mem fit --for mem --
// clip-mem run clip-train` finds the smallest memory cgroup it passes under (the runner's own process
// included). Prints both and their ratio; the goal is agreement within 5%.
//
//   npm run build:ts && nice node dist/scripts/fit-agreement.js [--batch 2]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { formatBytes } from '../src/core/units';

const root = path.resolve(__dirname, '..', '..');
const bin = path.join(root, 'bin', 'clip-mem.js');
const at = process.argv.indexOf('--batch');
const batch = at > 0 ? process.argv[at + 1]! : '2';

/** Runs a clip-mem command with `--json -` right after its name (before a `--` and the command fit runs). */
function json<T>(args: string[]): T {
  const [command, ...rest] = args;
  const result = spawnSync(process.execPath, [bin, command!, '--json', '-', ...rest], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  return JSON.parse(result.stdout) as T;
}

const estimate = json<{ estimates: { phase: string; predicted: { rss: number } }[] }>([
  'estimate',
  '--phase',
  'train',
  '--batch',
  batch,
]);
const predicted = estimate.estimates.find((e) => e.phase === 'train')!.predicted.rss;
const fit = json<{ outcome: string; passes: number | null; fails: number | null }>([
  'fit',
  '--for',
  'mem',
  '--runs',
  '2',
  '--step',
  '16M',
  '--',
  process.execPath,
  bin,
  'run',
  'clip-train',
  '--batch',
  batch,
]);
console.log(`clip-train batch ${batch}`);
console.log(`  estimate (RSS peak):          ${formatBytes(predicted)} (${predicted} B)`);
console.log(
  `  fit -- clip-mem run clip-train: ${fit.outcome}; passes at ${fit.passes === null ? 'unknown' : formatBytes(fit.passes)}, fails at ${fit.fails === null ? 'unknown' : formatBytes(fit.fails)}`,
);
const proven = fit.passes ?? fit.fails;
if (proven !== null) {
  const ratio = predicted / proven;
  console.log(
    `  estimate / proven limit: ${ratio.toFixed(3)} (${Math.abs(ratio - 1) <= 0.05 ? 'within' : 'outside'} 5%)`,
  );
}
