// clip-processor: CLIPImageProcessor and the tokenizer on a --batch of inputs: JPEG images decoded by
// sharp, resized (bicubic), centre-cropped and normalised; texts tokenized and padded to the context.
import sharp from 'sharp';
import { preprocessImages, processorOptionsFor } from '../clip/processor';
import { ClipTokenizer } from '../clip/tokenizer';
import { setPhase } from '../core/phase';
import { SAMPLE_IMAGE, catalogEntry } from './catalog';

const { width: WIDTH, height: HEIGHT } = SAMPLE_IMAGE;
import type { Scenario } from './scenario';

const TEXTS = ['a photo of a cat', 'a diagram of a transformer', 'two dogs playing in the snow', 'a plate of food'];

/** A deterministic 640x480 photo-sized JPEG (a gradient with a pattern), as a camera would give. */
function sampleJpeg(index: number): Promise<Buffer> {
  const rgb = Buffer.alloc(WIDTH * HEIGHT * 3);
  for (let y = 0; y < HEIGHT; y++) {
    for (let x = 0; x < WIDTH; x++) {
      const at = (y * WIDTH + x) * 3;
      rgb[at] = (x + index * 40) & 255;
      rgb[at + 1] = (y * 2) & 255;
      rgb[at + 2] = ((x ^ y) + index * 17) & 255;
    }
  }
  return sharp(rgb, { raw: { width: WIDTH, height: HEIGHT, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

export const clipProcessor: Scenario = {
  ...catalogEntry('clip-processor'),
  async run(options) {
    const batch = options.batch;
    setPhase('clip-processor encode sample images');
    const images = await Promise.all(Array.from({ length: batch }, (_, i) => sampleJpeg(i)));
    setPhase(`clip-processor preprocess ${batch} image(s)`);
    const pixels = await preprocessImages(images, processorOptionsFor(options.config));
    setPhase(`clip-processor tokenize ${batch} text(s)`);
    const tokenizer = options.tokenizer
      ? ClipTokenizer.fromFiles(options.tokenizer)
      : ClipTokenizer.synthetic(options.config);
    const texts = Array.from({ length: batch }, (_, i) => TEXTS[i % TEXTS.length]);
    const tokens = tokenizer.tokenize(texts);
    let sum = 0;
    for (const v of pixels.pixelValues) sum += v;
    return {
      images: pixels.batch,
      imageSize: pixels.size,
      pixelMean: Number((sum / pixels.pixelValues.length).toFixed(4)),
      tokenizer: options.tokenizer ? 'model files' : `synthetic (${tokenizer.vocabSize} ids)`,
      textTokens: tokens.attentionMask.reduce((a, b) => a + b, 0),
    };
  },
};
