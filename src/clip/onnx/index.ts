// onnxruntime-node CLIP: inference (the default runtime) and the fast training path.
//
// API:
//   createOnnxClip(model, { threads?, format? }): Promise<OnnxClip>
//     encodeImage(pixels, batch) / encodeText(ids, batch) / forward(pixels, ids, batch) / close()
//   createOnnxTrainer(model, { batch, seq?, threads?, segments?, adamw? }): Promise<OnnxTrainer>
//     loss(pixels, ids) / computeGradients(pixels, ids, visit) / step(pixels, ids) / params / close()
//   sessionOptions(threads, externalDataDir?)   the ORT options every clip-mem session uses
export {
  createOnnxClip,
  buildInferenceModel,
  inferenceGraph,
  sessionOptions,
  resolveModel,
  onnxruntime,
} from './runtime';
export type { OnnxClip, OnnxClipOptions, ClipOutputs, ClipModelSpec, InferenceGraph } from './runtime';
export { createOnnxTrainer, buildTrainingModels, gradName, DEFAULT_TRAINING_SEGMENTS } from './train';
export type { OnnxTrainer, OnnxTrainerOptions, AdamWOptions, TrainingModel } from './train';
