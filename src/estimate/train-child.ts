// The child of `clip-mem fit --verify` for the training steps `clip-mem run` does not offer: plain SGD
// (p -= lr x g, no state) instead of AdamW, or the trainer's backward graphs in several segments per
// tower. Started through the tracker's launcher (fit.ts), so its limits are in force before exec; it
// writes its kernel high-water marks to the file the parent names. A child killed by the kernel writes
// nothing.
import * as fs from 'node:fs';
import { createOnnxTrainer } from '../clip/onnx';
import { resolveClipConfig } from '../clip/config';
import { known } from '../core/field';
import { readProcessStatus } from '../probe/proc';
import { syntheticIds, syntheticPixels } from '../scenarios/inputs';
import { setPhase } from '../core/phase';

export const TRAIN_REQUEST_ENV = 'CLIPMEM_TRAIN_STEP';
export const TRAIN_RESULT_ENV = 'CLIPMEM_TRAIN_STEP_RESULT';

export interface TrainStepRequest {
  model: string;
  weightsFile: string;
  batch: number;
  threads: number;
  optimizer: 'adamw' | 'sgd';
  segments: number;
  lr: number;
}

export interface TrainStepReport {
  rssPeak: number;
  vmSizePeak: number;
  loss: number;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.env[TRAIN_REQUEST_ENV] ?? 'null') as TrainStepRequest | null;
  const resultFile = process.env[TRAIN_RESULT_ENV];
  if (!request || !resultFile)
    throw new Error(
      `the training step child needs ${TRAIN_REQUEST_ENV} and ${TRAIN_RESULT_ENV}: it is started by \`clip-mem fit --verify\``,
    );
  const config = resolveClipConfig(request.model);
  setPhase('train load weights and build the training graph');
  const trainer = await createOnnxTrainer(
    { config, weightsFile: request.weightsFile },
    { batch: request.batch, threads: request.threads, segments: request.segments, adamw: { lr: request.lr } },
  );
  setPhase(
    `train step batch ${request.batch} (onnxruntime gradients, ${request.segments} segment(s) per tower + ${request.optimizer})`,
  );
  const pixels = syntheticPixels(config, request.batch);
  const ids = syntheticIds(config, request.batch);
  const loss =
    request.optimizer === 'adamw'
      ? await trainer.step(pixels, ids)
      : await trainer.computeGradients(pixels, ids, (name, grad) => {
          const p = trainer.params.get(name)!;
          for (let i = 0; i < p.length; i++) p[i] -= request.lr * grad[i];
        });
  const status = readProcessStatus();
  const report: TrainStepReport = { rssPeak: known(status.vmHwm) ?? -1, vmSizePeak: known(status.vmPeak) ?? -1, loss };
  fs.writeFileSync(resultFile, JSON.stringify(report));
  process.exit(0);
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`clip-mem training step child: ${(error as Error).stack ?? error}\n`);
    process.exit(70);
  });
}
