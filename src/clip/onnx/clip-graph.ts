// The CLIP forward graph with Hugging Face CLIPModel semantics, built on Graph. Hidden states stay 2-D
// ([batch * tokens, width]) so every linear layer is one Gemm with transB = 1 over the checkpoint's
// [out, in] weight as stored (no transposed copy), and the patch convolution is a Gemm over patches
// (stride = kernel). The same builder serves inference (weights as file-backed initializers) and
// training (weights as graph inputs, see train.ts).
//
// API:
//   interface ClipParams { get(name): Value; rows(name, indices): Value }   where weights come from
//   imageFeatures(g, config, params, pixels [B, C, H, W]): Value     visual_projection output [B, P]
//   textFeatures(g, config, params, ids [B, S] int64): Value          text_projection output [B, P]
//   towerSegment(g, config, params, tower, input, ids, from, to)     layers [from, to) of one tower
//   towerTokens(config, tower, textLength)                           tokens per row in a tower
//   normalize(g, x): Value                                           x / ||x|| over the last axis
//   clipHead(g, params, imageEmbeds, textEmbeds): { logitsPerImage, logitsPerText, loss? }
import type { ClipConfig } from '../config';
import { ElemType, Graph, Value } from './graph';

/**
 * How the graph reaches a checkpoint tensor: as a float32 value, or the rows of an embedding table.
 * `input` is the activation the tensor is applied to: a converting source (fp16, int8) converts only
 * once it exists, so one converted weight is alive at a time instead of all of them.
 */
export interface ClipParams {
  get(name: string, input?: Value): Value;
  rows(name: string, indices: Value): Value;
}

interface TowerShape {
  hiddenSize: number;
  numAttentionHeads: number;
  numHiddenLayers: number;
  layerNormEps: number;
}

function linear(g: Graph, p: ClipParams, x: Value, prefix: string, bias = true): Value {
  return g.gemm(x, p.get(`${prefix}.weight`, x), bias ? p.get(`${prefix}.bias`, x) : undefined, { transB: true });
}

function layerNorm(g: Graph, p: ClipParams, x: Value, prefix: string, eps: number): Value {
  return g.layerNorm(x, p.get(`${prefix}.weight`, x), p.get(`${prefix}.bias`, x), eps).y;
}

/** Causal additive mask [S, S]: 0 on and below the diagonal, a large negative above it. */
function causalMask(g: Graph, s: number): Value {
  const mask = new Float32Array(s * s);
  for (let i = 0; i < s; i++) for (let j = i + 1; j < s; j++) mask[i * s + j] = -3.4028234663852886e38;
  return g.constant(mask, [s, s]);
}

function attention(
  g: Graph,
  p: ClipParams,
  x: Value,
  prefix: string,
  t: TowerShape,
  batch: number,
  seq: number,
  mask?: Value,
): Value {
  const h = t.numAttentionHeads;
  const dh = t.hiddenSize / h;
  const heads = (v: Value): Value => g.reshape(v, [batch, seq, h, dh]);
  const q = g.transpose(heads(g.mul(linear(g, p, x, `${prefix}.q_proj`), g.scalar(dh ** -0.5))), [0, 2, 1, 3]);
  const kT = g.transpose(heads(linear(g, p, x, `${prefix}.k_proj`)), [0, 2, 3, 1]);
  const v = g.transpose(heads(linear(g, p, x, `${prefix}.v_proj`)), [0, 2, 1, 3]);
  let scores = g.matmul(q, kT); // [B, H, S, S]
  if (mask) scores = g.add(scores, mask);
  const context = g.matmul(g.softmax(scores, -1), v); // [B, H, S, dh]
  const merged = g.reshape(g.transpose(context, [0, 2, 1, 3]), [batch * seq, t.hiddenSize]);
  return linear(g, p, merged, `${prefix}.out_proj`);
}

function quickGelu(g: Graph, x: Value): Value {
  return g.mul(x, g.sigmoid(g.mul(x, g.scalar(1.702))));
}

