// The tfjs CLIP model on tfjs's pure-JavaScript cpu backend against the PyTorch reference, int8
// weight-only checkpoints, and the errors bad input gets.
import test from 'ava';
import { presetConfig } from '../src/clip/config';
import { dequantizeInt8, int8ScaleName } from '../src/clip/dtype';
import { loadSafetensors } from '../src/clip/safetensors';
import { ensureSyntheticCheckpoint } from '../src/clip/synthetic';
import type { TensorMap } from '../src/clip/tensor';
import { ClipTfjs } from '../src/clip/tfjs/model';
import { referenceBatch, referenceConfig, referenceTests, referenceWeights } from './helpers/clip-tfjs-reference';
import { scratchDir } from './helpers/scratch';

referenceTests(test, 'cpu');

test.serial('cpu: an int8 weight-only checkpoint computes what its dequantized float32 weights compute', async (t) => {
  const cacheDir = scratchDir('clip-tfjs-int8-');
  const { file } = ensureSyntheticCheckpoint({ config: 'tiny', format: 'int8', cacheDir });
  const int8 = loadSafetensors(file, { mode: 'copy' }).tensors;
  const dequantized: TensorMap = new Map();
  for (const [name, tensor] of int8) {
    if (tensor.dtype === 'I8')
      dequantized.set(name, { ...tensor, dtype: 'F32', data: dequantizeInt8(tensor, int8.get(int8ScaleName(name))!) });
    else if (!(name.endsWith('.scale') && int8.get(name.slice(0, -'.scale'.length))?.dtype === 'I8'))
      dequantized.set(name, tensor);
  }
  t.true([...int8.values()].some((tensor) => tensor.dtype === 'I8'));
  const config = presetConfig('tiny');
  const fromInt8 = await ClipTfjs.create(int8, config, { backends: ['cpu'] });
  const fromF32 = await ClipTfjs.create(dequantized, config, { backends: ['cpu'] });
  t.deepEqual(fromInt8.parameterNames, fromF32.parameterNames);
  t.deepEqual(fromInt8.forward(referenceBatch), fromF32.forward(referenceBatch));
  fromInt8.dispose();
  fromF32.dispose();
});

test.serial('cpu: bad input gets an error that names what is wrong', async (t) => {
  const weights = referenceWeights();
  const model = await ClipTfjs.create(weights, referenceConfig, { backends: ['cpu'] });
  t.throws(() => model.embedImages({ data: new Float32Array(3 * 3 * 224 * 224), shape: [3, 3, 224, 224] }), {
    message:
      'ClipTfjs: images must be float32 [n, 3, 32, 32] (NCHW, as CLIPImageProcessor makes them); got shape [3, 3, 224, 224] with 451584 values',
  });
  t.throws(() => model.embedTexts({ data: Int32Array.from([98, 5, 100, 99]), shape: [1, 4] }), {
    message: 'ClipTfjs: token id 100 (row 0, column 2) is outside the vocabulary of 100',
  });
  t.throws(() => model.embedTexts({ data: new Int32Array(17), shape: [1, 17] }), {
    message: 'ClipTfjs: texts are 17 tokens long; the model has 16 positions',
  });
  t.throws(
    () =>
      model.trainStep({
        images: referenceBatch.images,
        texts: { data: referenceBatch.texts.data.slice(0, 32), shape: [2, 16] },
      }),
    {
      message:
        'ClipTfjs.trainStep: the contrastive loss pairs image i with text i, but the batch has 3 images and 2 texts',
    },
  );
  t.throws(() => model.parameter('text_model.no_such.weight'), {
    message: 'ClipTfjs: the model has no parameter text_model.no_such.weight',
  });
  model.dispose();
  await t.throwsAsync(ClipTfjs.create(weights, referenceConfig, { backends: ['wasm', 'tensorflow'] }), {
    message:
      'tfjs already runs on cpu in this process (chosen by an earlier call), and tfjs has one backend per process: wasm, tensorflow cannot run here. Use a new process.',
  });
  const wrongHeads = { ...referenceConfig, text: { ...referenceConfig.text, numAttentionHeads: 5 } };
  await t.throwsAsync(ClipTfjs.create(weights, wrongHeads, { backends: ['cpu'] }), {
    message: 'ClipTfjs: text_model is 32 wide, which 5 attention heads do not divide',
  });
  const withoutProjection = new Map([...weights].filter(([name]) => name !== 'visual_projection.weight'));
  await t.throwsAsync(ClipTfjs.create(withoutProjection, referenceConfig, { backends: ['cpu'] }), {
    message: `ClipTfjs: the checkpoint has no tensor visual_projection.weight, which config ${referenceConfig.name} needs`,
  });
  const widerVocabulary = { ...referenceConfig, text: { ...referenceConfig.text, vocabSize: 200 } };
  await t.throwsAsync(ClipTfjs.create(weights, widerVocabulary, { backends: ['cpu'] }), {
    message: `ClipTfjs: text_model.embeddings.token_embedding.weight has shape [100, 32], but config ${referenceConfig.name} needs [200, 32]`,
  });
});
