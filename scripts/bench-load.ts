// The copy load of a checkpoint beside a plain read of the same file into one fresh buffer, measured side
// by side in one run (issue 16, goal 3: the copy load no slower than the plain read). Each measurement runs
// in its own child process (fresh memory, as a user's load has), interleaved run by run, median of N; the
// file is read once first so that both read it from the page cache. Each child reports its wall time,
// its CPU time (user + system: steadier than wall time on a shared machine, and nearly all of a cached
// read is system time) and its VmHWM (peak RSS).
//   plain      new ArrayBuffer(file size), then fs.readSync into it (1 GiB reads, as the copy load does)
//   copy       loadSafetensors(file, { mode: 'copy' }): one ArrayBuffer per tensor, each read into
//   baseline   the same copy load from another build's dist/ (CLIPMEM_BENCH_BASELINE_DIST=<that dist>):
//              how a change moves the load's time and peak RSS
//
//   npm run build && nice node dist/scripts/bench-load.js [runs=5] [--format fp32|fp16|int8]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveClipModel } from '../src/clip/checkpoint';
import { WEIGHT_FORMATS, WeightFormat } from '../src/clip/config';
import { loadSafetensors } from '../src/clip/safetensors';
import { parseKbLines } from '../src/probe/proc';

type Kind = 'plain' | 'copy' | 'baseline';
interface Measured {
  seconds: number;
  cpuSeconds: number;
  /** VmHWM in bytes. */
  peakRss: number;
  bytes: number;
}

const MiB = 1024 * 1024;
const baselineDist = process.env.CLIPMEM_BENCH_BASELINE_DIST;

function peakRss(): number {
  return parseKbLines(fs.readFileSync('/proc/self/status', 'utf8')).get('VmHWM')!;
}

function plainRead(file: string): number {
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = new Uint8Array(new ArrayBuffer(fs.fstatSync(fd).size));
    for (let done = 0; done < buffer.length;) {
      const n = fs.readSync(fd, buffer, done, Math.min(buffer.length - done, 1 << 30), done);
      if (n === 0) throw new Error(`${file} ended after ${done} bytes`);
      done += n;
    }
    return buffer.length;
  } finally {
    fs.closeSync(fd);
  }
}

function copyLoad(file: string, load: typeof loadSafetensors): number {
  let bytes = 0;
  for (const tensor of load(file, { mode: 'copy' }).tensors.values()) bytes += tensor.data.byteLength;
  return bytes;
}

function child(kind: Kind, file: string): Measured {
  const load =
    kind === 'baseline'
      ? (
          require(path.resolve(baselineDist!, 'src', 'clip', 'safetensors')) as {
            loadSafetensors: typeof loadSafetensors;
          }
        ).loadSafetensors
      : loadSafetensors;
  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const bytes = kind === 'plain' ? plainRead(file) : copyLoad(file, load);
  const cpu = process.cpuUsage(cpuStart);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, peakRss: peakRss(), bytes };
}

function runChild(kind: Kind, file: string): Measured {
  const result = spawnSync(process.execPath, [__filename, '--child', kind, file], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${kind} child exited ${result.status}: ${result.stderr}`);
  return JSON.parse(result.stdout) as Measured;
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    process.stdout.write(JSON.stringify(child(args[1] as Kind, args[2]!)));
    return;
  }
  const formatAt = args.indexOf('--format');
  const format = (formatAt >= 0 ? args.splice(formatAt, 2)[1] : 'fp32') as WeightFormat;
  if (!WEIGHT_FORMATS.includes(format))
    throw new Error(`--format: ${format} is not one of ${WEIGHT_FORMATS.join(', ')}`);
  const runs = Number(args[0] ?? 5);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`runs: ${args[0]} is not a positive integer`);
  const file = resolveClipModel('vit-b-32', { format }).weightsFile;
  plainRead(file); // into the page cache: every child then reads cached pages

  const kinds: Kind[] = baselineDist ? ['plain', 'copy', 'baseline'] : ['plain', 'copy'];
  const results = new Map<Kind, Measured[]>(kinds.map((kind) => [kind, []]));
  for (let i = 0; i < runs; i++) for (const kind of kinds) results.get(kind)!.push(runChild(kind, file));
  const time = (kind: Kind) => median(results.get(kind)!.map((r) => r.seconds));
  const cpu = (kind: Kind) => median(results.get(kind)!.map((r) => r.cpuSeconds));
  const peak = (kind: Kind) => median(results.get(kind)!.map((r) => r.peakRss));
  const describe = (kind: Kind) =>
    `wall ${time(kind).toFixed(3)} s (${results
      .get(kind)!
      .map((r) => r.seconds.toFixed(2))
      .join(', ')}), CPU ${cpu(kind).toFixed(3)} s, peak RSS ${(peak(kind) / MiB).toFixed(0)} MiB`;

  const bytes = results.get('copy')![0]!.bytes;
  const lines = [
    `vit-b-32 ${format}: ${path.basename(file)}, ${(bytes / MiB).toFixed(0)} MiB of tensors (median of ${runs}, each in a fresh process)`,
    `  plain read into one fresh buffer: ${describe('plain')}`,
    `  copy load:                        ${describe('copy')}`,
    `  copy load / plain read = ${(time('copy') / time('plain')).toFixed(2)}x wall, ` +
      `${(cpu('copy') / cpu('plain')).toFixed(2)}x CPU (goal <= 1.00x); ` +
      `peak RSS copy - plain = ${((peak('copy') - peak('plain')) / MiB).toFixed(1)} MiB`,
  ];
  if (baselineDist)
    lines.push(
      `  baseline copy load (${baselineDist}): ${describe('baseline')}`,
      `  this build / baseline = ${(time('copy') / time('baseline')).toFixed(2)}x wall, ` +
        `${(cpu('copy') / cpu('baseline')).toFixed(2)}x CPU, ` +
        `${((peak('copy') - peak('baseline')) / MiB).toFixed(1)} MiB peak RSS`,
    );
  process.stdout.write(`${lines.join('\n')}\n`);
}

main();
