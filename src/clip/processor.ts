// The CLIP image processor, faithful to transformers' CLIPImageProcessor: convert to RGB (alpha dropped),
// resize the shortest edge to 224 with PIL's bicubic (re-implemented here: same coefficients, same
// 22-bit fixed point, same horizontal-then-vertical passes through an 8-bit image), centre crop 224,
// rescale by 1/255, normalise with CLIP's mean and std. Decoding is sharp's (libvips).
// Output: float32 CHW pixel values, images concatenated along the batch dimension.
//
// API:
//   CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS
//   interface ProcessorOptions { shortestEdge = 224, cropSize = 224, mean, std, maxPixels }
//   processorOptionsFor(config: ClipConfig): ProcessorOptions   image_size of the vision config
//   readPreprocessorConfig(fileOrDir): ProcessorOptions         a Hugging Face preprocessor_config.json
//   processorOptionsForModel({ config, weightsFile }): ProcessorOptions   the model's preprocessor_config.json
//                                                                beside its weights, else its config
//   type ImageInput = string (file) | Buffer/Uint8Array (encoded image) | RawImage
//   interface RawImage { data: Float32Array | Uint8Array, width, height, channels (1, 3 or 4), layout: 'hwc' | 'chw' }
//        floats must be in [0, 1] (as PIL's conversion requires); uint8 are 0..255 pixels
//   preprocessImage(input, options): Promise<Float32Array>          3 x crop x crop
//   preprocessImages(inputs, options): Promise<PixelBatch>          { pixelValues, batch, size }
//   resizeBicubicPil(rgb: Uint8Array, width, height, outWidth, outHeight): Uint8Array  (HWC, 3 channels)
//   class ImageInputError                                           every bad-input error
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Sharp } from 'sharp';
import type { ClipConfig } from './config';

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;
/** Larger images are refused before decoding (sharp's own default limit is 268 megapixels). */
export const DEFAULT_MAX_PIXELS = 100_000_000;

export interface ProcessorOptions {
  shortestEdge?: number;
  cropSize?: number;
  mean?: readonly number[];
  std?: readonly number[];
  maxPixels?: number;
}

export interface RawImage {
  data: Float32Array | Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  /** 'hwc': pixel after pixel (PIL, sharp raw, numpy HxWxC); 'chw': plane after plane (torch, pixel_values). */
  layout: 'hwc' | 'chw';
}

export type ImageInput = string | Buffer | Uint8Array | RawImage;

export interface PixelBatch {
  /** batch x 3 x size x size, float32, normalised. */
  pixelValues: Float32Array;
  batch: number;
  size: number;
}

export class ImageInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageInputError';
  }
}

/** The processor sizes for a model config: its vision image_size for the resize and the crop. */
export function processorOptionsFor(config: ClipConfig): ProcessorOptions {
  return { shortestEdge: config.vision.imageSize, cropSize: config.vision.imageSize };
}

/**
 * CLIPImageProcessor's settings from a preprocessor_config.json (the file, or inside a model directory):
 * size ({shortest_edge} or a number), crop_size ({height, width} square, or a number), image_mean,
 * image_std. Other processors' options (do_resize false, non-square crops, resample other than bicubic)
 * are refused: clip-mem would not reproduce them.
 */
export function readPreprocessorConfig(fileOrDir: string): ProcessorOptions {
  const file = fs.statSync(fileOrDir).isDirectory() ? path.join(fileOrDir, 'preprocessor_config.json') : fileOrDir;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`);
  }
  const fail = (field: string, detail: string): never => {
    throw new Error(`${file}: ${field}: ${detail}`);
  };
  const positive = (v: unknown, field: string): number =>
    Number.isInteger(v) && (v as number) > 0
      ? (v as number)
      : fail(field, `expected a positive integer, got ${JSON.stringify(v)}`);
  const size = json.size as unknown;
  const crop = json.crop_size as unknown;
  const options: ProcessorOptions = {};
  if (size !== undefined)
    options.shortestEdge =
      typeof size === 'object' && size
        ? positive((size as Record<string, unknown>).shortest_edge, 'size.shortest_edge')
        : positive(size, 'size');
  if (crop !== undefined) {
    if (typeof crop === 'object' && crop) {
      const { height, width } = crop as Record<string, unknown>;
      if (height !== width) fail('crop_size', `non-square crops (${JSON.stringify(crop)}) are not CLIP's`);
      options.cropSize = positive(height, 'crop_size.height');
    } else options.cropSize = positive(crop, 'crop_size');
  }
  for (const [key, target] of [
    ['image_mean', 'mean'],
    ['image_std', 'std'],
  ] as const) {
    const v = json[key];
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
      fail(key, `expected 3 numbers, got ${JSON.stringify(v)}`);
    options[target] = v as number[];
  }
  if (
    json.do_resize === false ||
    json.do_center_crop === false ||
    json.do_normalize === false ||
    json.do_rescale === false
  ) {
    fail(
      'do_*',
      'a processor that skips resize, crop, rescale or normalize is not CLIPImageProcessor as clip-mem reproduces it',
    );
  }
  if (json.resample !== undefined && json.resample !== 3)
    fail('resample', `${JSON.stringify(json.resample)} is not bicubic (3)`);
  return options;
}

