import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { clipLayout, fileOrder, presetConfig } from '../src/clip/config';
import {
  SafetensorsError,
  encodeSafetensorsHeader,
  loadSafetensors,
  readSafetensorsHeader,
  serializeSafetensors,
} from '../src/clip/safetensors';
import { spawnSync } from 'node:child_process';
import { loadAddon } from '../src/core/native';
import { parseKbLines } from '../src/probe/proc';
import { referenceDir, repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const reference = path.join(referenceDir, 'model.safetensors');
const MiB = 1024 * 1024;

/** This process's anonymous resident bytes (RssAnon). */
const rssAnon = (): number => parseKbLines(fs.readFileSync('/proc/self/status', 'utf8')).get('RssAnon')!;
const tmp = scratchDir('clip-safetensors-');

function writeTemp(name: string, bytes: Uint8Array): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, bytes);
  return file;
}

test('the reference header is byte-for-byte what encodeSafetensorsHeader writes for the tiny layout', (t) => {
  const bytes = fs.readFileSync(reference);
  const header = encodeSafetensorsHeader(fileOrder(clipLayout(presetConfig('tiny'))));
  t.deepEqual(Buffer.from(header), bytes.subarray(0, header.length));
  const parsed = readSafetensorsHeader(reference);
  t.is(parsed.dataOffset, header.length);
  t.deepEqual(parsed.metadata, { format: 'pt' });
  t.is(parsed.entries.length, clipLayout(presetConfig('tiny')).length);
});

test('the copy load prefaults each buffer: a tensor spanning huge pages and odd edges reads back byte for byte', (t) => {
  // 5 MiB + 12 bytes of patterned floats, after a 6-byte tensor: edges off page and off 2 MiB alignment.
  const large = Float32Array.from({ length: (5 * MiB + 12) / 4 }, (_, i) => i * 0.5 - 7);
  const small = Uint8Array.from([1, 2, 3, 4, 5, 6]);
  const file = writeTemp(
    'prefault.safetensors',
    serializeSafetensors([
      { name: 'small', dtype: 'U8', shape: [6], data: small },
      { name: 'large', dtype: 'F32', shape: [large.length], data: large },
    ]),
  );
  const copied = loadSafetensors(file, { mode: 'copy' });
  t.deepEqual(copied.tensors.get('small')!.data, small);
  t.deepEqual(copied.tensors.get('large')!.data, large);
});

test('prefaultForWrite populates a fresh buffer before any write and advises its 2 MiB-aligned interior for huge pages', (t) => {
  const addon = loadAddon<{
    prefaultForWrite(buffer: ArrayBuffer): { hugePageBytes: number; populatedBytes: number };
  }>();
  const bytes = 16 * MiB + 12345;
  const page = 4096;
  const buffer = new ArrayBuffer(bytes); // calloc of a fresh mapping: no page of it touched yet
  const before = rssAnon();
  const { hugePageBytes, populatedBytes } = addon.prefaultForWrite(buffer);
  const grown = rssAnon() - before;
  // The page-aligned interior: the buffer's bytes less at most a page at each end. MADV_POPULATE_WRITE
  // came with Linux 5.14; an older kernel refuses it and the read faults the pages in as before.
  const [major, minor] = os.release().split('.').map(Number);
  if (major! > 5 || (major === 5 && minor! >= 14)) {
    t.true(populatedBytes > bytes - 2 * page && populatedBytes <= bytes, String(populatedBytes));
    t.is(populatedBytes % page, 0);
    t.true(grown >= populatedBytes - 2 * MiB, `RssAnon grew ${grown} bytes for ${populatedBytes} populated`);
  } else t.is(populatedBytes, 0);
  // The whole 2 MiB ranges inside the buffer, 7 or 8 of them wherever the allocator placed it; none
  // where the kernel has no transparent huge pages (it refuses the advice).
  if (fs.existsSync('/sys/kernel/mm/transparent_hugepage/enabled')) {
    t.is(hugePageBytes % (2 * MiB), 0);
    t.true(hugePageBytes >= 14 * MiB && hugePageBytes <= 16 * MiB, String(hugePageBytes));
  } else t.is(hugePageBytes, 0);
  t.throws(() => addon.prefaultForWrite(new Uint8Array(8) as unknown as ArrayBuffer), {
    message: /prefaultForWrite\(buffer\): buffer must be an ArrayBuffer/,
  });
});