function encoderLayers(
  g: Graph,
  p: ClipParams,
  hidden: Value,
  prefix: string,
  t: TowerShape,
  batch: number,
  seq: number,
  from: number,
  to: number,
  mask?: Value,
): Value {
  let h = hidden;
  for (let i = from; i < to; i++) {
    const layer = `${prefix}.encoder.layers.${i}`;
    h = g.add(
      h,
      attention(
        g,
        p,
        layerNorm(g, p, h, `${layer}.layer_norm1`, t.layerNormEps),
        `${layer}.self_attn`,
        t,
        batch,
        seq,
        mask,
      ),
    );
    const mlp = linear(
      g,
      p,
      quickGelu(g, linear(g, p, layerNorm(g, p, h, `${layer}.layer_norm2`, t.layerNormEps), `${layer}.mlp.fc1`)),
      `${layer}.mlp.fc2`,
    );
    h = g.add(h, mlp);
  }
  return h;
}

export type Tower = 'text' | 'vision';

/** Tokens per row inside a tower: the text length, or the patches plus the class token. */
export function towerTokens(config: ClipConfig, tower: Tower, textLength: number): number {
  return tower === 'text' ? textLength : (config.vision.imageSize / config.vision.patchSize) ** 2 + 1;
}

/** Patch embedding (a Gemm over the unfolded patches), class token, positions, pre-layernorm: [B * tokens, D]. */
function visionEmbeddings(g: Graph, config: ClipConfig, p: ClipParams, pixels: Value): Value {
  const v = config.vision;
  const [batch, channels, height, width] = pixels.shape;
  if (channels !== v.numChannels || height !== v.imageSize || width !== v.imageSize) {
    throw new Error(
      `pixel values are [${pixels.shape.join(', ')}]; this model takes [batch, ${v.numChannels}, ${v.imageSize}, ${v.imageSize}]`,
    );
  }
  const patch = v.patchSize;
  const grid = v.imageSize / patch;
  const patches = grid * grid;
  const d = v.hiddenSize;
  const unfolded = g.reshape(
    g.transpose(g.reshape(pixels, [batch, channels, grid, patch, grid, patch]), [0, 2, 4, 1, 3, 5]),
    [batch * patches, channels * patch * patch],
  );
  const kernel = g.reshape(p.get('vision_model.embeddings.patch_embedding.weight', unfolded), [
    d,
    channels * patch * patch,
  ]);
  const embedded = g.reshape(g.gemm(unfolded, kernel, undefined, { transB: true }), [batch, patches, d]);
  const cls = g.expand(g.reshape(p.get('vision_model.embeddings.class_embedding'), [1, 1, d]), [batch, 1, d]);
  const tokens = g.add(g.concat([cls, embedded], 1), p.get('vision_model.embeddings.position_embedding.weight'));
  return layerNorm(g, p, g.reshape(tokens, [batch * (patches + 1), d]), 'vision_model.pre_layrnorm', v.layerNormEps);
}

/** Token and position embeddings: [B * S, D]. */
function textEmbeddings(g: Graph, config: ClipConfig, p: ClipParams, ids: Value): Value {
  const t = config.text;
  const [batch, seq] = ids.shape;
  if (seq > t.maxPositionEmbeddings) {
    throw new Error(
      `input ids have ${seq} tokens; this model takes at most ${t.maxPositionEmbeddings} (pad or truncate to it)`,
    );
  }
  const d = t.hiddenSize;
  const tokens = g.reshape(p.rows('text_model.embeddings.token_embedding.weight', g.reshape(ids, [batch * seq])), [
    batch,
    seq,
    d,
  ]);
  const positions = g.slice(p.get('text_model.embeddings.position_embedding.weight'), 0, 0, seq);
  return g.reshape(g.add(tokens, positions), [batch * seq, d]);
}

