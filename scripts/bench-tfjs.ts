// The tfjs CLIP model (src/clip/tfjs/) with ViT-B/32 shapes on this machine, beside PyTorch's figures
// (../shared/clip/pytorch-anchor.md): building the model, a forward pass at batch 2, training steps at
// batch 2 (the first one, then a second). Each measurement runs in its own child process, which reports
// its own peak RSS (VmHWM), so one does not inherit another's peak.
//
//   npm run build:ts && nice node dist/scripts/bench-tfjs.js [--backend wasm|cpu|tensorflow|tensorflow-gpu] [--batch 2] [--json]
//
// The checkpoint is clip-mem's synthetic vit-b-32 file (exact layout and size), loaded by mmap and written
// to the cache on first use. On the cpu backend a training step takes many minutes: use --skip train.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { loadClipCheckpoint } from '../src/clip/checkpoint';
import { readProcessStatus } from '../src/probe/proc';
import { isUnknown } from '../src/core/field';
import { syntheticIds, syntheticPixels } from '../src/scenarios/inputs';
import { defaultTfjsBackendOrder, type TfjsBackendName } from '../src/clip/tfjs/backend';
import { ClipTfjs } from '../src/clip/tfjs/model';
import { formatBytes } from '../src/core/units';

const KINDS = ['construct', 'forward', 'train'] as const;
type Kind = (typeof KINDS)[number];
/** MiB and seconds, pytorch-anchor.md (torch 1.13.1 on the reference BLAS: its times are slow). */
const PYTORCH: Record<Kind, { peakMiB: number; seconds: number }> = {
  construct: { peakMiB: 813, seconds: 1.7 },
  forward: { peakMiB: 834, seconds: 12.3 },
  train: { peakMiB: 2891, seconds: 34.1 },
};

interface Result {
  kind: Kind;
  backend: string;
  /** construct: building the model; forward: the second pass; train: the second step. */
  seconds: number;
  /** forward: the first pass; train: the first step (the AdamW moments are made then). */
  firstSeconds?: number;
  peakRss: number;
  /** The wasm heap at the end (it never shrinks: its peak). */
  wasmHeap?: number;
  error?: string;
}

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && process.argv[index + 1] ? process.argv[index + 1] : fallback;
}

function peakRss(): number {
  const hwm = readProcessStatus().vmHwm;
  return isUnknown(hwm) ? NaN : hwm;
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function child(kind: Kind, backend: TfjsBackendName, batch: number): Promise<Result> {
  const checkpoint = loadClipCheckpoint('vit-b-32', { mode: 'mmap' });
  const config = checkpoint.model.config;
  let start = process.hrtime.bigint();
  const model = await ClipTfjs.create(checkpoint.tensors, config, { backends: [backend] });
  const built = seconds(start);
  // Only the cpu backend reads F32 weights in place; the others copied them, so the mapping's pages can go.
  if (model.backend.name !== 'cpu') checkpoint.close();
  const size = config.vision.imageSize;
  const images = { data: syntheticPixels(config, batch), shape: [batch, 3, size, size] as const };
  const texts = { data: syntheticIds(config, batch), shape: [batch, config.text.maxPositionEmbeddings] as const };
  const heap = () => (model.backend.name === 'wasm' ? { wasmHeap: wasmHeapBytes() } : {});
  const result = { kind, backend: `${model.backend.name} (${model.backend.detail})` };
  if (kind === 'construct') return { ...result, seconds: built, peakRss: peakRss(), ...heap() };
  const run = kind === 'forward' ? () => model.forward({ images, texts }) : () => model.trainStep({ images, texts });
  start = process.hrtime.bigint();
  run();
  const firstSeconds = seconds(start);
  start = process.hrtime.bigint();
  run();
  return { ...result, seconds: seconds(start), firstSeconds, peakRss: peakRss(), ...heap() };
}

function wasmHeapBytes(): number {
  return (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length;
}

function runChild(kind: Kind, backend: string, batch: number): Result {
  const out = spawnSync(
    process.execPath,
    [__filename, '--child', kind, '--backend', backend, '--batch', String(batch)],
    {
      encoding: 'utf8',
      maxBuffer: 1 << 24,
    },
  );
  const last = out.stdout.trim().split('\n').pop() ?? '';
  if (out.status !== 0 || !last.startsWith('{')) {
    const why = out.stderr.trim().split('\n').slice(-3).join(' | ');
    return { kind, backend, seconds: NaN, peakRss: NaN, error: `exit ${out.status ?? out.signal}: ${why}` };
  }
  return JSON.parse(last) as Result;
}

async function main(): Promise<void> {
  const backend = argument('backend', 'wasm');
  if (!(defaultTfjsBackendOrder as readonly string[]).includes(backend)) {
    throw new Error(`--backend ${backend}: name one of ${defaultTfjsBackendOrder.join(', ')}`);
  }
  const batch = Number(argument('batch', '2'));
  if (process.argv.includes('--child')) {
    const kind = argument('child', 'construct') as Kind;
    process.stdout.write(`${JSON.stringify(await child(kind, backend as TfjsBackendName, batch))}\n`);
    return;
  }
  const skip = argument('skip', '').split(',');
  const results: Result[] = [];
  for (const kind of KINDS.filter((k) => !skip.includes(k))) {
    process.stderr.write(`bench-tfjs: ${kind} on ${backend}, batch ${batch}...\n`);
    results.push(runChild(kind, backend, batch));
  }
  if (process.argv.includes('--json')) {
    process.stdout.write(`${JSON.stringify({ batch, results, pytorch: PYTORCH }, null, 2)}\n`);
    return;
  }
  const MiB = 2 ** 20;
  console.log(
    `tfjs CLIP vit-b-32, batch ${batch} (${results[0]?.backend ?? backend}) beside PyTorch (pytorch-anchor.md, batch 2)`,
  );
  console.log('what        | tfjs s (first) | PyTorch s | peak RSS  | PyTorch peak | RSS ratio | wasm heap');
  for (const r of results) {
    const anchor = PYTORCH[r.kind];
    if (r.error) {
      console.log(`${r.kind.padEnd(11)} | failed: ${r.error}`);
      continue;
    }
    const first = r.firstSeconds === undefined ? '' : ` (${r.firstSeconds.toFixed(1)})`;
    console.log(
      [
        r.kind.padEnd(11),
        `${r.seconds.toFixed(1)}${first}`.padEnd(14),
        String(anchor.seconds).padEnd(9),
        formatBytes(r.peakRss).padEnd(9),
        `${anchor.peakMiB} MiB`.padEnd(12),
        `${(r.peakRss / MiB / anchor.peakMiB).toFixed(2)}x`.padEnd(9),
        r.wasmHeap === undefined ? '-' : formatBytes(r.wasmHeap),
      ].join(' | '),
    );
  }
}

main().catch((error) => {
  process.stderr.write(`bench-tfjs: ${(error as Error).message}\n`);
  process.exit(1);
});