test('adviseHugePages advises the same 2 MiB-aligned interior and populates nothing: RSS rises only as the program writes', (t) => {
  const addon = loadAddon<{ adviseHugePages(buffer: ArrayBuffer): number }>();
  const buffer = new ArrayBuffer(16 * MiB + 12345);
  const before = rssAnon();
  const advised = addon.adviseHugePages(buffer);
  t.true(rssAnon() - before < MiB, `RssAnon grew ${rssAnon() - before} bytes`);
  if (fs.existsSync('/sys/kernel/mm/transparent_hugepage/enabled')) {
    t.is(advised % (2 * MiB), 0);
    t.true(advised >= 14 * MiB && advised <= 16 * MiB, String(advised));
  } else t.is(advised, 0);
  t.throws(() => addon.adviseHugePages(new Uint8Array(8) as unknown as ArrayBuffer), {
    message: /adviseHugePages\(buffer\): buffer must be an ArrayBuffer/,
  });
});

test('mmap and copy load identical tensors; mmap views share one mapping', (t) => {
  const mapped = loadSafetensors(reference, { mode: 'mmap' });
  const copied = loadSafetensors(reference, { mode: 'copy' });
  t.deepEqual([...mapped.tensors.keys()], [...copied.tensors.keys()]);
  for (const [name, tensor] of mapped.tensors) {
    const other = copied.tensors.get(name)!;
    t.is(tensor.dtype, other.dtype);
    t.deepEqual(tensor.shape, other.shape);
    t.deepEqual(
      Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength),
      Buffer.from(other.data.buffer, other.data.byteOffset, other.data.byteLength),
    );
  }
  const ids = mapped.tensors.get('vision_model.embeddings.position_ids')!.data as BigInt64Array;
  t.deepEqual(
    [...ids],
    Array.from({ length: 17 }, (_, i) => BigInt(i)),
  );
  const token = mapped.tensors.get('text_model.embeddings.token_embedding.weight')!;
  t.is(token.data.buffer, mapped.tensors.get('logit_scale')!.data.buffer);
  t.is(token.data.buffer.byteLength, fs.statSync(reference).size);
  t.deepEqual(mapped.copiedForAlignment, []);
  mapped.close();
  t.is(token.data.length, 0); // detached after close: stale views read as empty, never fault
});

test('mmap copies only a tensor whose offset is misaligned for its dtype', (t) => {
  const file = writeTemp(
    'misaligned.safetensors',
    serializeSafetensors([
      { name: 'a', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      { name: 'b', dtype: 'F32', shape: [2], data: new Float32Array([1.5, -2]) },
    ]),
  );
  const loaded = loadSafetensors(file, { mode: 'mmap' });
  t.deepEqual(loaded.copiedForAlignment, ['b']);
  t.deepEqual([...(loaded.tensors.get('b')!.data as Float32Array)], [1.5, -2]);
  loaded.close();
});

test('onTensor reports each tensor in file order', (t) => {
  const seen: string[] = [];
  loadSafetensors(reference, {
    mode: 'copy',
    onTensor: (entry, index, count) => seen.push(`${index}/${count} ${entry.name}`),
  });
  t.is(seen[0], '0/' + seen.length + ' text_model.embeddings.position_ids');
  t.is(seen.length, clipLayout(presetConfig('tiny')).length);
});

function corrupt(name: string, header: object, dataBytes: number, extra?: (b: Buffer) => void): string {
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + dataBytes);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  extra?.(out);
  return writeTemp(name, out);
}