/**
 * Encoder layers [from, to) of one tower, with the embeddings when from = 0 (then `input` is the pixels
 * or the ids; else the hidden state [B * tokens, D] before layer `from`) and the pooling, final norm and
 * projection when `to` is the layer count (then the result is the features [B, P]; else the hidden
 * state after layer to - 1). Text pooling reads `ids`. Training runs a tower in such segments.
 */
export function towerSegment(
  g: Graph,
  config: ClipConfig,
  p: ClipParams,
  tower: Tower,
  input: Value,
  ids: Value | undefined,
  from: number,
  to: number,
): Value {
  const t = tower === 'text' ? config.text : config.vision;
  const prefix = tower === 'text' ? 'text_model' : 'vision_model';
  const seq = towerTokens(config, tower, ids?.shape[1] ?? 0);
  const batch = from > 0 ? input.shape[0] / seq : input.shape[0];
  let h =
    from > 0 ? input : tower === 'text' ? textEmbeddings(g, config, p, input) : visionEmbeddings(g, config, p, input);
  h = encoderLayers(g, p, h, prefix, t, batch, seq, from, to, tower === 'text' ? causalMask(g, seq) : undefined);
  if (to < t.numHiddenLayers) return h;
  const d = t.hiddenSize;
  let pooled: Value;
  if (tower === 'vision') {
    pooled = g.reshape(g.slice(g.reshape(h, [batch, seq, d]), 1, 0, 1), [batch, d]); // the class token
  } else {
    // Pooled at the end-of-text token, the highest id of each row (HF's argmax): a one-hot row product.
    const select = g.reshape(g.oneHot(g.argMax(ids!, 1), seq), [batch, 1, seq]);
    pooled = g.reshape(g.matmul(select, g.reshape(h, [batch, seq, d])), [batch, d]);
  }
  const norm = tower === 'text' ? 'text_model.final_layer_norm' : 'vision_model.post_layernorm';
  const post = layerNorm(g, p, pooled, norm, t.layerNormEps);
  const projection = tower === 'text' ? 'text_projection.weight' : 'visual_projection.weight';
  return g.gemm(post, p.get(projection, post), undefined, { transB: true });
}

export function imageFeatures(g: Graph, config: ClipConfig, p: ClipParams, pixels: Value): Value {
  return towerSegment(g, config, p, 'vision', pixels, undefined, 0, config.vision.numHiddenLayers);
}

export function textFeatures(g: Graph, config: ClipConfig, p: ClipParams, ids: Value): Value {
  return towerSegment(g, config, p, 'text', ids, ids, 0, config.text.numHiddenLayers);
}

export function normalize(g: Graph, x: Value): Value {
  return g.div(x, g.sqrt(g.reduceSum(g.mul(x, x), [-1], true)));
}

/** Logits scaled by exp(logit_scale) and, when both batches are equal, the symmetric contrastive loss. */
export function clipHead(
  g: Graph,
  p: ClipParams,
  imageEmbeds: Value,
  textEmbeds: Value,
): { logitsPerImage: Value; logitsPerText: Value; loss?: Value } {
  const logitsPerText = g.mul(
    g.gemm(textEmbeds, imageEmbeds, undefined, { transB: true }),
    g.exp(p.get('logit_scale')),
  );
  const logitsPerImage = g.transpose(logitsPerText, [1, 0]);
  const n = imageEmbeds.shape[0];
  if (textEmbeds.shape[0] !== n) return { logitsPerImage, logitsPerText };
  // (CE(logits_per_text, arange) + CE(logits_per_image, arange)) / 2 = -sum(diag(lsm_rows + lsm_cols)) / 2n
  // The diagonal through an identity made at run time: an [n, n] constant would be copied several times
  // over by onnxruntime's session creation (tiny at batch 4096: 64 MiB each, ~200 MiB in all).
  const both = g.add(g.logSoftmax(logitsPerText, 1), g.logSoftmax(logitsPerText, 0));
  const loss = g.mul(g.reduceSum(g.mul(both, g.eyeLike(both)), [0, 1], false), g.scalar(-1 / (2 * n)));
  return { logitsPerImage, logitsPerText, loss };
}

export { ElemType };
