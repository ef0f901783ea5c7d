// Deterministic inputs for the model scenarios: pixel values in the range CLIPImageProcessor produces
// and token rows shaped like the tokenizer's (start token, words, end token, end-token padding).
import type { ClipConfig } from '../clip/config';
import { mulberry32 } from '../core/random';

/** [batch, channels, size, size] values in [-1.79, 2.15], what normalising 0..255 with CLIP's mean/std gives. */
export function syntheticPixels(config: ClipConfig, batch: number, seed = 1): Float32Array {
  const v = config.vision;
  const next = mulberry32(seed);
  return Float32Array.from({ length: batch * v.numChannels * v.imageSize * v.imageSize }, () => -1.79 + 3.94 * next());
}

/** [batch, maxPositions] ids: start token, 5 + row words, end token (the highest id), padded with end tokens. */
export function syntheticIds(config: ClipConfig, batch: number, seed = 2): Int32Array {
  const t = config.text;
  const length = t.maxPositionEmbeddings;
  const next = mulberry32(seed);
  const ids = new Int32Array(batch * length).fill(t.eosTokenId);
  const wordIds = Math.min(t.bosTokenId, t.eosTokenId);
  for (let row = 0; row < batch; row++) {
    const words = Math.min(5 + row, length - 2);
    ids[row * length] = t.bosTokenId;
    for (let i = 1; i <= words; i++) ids[row * length + i] = Math.floor(next() * wordIds);
  }
  return ids;
}