/** The model's own preprocessor_config.json (beside its weights), else sizes from its config. */
export function processorOptionsForModel(model: {
  config: ClipConfig;
  weightsFile: string;
  convertedFrom?: string;
}): ProcessorOptions {
  const file = path.join(path.dirname(model.convertedFrom ?? model.weightsFile), 'preprocessor_config.json');
  return fs.existsSync(file) ? readPreprocessorConfig(file) : processorOptionsFor(model.config);
}

function describeInput(input: ImageInput): string {
  if (typeof input === 'string') return input;
  if (input instanceof Uint8Array && !('width' in input)) return `the image buffer (${input.length} bytes)`;
  return 'the raw image';
}

/** Decodes (or converts) the input to 8-bit RGB, HWC. */
async function toRgb8(
  input: ImageInput,
  maxPixels: number,
): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  if (typeof input === 'object' && 'layout' in input) return rawToRgb8(input);
  const what = describeInput(input);
  // loaded on first use: importing clip-mem must not load libvips for commands that never decode images
  const sharp = require('sharp') as typeof import('sharp').default;
  let image: Sharp;
  let width: number;
  let height: number;
  try {
    image = sharp(input as string | Buffer, { failOn: 'truncated', limitInputPixels: false });
    const meta = await image.metadata();
    width = meta.width ?? 0;
    height = meta.height ?? 0;
  } catch (error) {
    throw new ImageInputError(
      `cannot decode ${what}: ${(error as Error).message}. Pass a PNG, JPEG, WebP, GIF, TIFF or AVIF image.`,
    );
  }
  if (width * height > maxPixels) {
    throw new ImageInputError(
      `${what} is ${width}x${height} = ${width * height} pixels, over the limit of ${maxPixels}: decoding it would need ` +
        `${width * height * 3} bytes before resizing to 224. Downscale it first, or raise maxPixels.`,
    );
  }
  try {
    const { data, info } = await image
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (error) {
    throw new ImageInputError(`cannot decode ${what}: ${(error as Error).message} (is the file truncated or corrupt?)`);
  }
}

function rawToRgb8(image: RawImage): { rgb: Uint8Array; width: number; height: number } {
  const { data, width, height, channels, layout } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new ImageInputError(`raw image: width and height must be positive integers, got ${width}x${height}`);
  }
  if (![1, 3, 4].includes(channels))
    throw new ImageInputError(`raw image: channels must be 1, 3 or 4, got ${channels}`);
  if (layout !== 'hwc' && layout !== 'chw')
    throw new ImageInputError(`raw image: layout must be 'hwc' or 'chw', got ${JSON.stringify(layout)}`);
  if (data.length !== width * height * channels) {
    throw new ImageInputError(
      `raw image: ${data.length} values, but ${width}x${height}x${channels} (${layout}) needs ${width * height * channels}`,
    );
  }
  let toByte: (v: number) => number = (v) => v;
  if (data instanceof Float32Array) {
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (Number.isNaN(v))
        throw new ImageInputError(`raw image: value ${i} is NaN; float images must hold values in [0, 1]`);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    if (min < 0 || max > 1) {
      const hint =
        min >= 0 && max <= 255
          ? 'these look like 0..255 pixel values: pass them as a Uint8Array, or divide by 255'
          : min < 0
            ? 'these look already normalised (pixel_values): give them to the model directly, without the processor'
            : 'rescale them to [0, 1]';
      throw new ImageInputError(
        `raw image: float values must be in [0, 1], saw [${+min.toPrecision(6)}, ${+max.toPrecision(6)}]; ${hint}`,
      );
    }
    toByte = (v) => Math.trunc(v * 255); // numpy's astype(uint8) after x255, as transformers' to_pil_image
  }
  const rgb = new Uint8Array(width * height * 3);
  const plane = width * height;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const source = channels === 1 ? 0 : c;
      const index = layout === 'hwc' ? p * channels + source : source * plane + p;
      rgb[p * 3 + c] = toByte(data[index]);
    }
  }
  return { rgb, width, height };
}

