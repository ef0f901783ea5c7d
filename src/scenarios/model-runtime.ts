// The runtime a model scenario uses: onnxruntime-node (the default, for inference and the fast training
// path), or tfjs on one named backend when --backend names one. tfjs is loaded only then (~0.9 s).
import { createOnnxClip, createOnnxTrainer } from '../clip/onnx';
import { loadSafetensors } from '../clip/safetensors';
import type { TfjsBackendName } from '../clip/tfjs/backend';
import type { ClipBatch, ClipTfjs } from '../clip/tfjs/model';
import { setPhase } from '../core/phase';
import type { Figures, ScenarioOptions } from './scenario';
import { syntheticIds, syntheticPixels } from './inputs';

/** The tfjs backend --backend names: anything but auto and onnxruntime (the option's choices, catalog.ts). */
function tfjsBackend(options: ScenarioOptions): TfjsBackendName | null {
  return options.backend === 'auto' || options.backend === 'onnxruntime' ? null : (options.backend as TfjsBackendName);
}

async function tfjsModel(options: ScenarioOptions, backend: TfjsBackendName): Promise<ClipTfjs> {
  const loaded = loadSafetensors(options.checkpoint, { mode: 'mmap' });
  setPhase('build the tfjs model');
  const { ClipTfjs: tfjs } = require('../clip/tfjs/model') as typeof import('../clip/tfjs/model');
  const model = await tfjs.create(loaded.tensors, options.config, { backends: [backend] });
  // Other backends copy the weights in (cpu reads them in place): unmapping returns the file's pages.
  if (model.backend.name !== 'cpu') loaded.close();
  return model;
}

/** Deterministic images and texts for `batch` pairs, in the shapes both runtimes take. */
function syntheticBatch(options: ScenarioOptions, batch: number): ClipBatch {
  const config = options.config;
  const size = config.vision.imageSize;
  return {
    images: { data: syntheticPixels(config, batch), shape: [batch, 3, size, size] },
    texts: { data: syntheticIds(config, batch), shape: [batch, config.text.maxPositionEmbeddings] },
  };
}

/** Image and text towers on `batch` images and texts, with the contrastive loss, no gradients. */
export async function forwardScenario(options: ScenarioOptions, batch: number, label: string): Promise<Figures> {
  const config = options.config;
  const inputs = syntheticBatch(options, batch);
  const backend = tfjsBackend(options);
  if (backend) {
    const model = await tfjsModel(options, backend);
    setPhase(`${label} forward batch ${batch} (tfjs ${model.backend.name})`);
    const out = model.forward(inputs);
    return {
      runtime: `tfjs ${model.backend.name}`,
      batch,
      embeddingValues: out.imageEmbeds.length,
      loss: Number((out.loss ?? NaN).toFixed(4)),
    };
  }
  setPhase(`${label} create onnxruntime session`);
  const clip = await createOnnxClip({ config, weightsFile: options.checkpoint }, { threads: options.threads });
  setPhase(`${label} forward batch ${batch} (onnxruntime)`);
  const out = await clip.forward(inputs.images.data, inputs.texts.data, batch);
  await clip.close();
  return { runtime: 'onnxruntime', batch, embeddingValues: out.imageEmbeds.length, loss: Number(out.loss.toFixed(4)) };
}

/** One training step: loss, gradients of every parameter, AdamW update. */
export async function trainScenario(options: ScenarioOptions, batch: number): Promise<Figures> {
  const config = options.config;
  const inputs = syntheticBatch(options, batch);
  const { data: pixels } = inputs.images;
  const { data: ids } = inputs.texts;
  const backend = tfjsBackend(options);
  if (backend) {
    const model = await tfjsModel(options, backend);
    setPhase(`train step batch ${batch} (tfjs ${model.backend.name})`);
    const step = model.trainStep(inputs);
    return { runtime: `tfjs ${model.backend.name}`, batch, loss: Number(step.loss.toFixed(4)) };
  }
  setPhase('train load weights and build the training graph');
  const trainer = await createOnnxTrainer(
    { config, weightsFile: options.checkpoint },
    { batch, threads: options.threads },
  );
  setPhase(`train step batch ${batch} (onnxruntime gradients + AdamW)`);
  const loss = await trainer.step(pixels, ids);
  setPhase('train loss after the step');
  const after = await trainer.loss(pixels, ids);
  await trainer.close();
  return { runtime: 'onnxruntime', batch, loss: Number(loss.toFixed(4)), lossAfterStep: Number(after.toFixed(4)) };
}
