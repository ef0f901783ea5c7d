import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { clipLayout, fileOrder, layoutTotals, presetConfig } from '../src/clip/config';
import { dequantizeInt8, int8ScaleName, toFloat32 } from '../src/clip/dtype';
import { loadSafetensors } from '../src/clip/safetensors';
import {
  clipMemCacheDir,
  ensureSyntheticCheckpoint,
  syntheticCheckpointPath,
  syntheticTensorValues,
} from '../src/clip/synthetic';
import { referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const cacheDir = scratchDir('clip-synthetic-');

test('cache dir: $CLIP_MEM_CACHE, else ~/.cache/clip-mem', (t) => {
  t.is(clipMemCacheDir({ CLIP_MEM_CACHE: '/x/y' }), '/x/y');
  t.is(clipMemCacheDir({}), path.join(os.homedir(), '.cache', 'clip-mem'));
  t.is(
    path.basename(syntheticCheckpointPath({ config: 'tiny', format: 'fp16', seed: 3, cacheDir })),
    'clip-tiny-fp16-seed3-v1.safetensors',
  );
});

test('a tiny fp32 checkpoint has the reference file layout and byte size, with progress up to the last byte', (t) => {
  const progress: number[] = [];
  let total = 0;
  const { file, created } = ensureSyntheticCheckpoint({
    config: 'tiny',
    cacheDir,
    onProgress: (p) => {
      progress.push(p.bytesWritten);
      total = p.totalBytes;
    },
  });
  t.true(created);
  const reference = fs.readFileSync(path.join(referenceDir, 'model.safetensors'));
  const bytes = fs.readFileSync(file);
  t.is(bytes.length, reference.length);
  const headerLength = 8 + Number(reference.readBigUInt64LE(0));
  t.deepEqual(bytes.subarray(0, headerLength), reference.subarray(0, headerLength));
  t.is(progress[progress.length - 1], bytes.length);
  t.is(total, bytes.length);
  t.deepEqual(
    fs.readdirSync(cacheDir).filter((f) => f.endsWith('.tmp')),
    [],
  );
  t.false(ensureSyntheticCheckpoint({ config: 'tiny', cacheDir }).created);
});

test('values are deterministic per seed and sane', (t) => {
  const config = presetConfig('tiny');
  const spec = clipLayout(config).find((s) => s.name === 'text_model.encoder.layers.0.mlp.fc1.weight')!;
  t.deepEqual(syntheticTensorValues(spec, config, 1), syntheticTensorValues(spec, config, 1));
  t.notDeepEqual(syntheticTensorValues(spec, config, 1), syntheticTensorValues(spec, config, 2));
  const { file } = ensureSyntheticCheckpoint({ config: 'tiny', cacheDir, seed: 5 });
  const loaded = loadSafetensors(file, { mode: 'copy' });
  t.deepEqual(loaded.tensors.get(spec.name)!.data, syntheticTensorValues(spec, config, 5));
  t.deepEqual([...loaded.tensors.get('logit_scale')!.data], [Math.fround(2.6592)]);
  const norm = loaded.tensors.get('vision_model.pre_layrnorm.weight')!.data as Float32Array;
  t.true(norm.every((v) => v >= 0.9 && v <= 1.1));
});

test('fp16 halves and int8 quarters the file; their values decode to the fp32 ones', (t) => {
  const config = presetConfig('tiny');
  const sizes: Record<string, number> = {};
  const loaded: Record<string, ReturnType<typeof loadSafetensors>> = {};
  for (const format of ['fp32', 'fp16', 'int8'] as const) {
    const { file } = ensureSyntheticCheckpoint({ config, format, cacheDir });
    loaded[format] = loadSafetensors(file, { mode: 'mmap' });
    sizes[format] = fs.statSync(file).size;
    t.deepEqual(
      loaded[format].header.entries.map((e) => e.name),
      fileOrder(clipLayout(config, format)).map((s) => s.name),
    );
    t.is(sizes[format] - loaded[format].header.dataOffset, layoutTotals(clipLayout(config, format)).totalBytes);
  }
  const name = 'vision_model.encoder.layers.1.mlp.fc2.weight';
  const fp32 = loaded.fp32.tensors.get(name)!.data as Float32Array;
  const fp16 = toFloat32(loaded.fp16.tensors.get(name)!);
  const int8 = dequantizeInt8(loaded.int8.tensors.get(name)!, loaded.int8.tensors.get(int8ScaleName(name))!);
  const maxAbs = Math.max(...fp32.map(Math.abs));
  for (let i = 0; i < fp32.length; i++) {
    t.true(Math.abs(fp16[i] - fp32[i]) <= Math.abs(fp32[i]) / 1024 + 1e-7, `fp16 ${i}`);
    t.true(Math.abs(int8[i] - fp32[i]) <= maxAbs / 127 / 2 + 1e-7, `int8 ${i}`);
  }
  const data = (f: string) => sizes[f] - loaded[f].header.dataOffset - 264; // minus the two I64 position_ids
  t.is(data('fp16'), data('fp32') / 2);
  t.true(data('int8') < data('fp32') / 2); // tiny: biases and norms weigh a lot; vit-b-32's quarter is in clip-config.test
  for (const l of Object.values(loaded)) l.close();
});

test('an interrupted write leaves neither the checkpoint nor a temp file', (t) => {
  const dir = path.join(cacheDir, 'interrupted');
  t.throws(
    () =>
      ensureSyntheticCheckpoint({
        config: 'tiny',
        cacheDir: dir,
        onProgress: (p) => {
          if (p.bytesWritten > 50_000) throw new Error('interrupted');
        },
      }),
    { message: 'interrupted' },
  );
  t.deepEqual(fs.readdirSync(dir), []);
});
