// Seeded fuzzing of the safetensors reader: thousands of corrupted variants of the tiny reference
// checkpoint, each loaded by mmap and by copy. Every variant either loads (the corruption happened to
// leave a valid file, e.g. a renamed tensor) identically by both paths, or fails with a SafetensorsError
// naming the file, identically by both paths. Nothing crashes, hangs or allocates beyond the file's size.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clipLayout, fileOrder, presetConfig } from '../src/clip/config';
import {
  SafetensorsError,
  encodeSafetensorsHeader,
  loadSafetensors,
  parseSafetensorsHeader,
} from '../src/clip/safetensors';
import { referenceDir } from './helpers/paths';
import { mulberry32 } from '../src/core/random';
import { scratchDir } from './helpers/scratch';

const CASES = 3000;
const original = fs.readFileSync(path.join(referenceDir, 'model.safetensors'));
const headerLength = Number(original.readBigUInt64LE(0));
// The fuzzer writes values of every wrong type into the header's entries.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const header = JSON.parse(original.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, any>;
const names = Object.keys(header).filter((k) => k !== '__metadata__');

function withHeader(json: unknown, data = original.subarray(8 + headerLength)): Buffer {
  const text = Buffer.from(JSON.stringify(json));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  return Buffer.concat([prefix, text, data]);
}

type Mutation = (random: () => number) => Buffer;
const int = (random: () => number, n: number) => Math.floor(random() * n);
const pick = <T>(random: () => number, list: readonly T[]): T => list[int(random, list.length)];
const weird = [-1, 0, 1, 3, 7, 2 ** 31, 2 ** 53, 1e300, 1.5, '12', null, [], {}];

const mutations: Record<string, Mutation> = {
  truncate: (random) => original.subarray(0, int(random, original.length)),
  'flip header bytes': (random) => {
    const out = Buffer.from(original);
    for (let i = 0, n = 1 + int(random, 4); i < n; i++) out[8 + int(random, headerLength)] = int(random, 256);
    return out;
  },
  'huge header length': (random) => {
    const out = Buffer.from(original);
    out.writeBigUInt64LE(BigInt(original.length - 8 + 1 + int(random, 2 ** 30)) * BigInt(1 + int(random, 2 ** 20)));
    return out;
  },
  'flip length bytes': (random) => {
    const out = Buffer.from(original);
    out[int(random, 8)] ^= 1 << int(random, 8);
    return out;
  },
  'shift offsets': (random) => {
    const json = structuredClone(header);
    const entry = json[pick(random, names)];
    const delta = (int(random, 2) ? 1 : -1) * (1 + int(random, 600));
    if (int(random, 2)) entry.data_offsets[int(random, 2)] += delta;
    else entry.data_offsets = entry.data_offsets.map((o: number) => o + delta);
    return withHeader(json);
  },
  'overlap or out-of-range offsets': (random) => {
    const json = structuredClone(header);
    const a = json[pick(random, names)];
    const b = json[pick(random, names)];
    a.data_offsets = int(random, 2)
      ? [...b.data_offsets]
      : [b.data_offsets[0], b.data_offsets[0] + original.length * (1 + int(random, 1000))];
    return withHeader(json);
  },
  'weird offsets': (random) => {
    const json = structuredClone(header);
    json[pick(random, names)].data_offsets = int(random, 2)
      ? pick(random, weird)
      : [pick(random, weird), pick(random, weird)];
    return withHeader(json);
  },
  'bad dtype': (random) => {
    const json = structuredClone(header);
    json[pick(random, names)].dtype = pick(random, [
      'F8',
      'f32',
      'float32',
      '',
      'I64',
      'F16',
      'BF16',
      'U8',
      'I32',
      'F64',
      'BOOL',
      7,
      null,
    ]);
    return withHeader(json);
  },
  'bad shape': (random) => {
    const json = structuredClone(header);
    const entry = json[pick(random, names)];
    entry.shape = int(random, 3) ? [...entry.shape, pick(random, weird)] : pick(random, weird);
    return withHeader(json);
  },
  'huge shape': (random) => {
    const json = structuredClone(header);
    json[pick(random, names)].shape = [2 ** 30, 2 ** 30, 1 + int(random, 2 ** 20)];
    return withHeader(json);
  },
  'drop or add a tensor': (random) => {
    const json = structuredClone(header);
    if (int(random, 2)) delete json[pick(random, names)];
    else
      json[`extra.${int(random, 1000)}`] = {
        dtype: 'F32',
        shape: [1 + int(random, 8)],
        data_offsets: [0, 4 * (1 + int(random, 8))],
      };
    return withHeader(json);
  },
  'bad metadata': (random) =>
    withHeader({ ...header, __metadata__: pick(random, [7, 'pt', [], { format: 1 }, { format: null }]) }),
  'not an object': (random) => withHeader(pick(random, [[], 'x', 5, null, true])),
  'trailing bytes': (random) => Buffer.concat([original, Buffer.alloc(1 + int(random, 64))]),
  'random bytes': (random) => Buffer.from(Array.from({ length: int(random, 4096) }, () => int(random, 256))),
};

interface Outcome {
  error?: string;
  digest?: string;
}

