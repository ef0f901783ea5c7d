// onnxruntime-node CLIP: inference (the default runtime) and the fast training path.
//
// API:
//   createOnnxClip(checkpoint, { config?, preset?, threads? }): Promise<OnnxClip>
//     encodeImage(pixels, batch) / encodeText(ids, batch) / forward(pixels, ids, batch) / close()
//   createOnnxTrainer(checkpoint, { batch, seq?, config?, preset?, threads?, adamw? }): Promise<OnnxTrainer>
//     computeGradients(pixels, ids) / applyAdamW() / step(pixels, ids) / params / grads / close()
//   sessionOptions(threads, externalDataDir?)   the ORT options every clip-mem session uses
export { createOnnxClip, buildInferenceModel, sessionOptions } from './runtime';
export type { OnnxClip, OnnxClipOptions, ClipOutputs, InferenceGraph } from './runtime';
export { createOnnxTrainer, buildTrainingModel, gradName } from './train';
export type { OnnxTrainer, OnnxTrainerOptions, AdamWOptions } from './train';
