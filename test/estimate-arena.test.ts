// The forward's activations replayed through onnxruntime's planner and arena (src/estimate/onnxruntime-arena.ts),
// checked against onnxruntime's own profiling of the same session: the tensors held at once, the arena's
// chunks in use and its regions, in bytes. They agree within 16 KiB: onnxruntime holds a few hundred bytes
// of its own in the arena, and the order of a node's releases moves the chunks' peak by a few KiB.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { presetConfig, type WeightFormat } from '../src/clip/config';
import { ElemType, Graph } from '../src/clip/onnx/graph';
import { inferenceGraph, onnxruntime, sessionOptions } from '../src/clip/onnx/runtime';
import { readSafetensorsHeader } from '../src/clip/safetensors';
import { ensureSyntheticCheckpoint } from '../src/clip/synthetic';
import { arenaRun } from '../src/estimate/onnxruntime-arena';
import { scratchDir } from './helpers/scratch';

const MiB = 2 ** 20;

test('the planner: Reshape shares, Softmax writes over its last-used input, a freed buffer serves the same shape', (t) => {
  const g = new Graph('plan');
  const x = g.input('x', ElemType.FLOAT, [64, 1024]); // the caller's: never allocated
  const a = g.sigmoid(x); // buffer A, 256 KiB
  const b = g.softmax(a, -1); // in place over A (a's last use)
  const d = g.sigmoid(g.reshape(b, [1024, 64])); // buffer B; A is free after it
  const e = g.sigmoid(g.reshape(d, [64, 1024])); // A again: freed, the same shape; B free after it
  g.output(g.sigmoid(e)); // a graph output: always a buffer of its own, C
  const run = arenaRun(g);
  t.is(run.requestedPeakBytes, 2 * 256 * 1024); // two of A, B, C at any time
  // the arena: its first region (1 MiB) holds them; C lands where B was
  t.is(run.reservedBytes, MiB);
  t.is(run.inUsePeakBytes, 2 * 256 * 1024);
  t.is(run.touchedBytes, 2 * 256 * 1024);
});

test('the arena: a request past the next region gets its power of two, chunks are not split below twice the request', (t) => {
  const g = new Graph('arena');
  const x = g.input('x', ElemType.FLOAT, [3, MiB / 4]); // 3 MiB, handed over
  const a = g.sigmoid(x); // 3 MiB: a 4 MiB region (the first would have been 1 MiB), the whole chunk
  const b = g.sigmoid(g.reshape(a, [MiB / 4, 3])); // a second 4 MiB region; the next would be 8 MiB
  g.output(g.sigmoid(b)); // in a's chunk, free again
  const run = arenaRun(g);
  t.is(run.requestedPeakBytes, 2 * 3 * MiB);
  t.is(run.reservedBytes, 8 * MiB);
  t.is(run.inUsePeakBytes, 8 * MiB);
  t.is(run.touchedBytes, 2 * 3 * MiB);
});

async function profiled(format: WeightFormat, batch: number) {
  const config = presetConfig('tiny');
  const { file } = ensureSyntheticCheckpoint({ config: 'tiny', format, cacheDir: scratchDir('clip-mem-arena-') });
  const g = inferenceGraph(readSafetensorsHeader(file), config, 'both', batch, config.text.maxPositionEmbeddings);
  const ort = onnxruntime();
  const dir = scratchDir('clip-mem-arena-profile-');
  const session = await ort.InferenceSession.create(g.toModel(), {
    ...sessionOptions(2, path.dirname(file)),
    enableProfiling: true,
    profileFilePrefix: path.join(dir, 'profile'),
  });
  const v = config.vision;
  const pixels = new Float32Array(batch * 3 * v.imageSize * v.imageSize);
  const ids = new BigInt64Array(batch * config.text.maxPositionEmbeddings).fill(1n);
  await session.run({
    pixel_values: new ort.Tensor('float32', pixels, [batch, 3, v.imageSize, v.imageSize]),
    input_ids: new ort.Tensor('int64', ids, [batch, config.text.maxPositionEmbeddings]),
  });
  session.endProfiling();
  await session.release();
  const [profile] = fs.readdirSync(dir);
  const nodes = (
    JSON.parse(fs.readFileSync(path.join(dir, profile), 'utf8')) as { cat: string; args: Record<string, string> }[]
  ).filter((e) => e.cat === 'Node');
  const most = (key: string) => Math.max(...nodes.map((e) => Number(e.args[key] ?? 0)));
  return {
    replayed: arenaRun(g),
    requested: most('mem_bytes_requested_in_use'),
    inUse: most('mem_in_use_peak'),
    held: most('mem_arena_held'),
  };
}

for (const [format, batch] of [
  ['fp32', 8],
  ['fp32', 1024],
  ['fp16', 512],
  ['int8', 512],
] as const) {
  test(`tiny ${format} at batch ${batch}: the replay gives onnxruntime's own figures`, async (t) => {
    const { replayed, requested, inUse, held } = await profiled(format, batch);
    const close = (measured: number, replay: number) =>
      t.true(Math.abs(measured - replay) <= 16 * 1024, `${measured} ${replay}`);
    close(requested, replayed.requestedPeakBytes);
    close(inUse, replayed.inUsePeakBytes);
    close(held, replayed.reservedBytes);
    t.true(replayed.touchedBytes >= replayed.requestedPeakBytes && replayed.touchedBytes <= replayed.reservedBytes);
  });
}
