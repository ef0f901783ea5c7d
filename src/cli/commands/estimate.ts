// `clip-mem estimate`: per phase, what CLIP needs of RSS and of address space in clip-mem's runtime,
// and `--calibrate` to measure what the model terms miss.
import * as os from 'node:os';
import type { CommandModule } from 'yargs';
import {
  BATCH_RANGE,
  checkModelConfig,
  countOption,
  exitStatus,
  jsonTarget,
  once,
  parseCount,
  SEGMENTS_RANGE,
  THREADS_RANGE,
  withJsonOption,
  writeJson,
  type JsonArgs,
  usageCheck,
  stoppable,
} from '../options';
import { DEFAULT_TRAINING_SEGMENTS } from '../../clip/onnx/train';
import { resolveClipConfig, WEIGHT_FORMATS, type WeightFormat } from '../../clip/config';
import { calibrate, ensureBaseline } from '../../commands/calibrate';
import { ESTIMATE_SCHEMA, estimatePhase, SGD_UNCALIBRATED, type PhaseEstimate } from '../../estimate/estimate';
import { OPTIMIZERS, PHASES, phasesOf, type Optimizer, type Phase } from '../../estimate/model';
import { renderAccelerate, renderHeader, renderPhase } from '../../estimate/render';
import { loadRuntimeRecord, storeFile, type Calibration } from '../../estimate/store';
import { formatBytes } from '../../core/units';

interface EstimateArgs extends JsonArgs {
  model: string;
  dtype: WeightFormat;
  batch: number;
  phase?: Phase;
  optimizer: Optimizer;
  segments: number;
  threads: number;
  calibrate: boolean;
  'calibrate-batches': string;
  'refresh-baseline': boolean;
}

export const defaultThreads = (): number => Math.min(os.cpus().length, 4);

export const progressLine = (line: string): void => {
  process.stderr.write(
    process.stderr.isTTY ? `\r\x1b[K${line.slice(0, (process.stderr.columns || 120) - 1)}` : `${line}\n`,
  );
};
export const endProgress = (): void => {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
};

/** The mean of measured - modelled over a calibration's points: the constant the estimate adds. */
const meanMiss = (c: Calibration, key: 'rss' | 'vmSize') =>
  c.points.reduce((sum, p) => sum + p.measured[key] - p.modelled[key], 0) / c.points.length;
const signedBytes = (bytes: number) => (bytes < 0 ? `-${formatBytes(-bytes)}` : `+${formatBytes(bytes)}`);

export function parseBatches(text: string): number[] {
  const option = '--calibrate-batches';
  const values = once(text, option).split(',');
  if (values.length > 16)
    throw new Error(`${option} "${text}": at most 16 batch sizes, separated by commas (e.g. 1,4)`);
  const batches = values.map((value) => {
    try {
      return parseCount(value, option, BATCH_RANGE);
    } catch (error) {
      throw new Error(`${(error as Error).message}, for each of the sizes separated by commas (e.g. 1,4)`);
    }
  });
  return [...new Set(batches)].sort((a, b) => a - b);
}

