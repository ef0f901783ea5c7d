// The CLIP tokenizer, exactly as openai/CLIP's simple_tokenizer and transformers' CLIPTokenizer encode:
// html-unescape twice, collapse whitespace, strip, lowercase, split with CLIP's pattern, map UTF-8 bytes
// through GPT-2's byte encoder, apply the BPE merges by rank (word-final symbols carry "</w>"), then
// <|startoftext|> + ids truncated to contextLength - 2 + <|endoftext|>, padded with <|endoftext|>.
// (ftfy's mojibake repair, which openai's code also runs, is not reproduced: it changes only broken text.)
// Reads vocab.json + merges.txt or a tokenizer.json; synthetic models get a vocabulary of the config's size.
//
// API:
//   CONTEXT_LENGTH = 77
//   cleanText(text): string                       unescape, whitespace collapse, strip, lowercase
//   class ClipTokenizer
//     static fromVocabAndMerges(vocabJsonFile, mergesTxtFile)
//     static fromTokenizerJson(file)
//     static fromFiles({ tokenizerJson?, vocabJson?, mergesTxt? })   (TokenizerFiles of checkpoint.ts)
//     static synthetic(config: ClipConfig)         vocab of config.text.vocabSize, its bos/eos ids, no merges
//     static forModel(model: ClipModelSource)      the model's own files, else synthetic for its config
//     vocabSize, bosId, eosId, contextLength (77, or the config's max positions for synthetic)
//     encode(text): number[]                       BPE ids without the specials
//     tokenize(texts, contextLength?): TokenizedBatch   padded batch
//   interface TokenizedBatch { inputIds: Int32Array, attentionMask: Int32Array, batch, length }
import * as fs from 'node:fs';
import type { ClipModelSource } from './checkpoint';
import type { ClipConfig } from './config';

export const CONTEXT_LENGTH = 77;
const START = '<|startoftext|>';
const END = '<|endoftext|>';

export interface TokenizedBatch {
  /** batch x length, row-major: <|startoftext|> ids <|endoftext|> then padding with <|endoftext|>. */
  inputIds: Int32Array;
  /** 1 for <|startoftext|>, the text's ids and the first <|endoftext|>; 0 for padding. */
  attentionMask: Int32Array;
  batch: number;
  length: number;
}

// Python's html.unescape knows all of HTML5's 2,231 named references; these are the ones text carries
// in practice (image captions scraped from the web), plus every numeric reference.
const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
  copy: '\u00a9',
  reg: '\u00ae',
  trade: '\u2122',
  hellip: '\u2026',
  mdash: '\u2014',
  ndash: '\u2013',
  lsquo: '\u2018',
  rsquo: '\u2019',
  ldquo: '\u201c',
  rdquo: '\u201d',
  laquo: '\u00ab',
  raquo: '\u00bb',
  deg: '\u00b0',
  times: '\u00d7',
  middot: '\u00b7',
  bull: '\u2022',
  euro: '\u20ac',
  pound: '\u00a3',
  yen: '\u00a5',
  cent: '\u00a2',
  sect: '\u00a7',
  para: '\u00b6',
  eacute: '\u00e9',
  egrave: '\u00e8',
  aacute: '\u00e1',
  agrave: '\u00e0',
  ouml: '\u00f6',
  uuml: '\u00fc',
  auml: '\u00e4',
  iuml: '\u00ef',
  ccedil: '\u00e7',
  ntilde: '\u00f1',
  szlig: '\u00df',
  frac12: '\u00bd',
  plusmn: '\u00b1',
  micro: '\u00b5',
};
// html.unescape also accepts these without the semicolon (the HTML5 legacy set).
const LEGACY_NO_SEMICOLON = new Set(['amp', 'lt', 'gt', 'quot', 'nbsp', 'copy', 'reg']);

// Python's html.unescape maps these invalid numeric references to what browsers show.
const INVALID_CHARREFS: Record<number, string> = {
  0x00: '\ufffd',
  0x0d: '\r',
  0x80: '\u20ac',
  0x81: '\x81',
  0x82: '\u201a',
  0x83: '\u0192',
  0x84: '\u201e',
  0x85: '\u2026',
  0x86: '\u2020',
  0x87: '\u2021',
  0x88: '\u02c6',
  0x89: '\u2030',
  0x8a: '\u0160',
  0x8b: '\u2039',
  0x8c: '\u0152',
  0x8d: '\x8d',
  0x8e: '\u017d',
  0x8f: '\x8f',
  0x90: '\x90',
  0x91: '\u2018',
  0x92: '\u2019',
  0x93: '\u201c',
  0x94: '\u201d',
  0x95: '\u2022',
  0x96: '\u2013',
  0x97: '\u2014',
  0x98: '\u02dc',
  0x99: '\u2122',
  0x9a: '\u0161',
  0x9b: '\u203a',
  0x9c: '\u0153',
  0x9d: '\x9d',
  0x9e: '\u017e',
  0x9f: '\u0178',
};

function htmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(/&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)/g, (match, body: string) => {
    if (body[0] === '#') {
      const hex = body[1] === 'x' || body[1] === 'X';
      const code = parseInt(body.slice(hex ? 2 : 1), hex ? 16 : 10);
      if (code in INVALID_CHARREFS) return INVALID_CHARREFS[code];
      if ((code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) return '\ufffd';
      return String.fromCodePoint(code);
    }
    const name = body.endsWith(';') ? body.slice(0, -1) : body;
    if (body.endsWith(';') && name in NAMED_ENTITIES) return NAMED_ENTITIES[name];
    if (!body.endsWith(';')) {
      // longest legacy prefix, as html.unescape does ("&ampx" -> "&x")
      for (let n = Math.min(name.length, 6); n > 1; n--) {
        if (LEGACY_NO_SEMICOLON.has(name.slice(0, n))) return NAMED_ENTITIES[name.slice(0, n)] + body.slice(n);
      }
    }
    return match;
  });
}

/** openai/CLIP's basic_clean + whitespace_clean + lower (without ftfy). */
export function cleanText(text: string): string {
  return htmlUnescape(htmlUnescape(text)).trim().replace(/\s+/gu, ' ').trim().toLowerCase();
}

const SPLIT = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** GPT-2's reversible byte -> printable unicode character table. */
function byteEncoder(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return table;
}
const BYTE_ENCODER = byteEncoder();

export class ClipTokenizer {
  private readonly cache = new Map<string, number[]>();
  private readonly utf8 = new TextEncoder();

  private constructor(
    /** symbol -> id */
    private readonly vocab: Map<string, number>,
    /** "left right" -> rank */
    private readonly ranks: Map<string, number>,
    readonly vocabSize: number,
    readonly bosId: number,
    readonly eosId: number,
    readonly contextLength: number,
    private readonly source: string,
  ) {}

  static fromVocabAndMerges(vocabJsonFile: string, mergesTxtFile: string): ClipTokenizer {
    const vocab = readVocab(readJson(vocabJsonFile), vocabJsonFile);
    const lines = readText(mergesTxtFile).split('\n');
    const merges = lines.filter((line, i) => line.trim() !== '' && !(i === 0 && line.startsWith('#version')));
    return ClipTokenizer.build(vocab, merges, `${vocabJsonFile} + ${mergesTxtFile}`, mergesTxtFile);
  }

  static fromTokenizerJson(file: string): ClipTokenizer {
    const json = readJson(file) as { model?: { type?: string; vocab?: unknown; merges?: unknown } };
    if (!json.model || json.model.type !== 'BPE')
      throw new Error(
        `${file}: model.type must be "BPE" (a CLIP tokenizer.json), got ${JSON.stringify(json.model?.type)}`,
      );
    const vocab = readVocab(json.model.vocab, `${file}: model.vocab`);
    if (!Array.isArray(json.model.merges)) throw new Error(`${file}: model.merges must be a list`);
    const merges = json.model.merges.map((m: unknown, i: number) => {
      if (typeof m === 'string') return m;
      if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string')) return m.join(' ');
      throw new Error(`${file}: model.merges[${i}] is neither "a b" nor ["a", "b"]`);
    });
    return ClipTokenizer.build(vocab, merges, file, file);
  }

  static fromFiles(files: { tokenizerJson?: string; vocabJson?: string; mergesTxt?: string }): ClipTokenizer {
    if (files.vocabJson && files.mergesTxt) return ClipTokenizer.fromVocabAndMerges(files.vocabJson, files.mergesTxt);
    if (files.tokenizerJson) return ClipTokenizer.fromTokenizerJson(files.tokenizerJson);
    throw new Error(
      'a CLIP tokenizer needs vocab.json + merges.txt or a tokenizer.json (the model directory has neither)',
    );
  }

