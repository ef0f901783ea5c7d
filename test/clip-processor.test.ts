import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { presetConfig } from '../src/clip/config';
import { createHash } from 'node:crypto';
import {
  ImageInputError,
  preprocessImage,
  preprocessImages,
  processorOptionsFor,
  processorOptionsForModel,
  readPreprocessorConfig,
  resizeBicubicPil,
} from '../src/clip/processor';
import { referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const imageFile = path.join(referenceDir, 'image.png');

/** A little-endian float32 .npy array. */
function readNpy(file: string): { shape: number[]; data: Float32Array } {
  const bytes = fs.readFileSync(file);
  const headerLength = bytes.readUInt16LE(8);
  const header = bytes.subarray(10, 10 + headerLength).toString('latin1');
  if (!header.includes("'descr': '<f4'") || header.includes("'fortran_order': True"))
    throw new Error(`${file}: not a C-order float32 array: ${header}`);
  const shape = header
    .match(/'shape': \(([^)]*)\)/)![1]
    .split(',')
    .filter((s) => s.trim())
    .map(Number);
  const data = new Float32Array(
    bytes.buffer.slice(bytes.byteOffset + 10 + headerLength, bytes.byteOffset + bytes.length),
  );
  return { shape, data };
}

test('image.png -> CLIPImageProcessor pixel_values within 0.02 (file and buffer inputs)', async (t) => {
  const expected = readNpy(path.join(referenceDir, 'image.pixel_values.npy'));
  t.deepEqual(expected.shape, [3, 224, 224]);
  for (const input of [imageFile, fs.readFileSync(imageFile)]) {
    const actual = await preprocessImage(input);
    t.is(actual.length, expected.data.length);
    let worst = 0;
    for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected.data[i]));
    t.true(worst <= 0.02, `max abs difference ${worst}`);
    t.log(`max abs difference ${worst.toExponential(2)}`);
  }
});

test('raw inputs: uint8 HWC, float HWC and float CHW in [0, 1] give the same pixels', async (t) => {
  const { data, info } = await sharp(imageFile).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const { width, height } = info;
  const hwc = new Uint8Array(data);
  const floatHwc = Float32Array.from(hwc, (v) => v / 255);
  const floatChw = new Float32Array(hwc.length);
  for (let p = 0; p < width * height; p++)
    for (let c = 0; c < 3; c++) floatChw[c * width * height + p] = floatHwc[p * 3 + c];
  const fromFile = await preprocessImage(imageFile);
  const fromU8 = await preprocessImage({ data: hwc, width, height, channels: 3, layout: 'hwc' });
  t.deepEqual(fromU8, fromFile);
  const fromHwc = await preprocessImage({ data: floatHwc, width, height, channels: 3, layout: 'hwc' });
  const fromChw = await preprocessImage({ data: floatChw, width, height, channels: 3, layout: 'chw' });
  t.deepEqual(fromHwc, fromChw);
  t.true(fromHwc.every((v, i) => Math.abs(v - fromFile[i]) < 0.03)); // x/255*255 truncates like numpy
});

test('a batch concatenates images; the tiny preset processes to 32x32', async (t) => {
  const batch = await preprocessImages([imageFile, imageFile], processorOptionsFor(presetConfig('tiny')));
  t.is(batch.batch, 2);
  t.is(batch.size, 32);
  t.is(batch.pixelValues.length, 2 * 3 * 32 * 32);
  t.deepEqual(batch.pixelValues.subarray(0, 3072), batch.pixelValues.subarray(3072));
});

test('float input out of [0, 1] says what it saw and what to pass', async (t) => {
  const pixels = (values: number[]) => ({
    data: Float32Array.from(values),
    width: 2,
    height: 1,
    channels: 3 as const,
    layout: 'hwc' as const,
  });
  await t.throwsAsync(preprocessImage(pixels([0, 12, 255, 3, 4, 5])), {
    instanceOf: ImageInputError,
    message:
      'raw image: float values must be in [0, 1], saw [0, 255]; these look like 0..255 pixel values: pass them as a Uint8Array, or divide by 255',
  });
  await t.throwsAsync(preprocessImage(pixels([-1.79, 0, 2.1, 0, 0, 0])), {
    message: /saw \[-1.79, 2.1\]; these look already normalised \(pixel_values\)/,
  });
  await t.throwsAsync(preprocessImage(pixels([0, 0, 0, 0, 0, 300])), {
    message: /saw \[0, 300\]; rescale them to \[0, 1\]/,
  });
  await t.throwsAsync(preprocessImage(pixels([0, NaN, 0, 0, 0, 0])), { message: /value 1 is NaN/ });
  await t.throwsAsync(preprocessImage({ ...pixels([0, 0, 0]), width: 2 }), {
    message: /3 values, but 2x1x3 \(hwc\) needs 6/,
  });
});