function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** PIL's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, the first input index and weights. */
function coefficients(
  inSize: number,
  outSize: number,
): { starts: Int32Array; counts: Int32Array; weights: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const starts = new Int32Array(outSize);
  const counts = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bicubic((x + xmin - center + 0.5) / filterScale);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    starts[xx] = xmin;
    counts[xx] = xmax;
  }
  return { starts, counts, weights, ksize };
}

function clip8(sum: number): number {
  const v = Math.floor(sum / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** PIL's Image.resize(BICUBIC) of an 8-bit RGB image (HWC), horizontal pass first, 8-bit in between. */
export function resizeBicubicPil(
  rgb: Uint8Array,
  width: number,
  height: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  let current = rgb;
  let currentWidth = width;
  if (outWidth !== width) {
    const { starts, counts, weights, ksize } = coefficients(width, outWidth);
    const out = new Uint8Array(outWidth * height * 3);
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let xx = 0; xx < outWidth; xx++) {
        const base = xx * ksize;
        for (let c = 0; c < 3; c++) {
          let sum = ONE / 2;
          for (let x = 0; x < counts[xx]; x++) sum += current[row + (starts[xx] + x) * 3 + c] * weights[base + x];
          out[(y * outWidth + xx) * 3 + c] = clip8(sum);
        }
      }
    }
    current = out;
    currentWidth = outWidth;
  }
  if (outHeight !== height) {
    const { starts, counts, weights, ksize } = coefficients(height, outHeight);
    const out = new Uint8Array(currentWidth * outHeight * 3);
    const stride = currentWidth * 3;
    for (let yy = 0; yy < outHeight; yy++) {
      const base = yy * ksize;
      for (let i = 0; i < stride; i++) {
        let sum = ONE / 2;
        for (let y = 0; y < counts[yy]; y++) sum += current[(starts[yy] + y) * stride + i] * weights[base + y];
        out[yy * stride + i] = clip8(sum);
      }
    }
    current = out;
  }
  return current;
}

/** One image -> 3 x crop x crop normalised float32 (CHW). */
export async function preprocessImage(input: ImageInput, options: ProcessorOptions = {}): Promise<Float32Array> {
  const shortest = options.shortestEdge ?? 224;
  const crop = options.cropSize ?? 224;
  const mean = options.mean ?? CLIP_MEAN;
  const std = options.std ?? CLIP_STD;
  const { rgb, width, height } = await toRgb8(input, options.maxPixels ?? DEFAULT_MAX_PIXELS);
  // transformers' get_resize_output_image_size(default_to_square=False)
  const [outWidth, outHeight] =
    width <= height
      ? [shortest, Math.trunc((shortest * height) / width)]
      : [Math.trunc((shortest * width) / height), shortest];
  const resized = resizeBicubicPil(rgb, width, height, outWidth, outHeight);
  if (outWidth < crop || outHeight < crop) {
    throw new ImageInputError(
      `cropSize ${crop} is larger than the resized image ${outWidth}x${outHeight}: use shortestEdge >= cropSize`,
    );
  }
  const top = Math.floor((outHeight - crop) / 2);
  const left = Math.floor((outWidth - crop) / 2);
  const out = new Float32Array(3 * crop * crop);
  for (let c = 0; c < 3; c++) {
    const plane = c * crop * crop;
    for (let y = 0; y < crop; y++) {
      for (let x = 0; x < crop; x++) {
        const v = resized[((top + y) * outWidth + left + x) * 3 + c] * (1 / 255);
        out[plane + y * crop + x] = (v - mean[c]) / std[c];
      }
    }
  }
  return out;
}

/** Several images -> one batch (batch x 3 x crop x crop). */
export async function preprocessImages(
  inputs: readonly ImageInput[],
  options: ProcessorOptions = {},
): Promise<PixelBatch> {
  const size = options.cropSize ?? 224;
  const pixelValues = new Float32Array(inputs.length * 3 * size * size);
  for (const [i, input] of inputs.entries())
    pixelValues.set(await preprocessImage(input, options), i * 3 * size * size);
  return { pixelValues, batch: inputs.length, size };
}