  /**
   * A vocabulary of exactly config.text.vocabSize ids for synthetic checkpoints: the 512 byte symbols
   * (with and without "</w>") spread over the ids other than bos/eos (several symbols share an id when
   * the vocabulary is smaller), no merges: every byte of the text becomes one token.
   */
  static synthetic(config: ClipConfig): ClipTokenizer {
    const { vocabSize, bosTokenId, eosTokenId, maxPositionEmbeddings } = config.text;
    const free: number[] = [];
    for (let id = 0; id < vocabSize; id++) if (id !== bosTokenId && id !== eosTokenId) free.push(id);
    const vocab = new Map<string, number>();
    const symbols = [...BYTE_ENCODER, ...BYTE_ENCODER.map((s) => s + '</w>')];
    symbols.forEach((symbol, i) => vocab.set(symbol, free[i % free.length]));
    vocab.set(START, bosTokenId);
    vocab.set(END, eosTokenId);
    return new ClipTokenizer(
      vocab,
      new Map(),
      vocabSize,
      bosTokenId,
      eosTokenId,
      maxPositionEmbeddings,
      `synthetic vocabulary of ${vocabSize}`,
    );
  }

  /** The tokenizer files found beside the model's weights, else a synthetic vocabulary of its config. */
  static forModel(model: Pick<ClipModelSource, 'config' | 'tokenizer'>): ClipTokenizer {
    return model.tokenizer ? ClipTokenizer.fromFiles(model.tokenizer) : ClipTokenizer.synthetic(model.config);
  }

  private static build(
    vocab: Map<string, number>,
    merges: string[],
    source: string,
    mergesSource: string,
  ): ClipTokenizer {
    const ranks = new Map<string, number>();
    merges.forEach((line, rank) => {
      const parts = line.trim().split(' ');
      if (parts.length !== 2)
        throw new Error(`${mergesSource}: merge ${rank + 1} "${line}" is not two symbols separated by a space`);
      if (!ranks.has(parts.join(' '))) ranks.set(parts.join(' '), rank);
    });
    const bos = vocab.get(START);
    const eos = vocab.get(END);
    if (bos === undefined || eos === undefined) throw new Error(`${source}: the vocabulary lacks ${START} or ${END}`);
    const vocabSize = Math.max(...vocab.values()) + 1;
    return new ClipTokenizer(vocab, ranks, vocabSize, bos, eos, CONTEXT_LENGTH, source);
  }

  /** The BPE ids of the text, without <|startoftext|> / <|endoftext|> around them. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const match of cleanText(text).matchAll(SPLIT)) {
      const word = match[0];
      if (word === START || word === END) {
        ids.push(this.vocab.get(word)!);
        continue;
      }
      let cached = this.cache.get(word);
      if (!cached) {
        const symbols = Array.from(this.utf8.encode(word), (b) => BYTE_ENCODER[b]).join('');
        cached = this.bpe(symbols).map((piece) => this.vocab.get(piece) ?? this.eosId); // CLIP's unk is <|endoftext|>
        if (this.cache.size < 100_000) this.cache.set(word, cached);
      }
      ids.push(...cached);
    }
    return ids;
  }

  /** A padded batch: each row <|startoftext|> + ids[: length - 2] + <|endoftext|>, padded with <|endoftext|>. */
  tokenize(texts: string | readonly string[], contextLength: number = this.contextLength): TokenizedBatch {
    if (!Number.isInteger(contextLength) || contextLength < 2)
      throw new Error(`contextLength must be an integer >= 2, got ${contextLength}`);
    const list = typeof texts === 'string' ? [texts] : texts;
    const inputIds = new Int32Array(list.length * contextLength).fill(this.eosId);
    const attentionMask = new Int32Array(list.length * contextLength);
    list.forEach((text, row) => {
      const ids = [this.bosId, ...this.encode(text).slice(0, contextLength - 2), this.eosId];
      inputIds.set(ids, row * contextLength);
      attentionMask.fill(1, row * contextLength, row * contextLength + ids.length);
    });
    return { inputIds, attentionMask, batch: list.length, length: contextLength };
  }

  toString(): string {
    return `ClipTokenizer(${this.source})`;
  }

  private bpe(token: string): string[] {
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), chars[chars.length - 1] + '</w>'];
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      // merge every occurrence of the pair, left to right, as the reference does
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(word[i]);
        }
      }
      word = merged;
    }
    return word;
  }
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read tokenizer file ${file}: ${(error as Error).message}`);
  }
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readText(file));
  } catch (error) {
    if ((error as Error).message.startsWith('cannot read')) throw error;
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
}

function readVocab(json: unknown, where: string): Map<string, number> {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new Error(`${where}: the vocabulary must be an object of token -> id`);
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(json)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0)
      throw new Error(
        `${where}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, expected a non-negative integer`,
      );
    vocab.set(token, id as number);
  }
  return vocab;
}