export const estimateCommand: CommandModule<object, EstimateArgs> = {
  command: 'estimate',
  describe:
    "Predict each phase's peak RSS and address space for a CLIP model in clip-mem's runtime (and --calibrate it)",
  builder: (yargs) =>
    withJsonOption(yargs, 'the estimates (schema/estimate.schema.json)')
      .option('model', {
        type: 'string',
        default: 'vit-b-32',
        describe: 'preset (vit-b-32, vit-b-16, vit-l-14, tiny), a model directory or config.json',
      })
      .option('dtype', {
        choices: WEIGHT_FORMATS,
        default: 'fp32' as WeightFormat,
        describe: 'weight format of the checkpoint (training widens to float32)',
      })
      .option('batch', countOption('batch', 'images (and as many texts) per forward or training step', BATCH_RANGE, 2))
      .option('phase', { choices: PHASES, describe: 'one phase (default: load, forward and train)' })
      .option('optimizer', {
        choices: OPTIMIZERS,
        default: 'adamw' as Optimizer,
        describe: 'train: AdamW (two float32 moments, what clip-mem run trains with) or plain SGD (no state)',
      })
      .option(
        'segments',
        countOption(
          'segments',
          "train: the trainer's backward graphs per tower (more: fewer gradients at once; the default is what clip-mem run trains with)",
          SEGMENTS_RANGE,
          DEFAULT_TRAINING_SEGMENTS,
        ),
      )
      .option(
        'threads',
        countOption(
          'threads',
          'compute threads (the baseline is measured per thread count)',
          THREADS_RANGE,
          defaultThreads(),
        ),
      )
      .option('calibrate', {
        type: 'boolean',
        default: false,
        describe:
          'run the phases (or --phase) at --calibrate-batches in children and store the fits for this runtime; training with --optimizer (with sgd: the train phase only, in the training child fit --verify uses)',
      })
      .option('calibrate-batches', { type: 'string', default: '1,4', describe: 'batch sizes --calibrate runs' })
      .option('refresh-baseline', { type: 'boolean', default: false, describe: 'measure the runtime baseline again' })
      .check(
        usageCheck((args) => {
          checkModelConfig(args.model, '--model');
          if (args.phase === 'train' && args.dtype === 'int8')
            throw new Error(
              '--phase train needs --dtype fp32 or fp16: the trainer refuses int8 weight-only checkpoints',
            );
          if (args.calibrate && args.optimizer === 'sgd') {
            if (args.phase !== undefined && args.phase !== 'train')
              throw new Error(
                `--optimizer sgd: only the train phase has an optimizer; --calibrate --phase ${args.phase} calibrates it without --optimizer`,
              );
            if (args.dtype === 'int8')
              throw new Error(
                '--optimizer sgd needs --dtype fp32 or fp16: the trainer refuses int8 weight-only checkpoints',
              );
          }
          parseBatches(args['calibrate-batches']);
        }),
      )
      .example('$0 estimate', 'vit-b-32 fp32 at batch 2: load, forward and train, beside accelerate')
      .example('$0 estimate --model vit-l-14 --phase train --batch 8', 'a model never run here, with its uncertainty')
      .example(
        '$0 estimate --calibrate --dtype fp16',
        'measure vit-b-32 fp16 at batch 1 and 4 in children, store the fits',
      )
      .example(
        '$0 estimate --calibrate --optimizer sgd',
        "the plain SGD step too (what fit proposes when AdamW's moments do not fit)",
      )
      .epilogue(
        'Each phase lists the runtime baseline (measured once per runtime in children, cached in ' +
          `${storeFile()}), weights, gradients, optimizer states and activations (from the graphs clip-mem runs), ` +
          'and the calibration correction, each as RSS (what cgroups and the OOM killer count) and as VmSize ' +
          '(what RLIMIT_AS / ulimit -v counts).\n\n' +
          exitStatus('0 when the estimates (or the calibration) were made; 1 when a measurement failed'),
      ),
  // SIGINT, SIGTERM, SIGHUP during --calibrate or a first-use baseline: the running child is killed (stoppable).
  handler: (args) => stoppable(() => estimate(args)),
};

async function estimate(args: EstimateArgs): Promise<void> {
  const config = resolveClipConfig(args.model);
  const quiet = jsonTarget(args) !== null ? () => undefined : progressLine;
  if (args.calibrate) {
    const calibrations = await calibrate(
      args.model,
      args.dtype,
      parseBatches(args['calibrate-batches']),
      args.threads,
      progressLine,
      args.phase,
      args.optimizer,
    );
    endProgress();
    if (jsonTarget(args) !== null) {
      writeJson(args, { schema: ESTIMATE_SCHEMA, calibrations });
      return;
    }
    for (const c of calibrations) {
      const points = c.points
        .map((p) => `batch ${p.batch}: ${formatBytes(p.measured.rss)} (model ${formatBytes(p.modelled.rss)})`)
        .join(', ');
      process.stdout.write(
        `${c.model} ${c.dtype} ${c.phase}: measured peak RSS = ${formatBytes(c.measuredFit.rss.constant)} + ${formatBytes(c.measuredFit.rss.slope)} x batch; ` +
          `the terms miss ${signedBytes(meanMiss(c, 'rss'))} of RSS and ${signedBytes(meanMiss(c, 'vmSize'))} of VmSize (the constant the estimate adds)  [${points}]\n`,
      );
    }
    const stored = loadRuntimeRecord(args.threads);
    const sgdCalibrated = stored.calibrations.some(
      (c) => c.model === config.name && c.dtype === args.dtype && c.phase === 'train' && c.optimizer === 'sgd',
    );
    if (calibrations.some((c) => c.phase === 'train') && !sgdCalibrated)
      process.stdout.write(`train (sgd): ${SGD_UNCALIBRATED}\n`);
    process.stdout.write(`stored in ${storeFile()} for ${stored.key}\n`);
    return;
  }
  const record = await ensureBaseline(args.threads, quiet, args['refresh-baseline']);
  endProgress();
  const phases = phasesOf(args.dtype, args.phase);
  const estimates: PhaseEstimate[] = phases.map((phase) =>
    estimatePhase(
      config,
      {
        model: args.model,
        dtype: args.dtype,
        batch: args.batch,
        phase,
        optimizer: args.optimizer,
        segments: args.segments,
      },
      record,
    ),
  );
  if (jsonTarget(args) !== null) {
    writeJson(args, { schema: ESTIMATE_SCHEMA, runtime: record.key, model: config.name, estimates });
    return;
  }
  process.stdout.write(renderHeader(config, args.dtype, record) + '\n');
  process.stdout.write(estimates.map(renderPhase).join('\n\n') + '\n\n');
  process.stdout.write(renderAccelerate(config, estimates) + '\n');
}
