import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadClipCheckpoint, readCheckpointIndex, resolveClipModel } from '../src/clip/checkpoint';
import { clipLayout, fileOrder, presetConfig } from '../src/clip/config';
import { checkpointWeightFormat } from '../src/clip/convert';
import { dequantizeInt8, int8ScaleName, toFloat32 } from '../src/clip/dtype';
import { loadSafetensors } from '../src/clip/safetensors';
import { ensureSyntheticCheckpoint } from '../src/clip/synthetic';
import { fixtures, referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const tmp = scratchDir('clip-convert-');
const cacheDir = path.join(tmp, 'cache');
const reference = loadSafetensors(path.join(referenceDir, 'model.safetensors'), { mode: 'copy' }).tensors;
const tiny = presetConfig('tiny');

test('checkpointWeightFormat recognises the three formats', (t) => {
  for (const format of ['fp32', 'fp16', 'int8'] as const) {
    const { file } = ensureSyntheticCheckpoint({ config: 'tiny', format, cacheDir });
    t.is(checkpointWeightFormat(readCheckpointIndex(file).entries), format);
  }
  t.is(
    checkpointWeightFormat([
      { name: 'a', dtype: 'F32', shape: [2] },
      { name: 'b', dtype: 'F16', shape: [2] },
    ]),
    undefined,
  );
});

test('a user model directory asked as fp16 / int8 is converted once into the cache, in the preset layout', (t) => {
  for (const format of ['fp16', 'int8'] as const) {
    const model = resolveClipModel(referenceDir, { format, cacheDir });
    t.is(model.convertedFrom, path.join(referenceDir, 'model.safetensors'));
    t.true(model.weightsFile.startsWith(cacheDir));
    const mtime = fs.statSync(model.weightsFile).mtimeMs;
    t.is(resolveClipModel(referenceDir, { format, cacheDir }).weightsFile, model.weightsFile);
    t.is(fs.statSync(model.weightsFile).mtimeMs, mtime); // reused, not rewritten
    const loaded = loadClipCheckpoint(referenceDir, { format, cacheDir, mode: 'mmap' });
    t.deepEqual(
      loaded.header.entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      fileOrder(clipLayout(tiny, format)).map(({ name, dtype, shape }) => ({ name, dtype, shape })),
    );
    t.is(loaded.header.metadata['clip-mem.weight-format'], format);
    for (const [name, original] of reference) {
      if (original.dtype !== 'F32') {
        t.deepEqual(loaded.tensors.get(name)!.data, original.data);
        continue;
      }
      const expected = original.data as Float32Array;
      const tensor = loaded.tensors.get(name)!;
      const scale = loaded.tensors.get(int8ScaleName(name));
      const actual = tensor.dtype === 'I8' ? dequantizeInt8(tensor, scale!) : toFloat32(tensor);
      const tolerance = (i: number) =>
        tensor.dtype === 'I8'
          ? (scale!.data as Float32Array)[Math.floor(i / (expected.length / original.shape[0]))] / 2 + 1e-7
          : Math.abs(expected[i]) / 1024 + 1e-7;
      const bad = expected.findIndex((v, i) => Math.abs(actual[i] - v) > tolerance(i));
      t.is(bad, -1, `${format} ${name}[${bad}]`);
    }
    loaded.close();
  }
  t.is(resolveClipModel(referenceDir, { format: 'fp32', cacheDir }).convertedFrom, undefined); // already fp32
});

test('a pytorch_model.bin directory asked as fp32 becomes an identical safetensors checkpoint', (t) => {
  const dir = path.join(tmp, 'torch-model');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(referenceDir, 'config.json'), path.join(dir, 'config.json'));
  fs.copyFileSync(path.join(fixtures, 'pytorch', 'tiny.pytorch_model.bin'), path.join(dir, 'pytorch_model.bin'));
  const model = resolveClipModel(dir, { format: 'fp32', cacheDir });
  t.is(model.weightsFormat, 'safetensors');
  t.is(model.convertedFrom, path.join(dir, 'pytorch_model.bin'));
  const converted = fs.readFileSync(model.weightsFile);
  const original = fs.readFileSync(path.join(referenceDir, 'model.safetensors'));
  t.is(converted.length - Number(converted.readBigUInt64LE(0)), original.length - Number(original.readBigUInt64LE(0)));
  const loaded = loadSafetensors(model.weightsFile, { mode: 'copy' });
  for (const [name, tensor] of reference) t.deepEqual(loaded.tensors.get(name)!.data, tensor.data, name);
});