test('corrupt, truncated and oversized images get clear errors', async (t) => {
  const png = fs.readFileSync(imageFile);
  await t.throwsAsync(preprocessImage(Buffer.from('definitely not an image')), {
    instanceOf: ImageInputError,
    message: /^cannot decode the image buffer \(23 bytes\): .*Pass a PNG, JPEG/,
  });
  const big = await sharp({
    create: {
      width: 300,
      height: 200,
      channels: 3,
      background: '#808080',
      noise: { type: 'gaussian', mean: 128, sigma: 60 },
    },
  })
    .png()
    .toBuffer();
  await t.throwsAsync(preprocessImage(big.subarray(0, Math.floor(big.length / 2))), {
    instanceOf: ImageInputError,
    message: /^cannot decode the image buffer/,
  });
  await t.throwsAsync(preprocessImage(png, { maxPixels: 1000 }), {
    message:
      'the image buffer (119 bytes) is 50x40 = 2000 pixels, over the limit of 1000: decoding it would need 6000 bytes before resizing to 224. Downscale it first, or raise maxPixels.',
  });
  // a decompression bomb: the 50x40 PNG with an IHDR claiming 100000x80000 (CRC fixed): refused before decoding
  const bomb = Buffer.from(png);
  bomb.writeUInt32BE(100_000, 16);
  bomb.writeUInt32BE(80_000, 20);
  bomb.writeUInt32BE(zlib.crc32(bomb.subarray(12, 29)), 29);
  await t.throwsAsync(preprocessImage(bomb), {
    message: /^the image buffer \(119 bytes\) is 100000x80000 = 8000000000 pixels, over the limit of 100000000: /,
  });
  await t.throwsAsync(preprocessImage('/no/such/image.png'), { message: /^cannot decode \/no\/such\/image.png: / });
});

test('preprocessor_config.json sets the sizes and statistics; other processors are refused', (t) => {
  const dir = scratchDir('clip-preprocessor-');
  const file = path.join(dir, 'preprocessor_config.json');
  // openai/clip-vit-base-patch32's file
  fs.writeFileSync(
    file,
    JSON.stringify({
      crop_size: 224,
      do_center_crop: true,
      do_normalize: true,
      do_resize: true,
      feature_extractor_type: 'CLIPFeatureExtractor',
      image_mean: [0.48145466, 0.4578275, 0.40821073],
      image_std: [0.26862954, 0.26130258, 0.27577711],
      resample: 3,
      size: 224,
    }),
  );
  t.deepEqual(readPreprocessorConfig(dir), {
    shortestEdge: 224,
    cropSize: 224,
    mean: [0.48145466, 0.4578275, 0.40821073],
    std: [0.26862954, 0.26130258, 0.27577711],
  });
  t.deepEqual(
    processorOptionsForModel({ config: presetConfig('tiny'), weightsFile: path.join(dir, 'model.safetensors') })
      .cropSize,
    224,
  );
  t.deepEqual(
    processorOptionsForModel({
      config: presetConfig('tiny'),
      weightsFile: path.join(referenceDir, 'model.safetensors'),
    }),
    { shortestEdge: 32, cropSize: 32 },
  );
  fs.writeFileSync(file, JSON.stringify({ size: { shortest_edge: 336 }, crop_size: { height: 336, width: 336 } }));
  t.deepEqual(readPreprocessorConfig(file), { shortestEdge: 336, cropSize: 336 });
  fs.writeFileSync(file, JSON.stringify({ crop_size: { height: 224, width: 200 } }));
  t.throws(() => readPreprocessorConfig(file), {
    message: `${file}: crop_size: non-square crops ({"height":224,"width":200}) are not CLIP's`,
  });
  fs.writeFileSync(file, JSON.stringify({ resample: 2 }));
  t.throws(() => readPreprocessorConfig(file), { message: /resample: 2 is not bicubic/ });
});

// sha256 of PIL 9.4's Image.resize(BICUBIC) output (test/fixtures/processor/pil-bicubic.py): down- and
// upscaling along either axis, and the identity.
const PIL_BICUBIC: Record<string, [number, number, string]> = {
  '400x300': [298, 224, '92d282c69aec879f2799ef1bb5c5a570bc53f43e625a7e19f08dfc999441ff3d'],
  '1000x250': [896, 224, '9e5e5162fe7ad6b6a7254e77f766efe35255ae8d070bef07c36a925028418664'],
  '97x513': [224, 1184, '700adf9252f3b2f2712895b1b2b2c8630164a942547ed78603cd0059d0e454de'],
  '50x40': [280, 224, 'bbfab2f79bf49dbfe1026a7622039345aa9089d3165b6abe4d4add212e342a50'],
  '224x224': [224, 224, '5718ac9d744439f6603a7b31485cff8638a5b7037c11b77e4289db0df87ad9c1'],
  '225x224': [225, 224, '829393501477081be3012cd68f4cf03cbd4b6d988167b996899df0f02829e749'],
};

test('resizeBicubicPil is bit-exact with PIL, downscaling and upscaling', (t) => {
  for (const [size, [outWidth, outHeight, hash]] of Object.entries(PIL_BICUBIC)) {
    const [w, h] = size.split('x').map(Number);
    const image = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++) image[(y * w + x) * 3 + c] = (x * 7 + y * 13 + c * 50 + ((x * y) % 31)) % 256;
    t.is(
      createHash('sha256')
        .update(resizeBicubicPil(image, w, h, outWidth, outHeight))
        .digest('hex'),
      hash,
      size,
    );
  }
});
