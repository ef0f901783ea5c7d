// The child of `clip-mem fit --verify --optimizer sgd`: one training step of clip-mem's onnx trainer with
// plain SGD (p -= lr x g, no state) instead of AdamW, which `clip-mem run` does not offer. Started through
// the tracker's launcher (sgd-verify.ts), so its limits are in force before exec; it writes its kernel
// high-water marks to the file the parent names. A child killed by the kernel writes nothing.
import * as fs from 'node:fs';
import { createOnnxTrainer } from '../clip/onnx';
import { resolveClipConfig } from '../clip/config';
import { known } from '../probe/field';
import { readProcessStatus } from '../probe/proc';
import { syntheticIds, syntheticPixels } from '../scenarios/inputs';
import { setPhase } from '../track/phase';

export const SGD_REQUEST_ENV = 'CLIP_MEM_SGD_STEP';
export const SGD_RESULT_ENV = 'CLIP_MEM_SGD_STEP_RESULT';

export interface SgdStepRequest {
  model: string;
  weightsFile: string;
  batch: number;
  threads: number;
  lr: number;
}

export interface SgdStepReport {
  rssPeak: number;
  vmSizePeak: number;
  loss: number;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.env[SGD_REQUEST_ENV] ?? 'null') as SgdStepRequest | null;
  const resultFile = process.env[SGD_RESULT_ENV];
  if (!request || !resultFile) throw new Error(`the SGD step child needs ${SGD_REQUEST_ENV} and ${SGD_RESULT_ENV}: it is started by \`clip-mem fit --verify\``);
  const config = resolveClipConfig(request.model);
  setPhase('train load weights and build the training graph');
  const trainer = await createOnnxTrainer({ config, weightsFile: request.weightsFile }, { batch: request.batch, threads: request.threads });
  setPhase(`train step batch ${request.batch} (onnxruntime gradients + SGD)`);
  const loss = await trainer.computeGradients(syntheticPixels(config, request.batch), syntheticIds(config, request.batch), (name, grad) => {
    const p = trainer.params.get(name)!;
    for (let i = 0; i < p.length; i++) p[i] -= request.lr * grad[i];
  });
  const status = readProcessStatus();
  const report: SgdStepReport = { rssPeak: known(status.vmHwm) ?? -1, vmSizePeak: known(status.vmPeak) ?? -1, loss };
  fs.writeFileSync(resultFile, JSON.stringify(report));
  process.exit(0);
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`clip-mem SGD step child: ${(error as Error).stack ?? error}\n`);
    process.exit(70);
  });
}
