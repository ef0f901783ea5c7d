import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { presetConfig } from '../src/clip/config';
import { ClipTokenizer, cleanText } from '../src/clip/tokenizer';
import { sharedClipDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

// The real CLIP vocabulary lives beside the repo (../shared/clip/tokenizer), never in it: its README says
// not to copy it into the project. A clone on its own skips the tests that need it, and says so.
const dir = sharedClipDir && path.join(sharedClipDir, 'tokenizer');
const withVocab = dir ? test : test.skip;
const vocabTitle = (title: string): string =>
  dir ? title : `${title} (skipped: the real CLIP vocabulary, ../shared/clip/tokenizer, is not beside the repository)`;
let reference: { cases: { text: string; ids: number[]; input_ids_77: number[] }[] };
let tokenizer: ClipTokenizer;
if (dir) {
  reference = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as typeof reference;
  tokenizer = ClipTokenizer.fromVocabAndMerges(path.join(dir, 'vocab.json'), path.join(dir, 'merges.txt'));
}

withVocab(vocabTitle('vocab.json + merges.txt reproduce every reference case, ids and padded input_ids'), (t) => {
  t.is(reference.cases.length, 21);
  t.is(tokenizer.vocabSize, 49408);
  t.is(tokenizer.bosId, 49406);
  t.is(tokenizer.eosId, 49407);
  for (const c of reference.cases) {
    t.deepEqual(tokenizer.encode(c.text), c.ids, c.text);
    t.deepEqual([...tokenizer.tokenize(c.text).inputIds], c.input_ids_77, c.text);
  }
});

withVocab(vocabTitle('a batch is row-major with an attention mask over the real tokens'), (t) => {
  const batch = tokenizer.tokenize(['a photo of a cat', 'a diagram']);
  t.is(batch.batch, 2);
  t.is(batch.length, 77);
  t.deepEqual([...batch.inputIds.subarray(77, 81)], [49406, 320, 22697, 49407]);
  t.deepEqual([...batch.attentionMask.subarray(0, 8)], [1, 1, 1, 1, 1, 1, 1, 0]);
  t.deepEqual([...batch.attentionMask.subarray(77, 82)], [1, 1, 1, 1, 0]);
});

withVocab(vocabTitle('a tokenizer.json (both merges spellings) encodes the same'), (t) => {
  const tmp = scratchDir('clip-tokenizer-');
  const vocab = JSON.parse(fs.readFileSync(path.join(dir!, 'vocab.json'), 'utf8'));
  const merges = fs.readFileSync(path.join(dir!, 'merges.txt'), 'utf8').split('\n').slice(1).filter(Boolean);
  for (const [i, list] of [merges, merges.map((m) => m.split(' '))].entries()) {
    const file = path.join(tmp, `tokenizer${i}.json`);
    fs.writeFileSync(file, JSON.stringify({ model: { type: 'BPE', vocab, merges: list } }));
    const fromJson = ClipTokenizer.fromFiles({ tokenizerJson: file });
    for (const c of reference.cases) t.deepEqual(fromJson.encode(c.text), c.ids);
  }
  fs.writeFileSync(path.join(tmp, 'bad.json'), JSON.stringify({ model: { type: 'WordPiece' } }));
  t.throws(() => ClipTokenizer.fromTokenizerJson(path.join(tmp, 'bad.json')), {
    message: /bad.json: model.type must be "BPE"/,
  });
});

test('cleanText: entities unescaped twice, whitespace collapsed, lowercased', (t) => {
  t.is(cleanText('  &amp;amp; A&#39;s&nbsp;&#x41;\t\nB &ampx &bogus; '), "& a's a b &x &bogus;");
});

test('the synthetic vocabulary has the config size, its bos/eos and context length', (t) => {
  const tiny = ClipTokenizer.synthetic(presetConfig('tiny'));
  const batch = tiny.tokenize(['a photo of a cat', 'naïve café 🐱 and a much longer caption that gets truncated']);
  t.is(batch.length, 16);
  t.is(tiny.vocabSize, 100);
  t.is(batch.inputIds[0], 98);
  t.is(batch.inputIds[16 + 15], 99);
  t.true(batch.inputIds.every((id) => id >= 0 && id < 100));
  t.is(tiny.encode('ab').length, 2); // one token per byte: no merges
  t.is(tiny.encode('ab')[1], tiny.encode('b')[0]);
  const big = ClipTokenizer.synthetic(presetConfig('vit-b-32'));
  t.is(big.tokenize('x').length, 77);
  t.is(new Set(big.encode('abcdefghij')).size, 10);
  t.true(big.encode('abc').every((id) => id < 49406));
  t.is(ClipTokenizer.forModel({ config: presetConfig('tiny') }).vocabSize, 100);
});

withVocab(vocabTitle("forModel reads the model's tokenizer files when it has them"), (t) => {
  t.is(
    ClipTokenizer.forModel({
      config: presetConfig('tiny'),
      tokenizer: { vocabJson: path.join(dir!, 'vocab.json'), mergesTxt: path.join(dir!, 'merges.txt') },
    }).vocabSize,
    49408,
  );
});
