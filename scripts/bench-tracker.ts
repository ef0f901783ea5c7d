// The tracker's cost, measured side by side in one run: each workload untracked, under clip-mem's
// interposer, and under Debian's heaptrack, interleaved run by run (median of N), printed as ratios.
// Goals: 64-byte malloc/free loop tracked <= 1.2x untracked on 1, 2 and 8 threads; a realistic node
// workload <= 3% slower; at least 10x less added time than heaptrack on both. The loop also runs under
// two interposers that only forward (build/test-programs/libclipmem_forward_*.so): what interposition
// itself costs, the floor under the tracker's figure. Times on a shared machine are noisy, so the loop's
// cost is also counted in instructions per malloc/free pair (valgrind's callgrind, where installed): the
// difference between two runs of different lengths, so that start-up and exit cancel out.
// With CLIPMEM_BENCH_BASELINE=<another libclipmem_preload.so> (e.g. built from main), that library runs
// too, interleaved with this build's, to show a change's cost side by side.
// Usage: npm run build && node dist/scripts/bench-tracker.js [runs=5] [pairs=50000000]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { preloadLibrary } from '../src/track/binaries';

const root = path.resolve(__dirname, '..', '..');
const runs = Number(process.argv[2] ?? 5);
// CPU time comes in 10 ms steps: 50M pairs (~0.4 s untracked) keep a step near 2% of the figure.
const pairs = Number(process.argv[3] ?? 50000000);
const testPrograms = path.join(root, 'build', 'test-programs');
const program = path.join(testPrograms, 'alloc_program');

// A realistic node workload: parse and build JSON, strings, objects, Buffers and typed-array math.
const nodeWorkload = `
const rows = [];
for (let i = 0; i < 200000; i++) rows.push({ id: i, name: 'token_' + i, weights: [i % 7, i % 11, i % 13] });
const text = JSON.stringify(rows);
const back = JSON.parse(text);
let sum = 0;
for (const row of back) sum += row.weights[0] + row.name.length;
const buffers = [];
for (let i = 0; i < 2000; i++) buffers.push(Buffer.alloc(64 * 1024, i & 255));
const a = new Float32Array(1 << 22), b = new Float32Array(1 << 22);
for (let r = 0; r < 20; r++) for (let i = 0; i < a.length; i++) a[i] += b[i] * 0.5 + r;
process.stdout.write(String(sum + buffers.length + a[7]) + '\\n');
`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

type Mode = 'untracked' | 'clip-mem' | 'baseline' | 'heaptrack' | 'forward-only' | 'forward-inspect';
const baseline = process.env.CLIPMEM_BENCH_BASELINE;

// The forwarding baselines, by mode: malloc jumps straight to glibc's, or calls it and returns its block.
const forwarders: Partial<Record<Mode, string>> = {
  'forward-only': path.join(testPrograms, 'libclipmem_forward_only.so'),
  'forward-inspect': path.join(testPrograms, 'libclipmem_forward_inspect.so'),
};

const THREADS = [1, 2, 8];
// callgrind runs ~50x slower: its two runs take this many pairs and twice as many.
const CALLGRIND_PAIRS = 500000;

interface Timing {
  wallMs: number;
  /** User + system CPU time of the command (GNU time): steadier than wall time on a shared machine. */
  cpuMs: number;
}

/** The environment and command line of `command` under `mode`. */
function modeCommand(mode: Mode, command: string[], scratch: string): { env: NodeJS.ProcessEnv; argv: string[] } {
  const env: NodeJS.ProcessEnv = { ...process.env };
  let argv = command;
  if (mode === 'clip-mem' || mode === 'baseline') {
    env.LD_PRELOAD = mode === 'baseline' ? baseline : preloadLibrary();
    env.CLIPMEM_RECORD_DIR = fs.mkdtempSync(path.join(scratch, 'record-'));
  } else if (mode === 'heaptrack') {
    argv = ['heaptrack', '-o', path.join(scratch, `heaptrack-${Date.now()}`), ...command];
  } else if (forwarders[mode]) {
    env.LD_PRELOAD = forwarders[mode];
  }
  return { env, argv };
}

function runOnce(mode: Mode, command: string[], scratch: string): Timing {
  const { env, argv } = modeCommand(mode, command, scratch);
  const timeFile = path.join(scratch, 'time.txt');
  const start = process.hrtime.bigint();
  const result = spawnSync('/usr/bin/time', ['-o', timeFile, '-f', '%U %S', ...argv], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.status !== 0) throw new Error(`${mode}: ${argv.join(' ')} exited ${result.status}: ${result.stderr}`);
  const [user, system] = fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  return { wallMs, cpuMs: (user! + system!) * 1000 };
}

