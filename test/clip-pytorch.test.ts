import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadClipCheckpoint } from '../src/clip/checkpoint';
import { toFloat32 } from '../src/clip/dtype';
import { PytorchCheckpointError, loadPytorchCheckpoint, readPytorchCheckpoint } from '../src/clip/pytorch';
import { loadSafetensors } from '../src/clip/safetensors';
import { fixtures, referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

// Written by test/fixtures/pytorch/make.py with Debian's PyTorch 1.13.
const tinyBin = path.join(fixtures, 'pytorch', 'tiny.pytorch_model.bin');
const mixedBin = path.join(fixtures, 'pytorch', 'mixed.bin');
const tmp = scratchDir('clip-pytorch-');

const bytesOf = (d: ArrayBufferView) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);

test('the tiny pytorch_model.bin holds the reference tensors, by mmap (zero copy) and by copy', (t) => {
  const reference = loadSafetensors(path.join(referenceDir, 'model.safetensors'), { mode: 'copy' });
  for (const mode of ['mmap', 'copy'] as const) {
    const loaded = loadPytorchCheckpoint(tinyBin, { mode });
    t.is(loaded.tensors.size, reference.tensors.size);
    for (const [name, tensor] of reference.tensors) {
      const other = loaded.tensors.get(name)!;
      t.deepEqual([other.dtype, other.shape], [tensor.dtype, tensor.shape], name);
      t.true(bytesOf(other.data).equals(bytesOf(tensor.data)), name);
    }
    t.deepEqual(loaded.copiedForAlignment, []);
    if (mode === 'mmap') t.is(loaded.tensors.get('logit_scale')!.data.buffer.byteLength, fs.statSync(tinyBin).size);
    loaded.close();
  }
});

test('strided views, shared storages, fp16, bf16, int64, bool and scalars', (t) => {
  for (const mode of ['mmap', 'copy'] as const) {
    const m = loadPytorchCheckpoint(mixedBin, { mode }).tensors;
    const transposed = m.get('transposed')!;
    t.deepEqual(transposed.shape, [6, 4]);
    t.deepEqual([...transposed.data.subarray(0, 8)], [0, 6, 12, 18, 1, 7, 13, 19]);
    t.deepEqual([...m.get('offset_view')!.data], [3, 4, 5, 6]);
    t.deepEqual([...m.get('shared_whole')!.data], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    t.deepEqual([...toFloat32(m.get('half')!)], [1.5, -2, 65504]);
    t.deepEqual([...toFloat32(m.get('bf16')!)], [1, -3.5]);
    t.deepEqual([...(m.get('long')!.data as BigInt64Array)], [1n, -2n, 3n, 2n ** 40n]);
    t.deepEqual([m.get('flags')!.dtype, ...m.get('flags')!.data], ['BOOL', 1, 0, 1]);
    t.deepEqual([m.get('scalar')!.shape, m.get('scalar')!.data[0]], [[], Math.fround(2.6592)]);
  }
  t.false(readPytorchCheckpoint(mixedBin).entries.find((e) => e.name === 'transposed')!.contiguous);
});

test('a model directory with only pytorch_model.bin loads through loadClipCheckpoint', (t) => {
  const dir = path.join(tmp, 'model');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(referenceDir, 'config.json'), path.join(dir, 'config.json'));
  fs.copyFileSync(tinyBin, path.join(dir, 'pytorch_model.bin'));
  const loaded = loadClipCheckpoint(dir, { mode: 'mmap' });
  t.is(loaded.model.weightsFormat, 'pytorch');
  t.is(loaded.tensors.size, 80);
  t.is(loaded.header.metadata.format, 'pytorch-zip');
  loaded.close();
});

test('corrupt torch files get clear errors, never a crash', (t) => {
  const original = fs.readFileSync(tinyBin);
  const write = (name: string, bytes: Uint8Array) => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, bytes);
    return file;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', Buffer.alloc(0), /is not a zip archive/],
    ['legacy', Buffer.from([0x80, 0x02, 0x8a, 0x0a]), /legacy torch.save format/],
    ['truncated', original.subarray(0, original.length - 100), /not a zip archive|outside the file|corrupt/],
    ['head only', original.subarray(0, 5000), /not a zip archive/],
  ];
  for (const [name, bytes, message] of cases) {
    const file = write(name, bytes);
    t.throws(
      () => loadPytorchCheckpoint(file, { mode: 'copy' }),
      { instanceOf: PytorchCheckpointError, message },
      name,
    );
  }
  // every single flipped byte of the small file: a PytorchCheckpointError or a successful load
  const mixed = fs.readFileSync(mixedBin);
  let errors = 0;
  for (let i = 0; i < mixed.length; i++) {
    const bytes = Buffer.from(mixed);
    bytes[i] ^= 0x5a;
    const file = write('flipped', bytes);
    try {
      loadPytorchCheckpoint(file, { mode: 'copy' });
    } catch (error) {
      if (!(error instanceof PytorchCheckpointError)) {
        t.fail(`byte ${i}: ${(error as Error).stack}`);
        return;
      }
      errors++;
    }
  }
  t.true(errors > 0);
  t.throws(() => loadPytorchCheckpoint(path.join(fixtures, 'pytorch', 'broadcast.bin'), { mode: 'copy' }), {
    message:
      /tensor "expanded": a view of 1048576 elements over a storage of 1 \(stride \[0\]\); save it with .contiguous\(\) first/,
  });
  for (let end = 0; end < mixed.length; end += 7) {
    const file = write('truncated', mixed.subarray(0, end));
    t.throws(
      () => loadPytorchCheckpoint(file, { mode: 'mmap' }),
      { instanceOf: PytorchCheckpointError },
      `truncated at ${end}`,
    );
  }
});