function outcome(file: string, mode: 'mmap' | 'copy'): Outcome {
  try {
    const loaded = loadSafetensors(file, { mode });
    const parts = [...loaded.tensors.values()].map(
      (t) =>
        `${t.name}:${t.dtype}:${t.shape.join('x')}:${Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('base64')}`,
    );
    loaded.close();
    return { digest: parts.join('|') };
  } catch (error) {
    if (!(error instanceof SafetensorsError)) throw error;
    return { error: error.message };
  }
}

test(`${CASES} seeded corrupted checkpoints: clear errors naming the file, both paths agree, memory bounded`, (t) => {
  const dir = scratchDir('clip-fuzz-');
  const file = path.join(dir, 'model.safetensors');
  const kinds = Object.keys(mutations);
  const errorsByKind: Record<string, number> = Object.fromEntries(kinds.map((k) => [k, 0]));
  const fields = new Set<string>();
  const baseline = process.memoryUsage();
  let peakArrayBuffers = 0;
  let peakRss = 0;
  for (let i = 0; i < CASES; i++) {
    const kind = kinds[i % kinds.length];
    const bytes = mutations[kind](mulberry32(i));
    fs.writeFileSync(file, bytes);
    const mapped = outcome(file, 'mmap');
    const copied = outcome(file, 'copy');
    if (mapped.error !== copied.error || mapped.digest !== copied.digest) {
      t.fail(
        `case ${i} (${kind}): mmap ${JSON.stringify(mapped.error ?? 'loaded')} vs copy ${JSON.stringify(copied.error ?? 'loaded')}`,
      );
      return;
    }
    if (mapped.error) {
      errorsByKind[kind]++;
      if (!mapped.error.startsWith(`${file}: `)) t.fail(`case ${i}: error does not name the file: ${mapped.error}`);
      fields.add(mapped.error.replace(/^.*?: (tensor ".*?": )?/, '').split(':')[0]);
    }
    const usage = process.memoryUsage();
    peakArrayBuffers = Math.max(peakArrayBuffers, usage.arrayBuffers);
    peakRss = Math.max(peakRss, usage.rss);
  }
  t.log('errors by mutation:', errorsByKind);
  t.log('fields named:', [...fields].sort().join(', '));
  // every kind that can never leave a valid file always failed
  for (const kind of [
    'truncate',
    'huge header length',
    'overlap or out-of-range offsets',
    'huge shape',
    'bad metadata',
    'not an object',
    'trailing bytes',
    'random bytes',
  ]) {
    t.is(errorsByKind[kind], Math.ceil((CASES - kinds.indexOf(kind)) / kinds.length), kind);
  }
  for (const field of ['header length', 'header', 'dtype', 'shape', 'data_offsets', '__metadata__'])
    t.true(fields.has(field), field);
  // Bounded: no allocation follows a header's claims (lengths up to 2^50, shapes of 2^60 elements) before
  // they are checked against the file; what remains is uncollected garbage of 192 KB files.
  t.true(
    peakArrayBuffers - baseline.arrayBuffers < 64 * 2 ** 20,
    `array buffers grew by ${peakArrayBuffers - baseline.arrayBuffers}`,
  );
  t.true(peakRss - baseline.rss < 256 * 2 ** 20, `RSS grew by ${peakRss - baseline.rss}`);
});

test('1000 seeded corruptions of the vit-b-32 header (in memory, against the real file size) are clear errors', (t) => {
  const layout = fileOrder(clipLayout(presetConfig('vit-b-32')));
  const encoded = encodeSafetensorsHeader(layout);
  const fileSize = encoded.length + layout.reduce((sum, s) => sum + s.bytes, 0);
  const json = JSON.parse(Buffer.from(encoded.subarray(8)).toString('utf8'));
  const vitNames = Object.keys(json).filter((k) => k !== '__metadata__');
  t.is(parseSafetensorsHeader(encoded.subarray(8), fileSize, 'vit-b-32').entries.length, 400);
  let errors = 0;
  for (let i = 0; i < 1000; i++) {
    const random = mulberry32(100_000 + i);
    const mutated = structuredClone(json);
    const entry = mutated[pick(random, vitNames)];
    let size = fileSize;
    switch (i % 5) {
      case 0:
        entry.data_offsets[int(random, 2)] += 1 + int(random, 1 << 20);
        break;
      case 1:
        entry.shape = [...entry.shape, pick(random, [2, 3, 49408, 2 ** 40])];
        break;
      case 2:
        entry.dtype = pick(random, ['F16', 'BF16', 'I8', 'Q4', '']);
        break; // never F32's or I64's size
      case 3:
        size = int(random, fileSize);
        break; // a truncated file
      case 4:
        delete mutated[pick(random, vitNames)];
        break;
    }
    const bytes = Buffer.from(JSON.stringify(mutated));
    try {
      parseSafetensorsHeader(
        bytes,
        size === fileSize ? 8 + bytes.length + (fileSize - encoded.length) : size,
        'vit-b-32.safetensors',
      );
    } catch (error) {
      if (!(error instanceof SafetensorsError) || !error.message.startsWith('vit-b-32.safetensors: ')) throw error;
      errors++;
    }
  }
  t.is(errors, 1000);
});