function measure(
  name: string,
  goal: number,
  command: string[],
  scratch: string,
  withHeaptrack: boolean,
  withForwarders = false,
): void {
  const modes: Mode[] = ['untracked', 'clip-mem'];
  if (baseline) modes.push('baseline');
  if (withHeaptrack) modes.push('heaptrack');
  if (withForwarders) modes.push('forward-only', 'forward-inspect');
  const times = new Map<Mode, Timing[]>(modes.map((mode) => [mode, []]));
  for (let i = 0; i < runs; i++) for (const mode of modes) times.get(mode)!.push(runOnce(mode, command, scratch));
  const lines = [`${name} (median of ${runs}; goal: clip-mem <= ${goal.toFixed(2)}x untracked)`];
  for (const kind of ['cpuMs', 'wallMs'] as const) {
    const of = (mode: Mode) => median(times.get(mode)!.map((t) => t[kind]));
    const base = of('untracked');
    const tracked = of('clip-mem');
    const label = kind === 'cpuMs' ? 'CPU ' : 'wall';
    let line = `  ${label}: untracked ${base.toFixed(0)} ms, clip-mem ${tracked.toFixed(0)} ms = ${(tracked / base).toFixed(2)}x`;
    if (withHeaptrack) {
      const heaptrack = of('heaptrack');
      line += `, heaptrack ${heaptrack.toFixed(0)} ms = ${(heaptrack / base).toFixed(2)}x;`;
      line +=
        tracked - base < 1
          ? ` added time: heaptrack ${(heaptrack - base).toFixed(0)} ms, clip-mem none measurable (goal >= 10x less)`
          : ` added time ${(heaptrack - base).toFixed(0)} vs ${(tracked - base).toFixed(0)} ms = ${((heaptrack - base) / (tracked - base)).toFixed(1)}x less than heaptrack (goal >= 10x)`;
    }
    lines.push(line);
    if (baseline) {
      const before = of('baseline');
      lines.push(
        `        baseline ${baseline}: ${before.toFixed(0)} ms = ${(before / base).toFixed(2)}x; this build / baseline = ${(tracked / before).toFixed(3)}`,
      );
    }
    if (withForwarders) {
      const only = of('forward-only');
      const inspect = of('forward-inspect');
      lines.push(
        `        interposition alone: forward only ${only.toFixed(0)} ms = ${(only / base).toFixed(2)}x, ` +
          `forward and see the block ${inspect.toFixed(0)} ms = ${(inspect / base).toFixed(2)}x (the floor for a tracker that reads its size)`,
      );
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
}

/** Instructions callgrind counted in the whole of `command` under `mode`. */
function instructions(mode: Mode, command: string[], scratch: string): number {
  const { env, argv } = modeCommand(mode, command, scratch);
  const result = spawnSync('valgrind', ['--tool=callgrind', '--callgrind-out-file=/dev/null', ...argv], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const refs = /I\s+refs:\s+([\d,]+)/.exec(result.stderr);
  if (result.status !== 0 || !refs) throw new Error(`callgrind ${mode}: ${argv.join(' ')}: ${result.stderr}`);
  return Number(refs[1]!.replace(/,/g, ''));
}

/** callgrind's instructions per malloc/free pair of the loop on `threads` threads, per mode. */
function instructionsPerPair(threads: number, scratch: string): void {
  const modes: Mode[] = ['untracked', 'forward-only', 'forward-inspect', 'clip-mem'];
  if (baseline) modes.push('baseline');
  const perPair = new Map<Mode, number>();
  for (const mode of modes) {
    const run = (n: number) => instructions(mode, [program, 'loop', String(n), String(threads)], scratch);
    perPair.set(mode, (run(2 * CALLGRIND_PAIRS) - run(CALLGRIND_PAIRS)) / CALLGRIND_PAIRS);
  }
  const base = perPair.get('untracked')!;
  const line = modes
    .map((mode) => {
      const n = perPair.get(mode)!;
      return `${mode} ${n.toFixed(1)}${mode === 'untracked' ? '' : ` (+${(n - base).toFixed(1)}, ${(n / base).toFixed(2)}x)`}`;
    })
    .join(', ');
  process.stdout.write(`  callgrind instructions per pair, ${threads} thread(s): ${line}\n`);
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'clipmem-bench-'));
const heaptrackAvailable = spawnSync('heaptrack', ['--version'], { stdio: 'ignore' }).status === 0;
if (!heaptrackAvailable)
  process.stdout.write('heaptrack not found (Debian: apt-get install heaptrack): its columns are skipped\n');
const valgrindAvailable = spawnSync('valgrind', ['--version'], { stdio: 'ignore' }).status === 0;
if (!valgrindAvailable)
  process.stdout.write('valgrind not found (Debian: apt-get install valgrind): no instruction counts\n');
try {
  for (const threads of THREADS) {
    measure(
      `64-byte malloc/free loop, ${pairs} pairs on ${threads} thread(s)`,
      1.2,
      [program, 'loop', String(pairs), String(threads)],
      scratch,
      heaptrackAvailable && threads === 1, // heaptrack's figure needs only one thread count
      true,
    );
    if (valgrindAvailable) instructionsPerPair(threads, scratch);
  }
  measure(
    'node workload: JSON, objects, Buffers, typed arrays',
    1.03,
    [process.execPath, '-e', nodeWorkload],
    scratch,
    heaptrackAvailable,
  );
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