const errorCases: [string, () => string, RegExp][] = [
  [
    'too short',
    () => writeTemp('short', Buffer.from([1, 2, 3])),
    /: header length: the file is 3 bytes, shorter than the 8-byte/,
  ],
  ['empty', () => writeTemp('empty', Buffer.alloc(0)), /: header length: the file is 0 bytes/],
  [
    'huge header length',
    () => corrupt('huge', {}, 0, (b) => b.writeBigUInt64LE(0xffffffffffffn, 0)),
    /: header length: 281474976710655 bytes exceeds the 100000000-byte limit/,
  ],
  [
    'header past the end',
    () => corrupt('past', {}, 0, (b) => b.writeBigUInt64LE(1000n, 0)),
    /: header length: 1000 bytes runs past the end of the file \(10 bytes\)/,
  ],
  [
    'not JSON',
    () => writeTemp('nojson', Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{abc')])),
    /: header: is not valid JSON/,
  ],
  ['not an object', () => corrupt('array', [1, 2], 0), /: header: is not a JSON object of tensors/],
  [
    'bad dtype',
    () => corrupt('dtype', { w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16),
    /: tensor "w": dtype: "F128" is not a known dtype/,
  ],
  [
    'bad shape',
    () => corrupt('shape', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4),
    /: tensor "w": shape: \[-1\] is not a list/,
  ],
  [
    'wrong size',
    () => corrupt('size', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4),
    /: tensor "w": data_offsets: \[0, 4\] spans 4 bytes but shape \[2\] of F32 needs 8/,
  ],
  [
    'out of range',
    () => corrupt('range', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4),
    /: tensor "w": data_offsets: \[0, 8\] ends past the data section \(4 bytes/,
  ],
  [
    'overlap',
    () =>
      corrupt(
        'overlap',
        {
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
        },
        12,
      ),
    /: tensor "b": data_offsets: \[4, 12\] overlaps the previous tensor \(expected to begin at 8\)/,
  ],
  [
    'gap',
    () => corrupt('gap', { a: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } }, 4),
    /: tensor "a": data_offsets: \[2, 4\] leaves a gap/,
  ],
  [
    'trailing bytes',
    () => corrupt('trail', { a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] } }, 5),
    /: data_offsets: the tensors cover 2 bytes but the data section holds 5/,
  ],
  [
    'bad metadata',
    () => corrupt('meta', { __metadata__: { format: 3 } }, 0),
    /: __metadata__.format: must be a string, got 3/,
  ],
];

for (const [title, make, message] of errorCases) {
  test(`a bad file is a SafetensorsError naming file, tensor and field: ${title}`, (t) => {
    const file = make();
    for (const mode of ['mmap', 'copy'] as const) {
      const error = t.throws(() => loadSafetensors(file, { mode }), { instanceOf: SafetensorsError, message });
      t.true(error!.message.startsWith(file + ': '));
    }
  });
}

test('a missing file is a plain ENOENT error with the path', (t) => {
  t.throws(() => loadSafetensors(path.join(tmp, 'nope'), { mode: 'mmap' }), { code: 'ENOENT', message: /nope/ });
  t.throws(() => loadSafetensors(path.join(tmp, 'nope'), { mode: 'copy' }), { code: 'ENOENT', message: /nope/ });
});

test('the addon unmaps a mapping when its buffer is collected, or at once by unmapFile', (t) => {
  const addon = path.join(repoRoot, 'build', 'Release', 'clip_mem.node');
  const script = `
    const a = require(${JSON.stringify(addon)});
    const file = ${JSON.stringify(reference)};
    const mapped = () => require('fs').readFileSync('/proc/self/maps', 'utf8').includes(file);
    let b = a.mapFile(file);
    const out = { mappedBytes: a.mappedBytes(), inMaps: mapped() };
    b = null;
    gc();
    setTimeout(() => {
      gc();
      setTimeout(() => {
        Object.assign(out, { afterGc: a.mappedBytes(), inMapsAfterGc: mapped() });
        const c = a.mapFile(file);
        Object.assign(out, { unmapped: a.unmapFile(c), afterUnmap: a.mappedBytes(), detachedLength: c.byteLength, again: a.unmapFile(c) });
        try { a.mapFile('/no/such/file'); } catch (e) { out.error = [e.code, e.errno, e.syscall, e.message]; }
        console.log(JSON.stringify(out));
      }, 20);
    }, 20);`;
  const result = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
  t.is(result.status, 0, result.stderr);
  t.deepEqual(JSON.parse(result.stdout), {
    mappedBytes: fs.statSync(reference).size,
    inMaps: true,
    afterGc: 0,
    inMapsAfterGc: false,
    unmapped: true,
    afterUnmap: 0,
    detachedLength: 0,
    again: false,
    error: ['ENOENT', 2, 'open', 'open /no/such/file: No such file or directory (errno 2)'],
  });
});
