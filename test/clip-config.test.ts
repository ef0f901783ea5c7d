import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  clipLayout,
  describeLayout,
  fileOrder,
  layoutTotals,
  parseHfConfig,
  presetConfig,
  readHfConfig,
} from '../src/clip/config';
import { readFixture, referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

function readTsv(preset: string): { name: string; dtype: string; shape: number[]; bytes: number }[] {
  const lines = readFixture(`clip/${preset}.tensors.tsv.gz`).trim().split('\n').slice(1);
  return lines.map((line) => {
    const [name, dtype, shape, bytes] = line.split('\t');
    return { name, dtype, shape: shape === 'scalar' ? [] : shape.split('x').map(Number), bytes: Number(bytes) };
  });
}

for (const preset of ['vit-b-32', 'vit-b-16', 'vit-l-14']) {
  test(`${preset}: the generated layout is the real file's tensor list`, (t) => {
    t.deepEqual(clipLayout(presetConfig(preset)), readTsv(preset));
  });
}

test('vit-b-32 totals: 400 entries, 151,277,313 parameters, 605,109,252 B F32 + 1,016 B I64', (t) => {
  const { totals } = describeLayout('vit-b-32');
  t.deepEqual(totals, {
    entries: 400,
    parameters: 151_277_313,
    bytesByDtype: { F32: 605_109_252, I64: 1016 },
    totalBytes: 605_110_268,
  });
  t.is(describeLayout('vit-b-16').totals.parameters, 149_620_737);
  t.is(describeLayout('vit-l-14').totals.parameters, 427_616_513);
});

test('fp16 halves and int8 weight-only quarters the weight bytes', (t) => {
  t.deepEqual(describeLayout('vit-b-32', 'fp16').totals.bytesByDtype, { F16: 302_554_626, I64: 1016 });
  const int8 = describeLayout('vit-b-32', 'int8');
  const quantized = clipLayout(presetConfig('vit-b-32')).filter((s) => s.shape.length >= 2 && s.dtype === 'F32');
  t.is(int8.totals.entries, 400 + quantized.length);
  t.is(
    int8.totals.bytesByDtype.I8,
    quantized.reduce((sum, s) => sum + s.bytes / 4, 0),
  );
  t.true(int8.totals.totalBytes < 605_110_268 / 3.9);
  t.truthy(
    int8.tensors.find((s) => s.name === 'text_model.embeddings.token_embedding.weight.scale' && s.shape[0] === 49408),
  );
  t.is(int8.totals.parameters, 151_277_313);
});

test('tiny preset = the reference config.json, and fileOrder = the reference file order', (t) => {
  const fromFile = readHfConfig(referenceDir);
  const tiny = presetConfig('tiny');
  t.deepEqual({ ...fromFile, name: 'tiny' }, tiny);
  const file = fs.readFileSync(path.join(referenceDir, 'model.safetensors'));
  const header = JSON.parse(file.subarray(8, 8 + Number(file.readBigUInt64LE(0))).toString('utf8'));
  delete header.__metadata__;
  const fromHeader = Object.entries(header as Record<string, { dtype: string; shape: number[] }>).map(([name, v]) => ({
    name,
    dtype: v.dtype,
    shape: v.shape,
  }));
  t.deepEqual(
    fileOrder(clipLayout(tiny)).map(({ name, dtype, shape }) => ({ name, dtype, shape })),
    fromHeader,
  );
});

test('config.json errors name the file and the field', (t) => {
  t.throws(() => parseHfConfig({ text_config: { hidden_size: -3 } }, 'x/config.json'), {
    message: 'x/config.json: text_config.hidden_size: expected a positive integer, got -3',
  });
  t.throws(() => parseHfConfig({ vision_config: { image_size: 225 } }, 'c.json'), {
    message: /image_size 225 is not divisible by patch_size 32/,
  });
  t.throws(() => parseHfConfig({ model_type: 'bert' }, 'c.json'), { message: /model_type is "bert"/ });
  const dir = scratchDir('clip-config-');
  fs.writeFileSync(path.join(dir, 'config.json'), '{ nope');
  t.throws(() => readHfConfig(dir), { message: new RegExp(`${dir}/config.json is not valid JSON`) });
  t.throws(() => describeLayout('vit-z-99'), {
    message: /neither a CLIP preset \(vit-b-32, vit-b-16, vit-l-14, tiny\)/,
  });
});

test('defaults follow transformers: an empty config is vit-b-32', (t) => {
  t.deepEqual(layoutTotals(clipLayout(parseHfConfig({}, 'empty'))), describeLayout('vit-b-32').totals);
});
