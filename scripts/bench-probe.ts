// Wall time of `clip-mem native-probe` next to a bare `node -e 0`, and of the probe alone in-process.
// Goal: the whole command under 0.5 s on a 2-core machine. Usage: node dist/scripts/bench-probe.js [runs]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { runProbe } from '../src/probe/probe';

const root = path.resolve(__dirname, '..', '..');
const runs = Number(process.argv[2] ?? 10);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function wallMs(args: string[]): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
    if (result.status !== 0) throw new Error(`${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  }
  return median(times);
}

function inProcessMs(): number {
  runProbe(); // loads the addon
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    runProbe({ models: ['vit-b-32'] });
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return median(times);
}

const bare = wallMs(['-e', '0']);
const command = wallMs([path.join(root, 'bin', 'clip-mem.js'), 'native-probe', '--json']);
const probe = inProcessMs();
const rows: [string, number][] = [
  ['node -e 0', bare],
  ['clip-mem native-probe --json', command],
  ['runProbe() in-process', probe],
];
console.log(`median of ${runs} runs`);
for (const [name, ms] of rows)
  console.log(`${name.padEnd(30)} ${ms.toFixed(1).padStart(8)} ms  ${(ms / bare).toFixed(2).padStart(6)} x node -e 0`);
console.log(`goal: native-probe under 500 ms: ${command < 500 ? 'met' : 'NOT met'} (${command.toFixed(0)} ms)`);
