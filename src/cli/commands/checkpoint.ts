// `clip-mem checkpoint [model]`: make (presets) or check (model directories, hub snapshots) a CLIP
// checkpoint and say what it holds: where it is, its entries, parameters and bytes per dtype.
import type { CommandModule } from 'yargs';
import {
  checkModel,
  countOption,
  exitStatus,
  jsonTarget,
  usageCheck,
  withJsonOption,
  writeJson,
  type JsonArgs,
} from '../options';
import { DEFAULT_PRESET, WEIGHT_FORMATS, WeightFormat, fileOrder, layoutTotals } from '../../clip/config';
import * as fs from 'node:fs';
import { checkCheckpointLayout, readCheckpointIndex, resolveClipModel } from '../../clip/checkpoint';
import { tensorBytes } from '../../clip/dtype';
import { SyntheticProgress } from '../../clip/synthetic';
import { formatBytes } from '../../core/units';

/** Bumped when a field of `checkpoint --json` changes meaning or disappears (schema/checkpoint.schema.json). */
export const CHECKPOINT_SCHEMA = 'clip-mem-checkpoint/1';

interface CheckpointArgs extends JsonArgs {
  model: string;
  dtype: WeightFormat;
  seed: number;
  layout: boolean;
}

/** Progress on stderr: one updating line on a terminal, a line per 10% otherwise. */
function progressPrinter(): (p: SyntheticProgress) => void {
  let lastTenth = -1;
  return (p) => {
    const fraction = p.bytesWritten / p.totalBytes;
    const line = `writing ${formatBytes(p.bytesWritten)} / ${formatBytes(p.totalBytes)} (${(fraction * 100).toFixed(0)}%) ${p.tensor}`;
    if (process.stderr.isTTY) {
      process.stderr.write(`\r\x1b[K${line}${fraction >= 1 ? '\n' : ''}`);
    } else if (Math.floor(fraction * 10) > lastTenth) {
      lastTenth = Math.floor(fraction * 10);
      process.stderr.write(`${line}\n`);
    }
  };
}

export const checkpointCommand: CommandModule<object, CheckpointArgs> = {
  command: 'checkpoint [model]',
  describe:
    'Make a synthetic CLIP checkpoint with the real layout (presets), or check a model directory (safetensors or pytorch_model.bin); show its tensors and bytes',
  builder: (yargs) =>
    withJsonOption(yargs, 'the result')
      .positional('model', {
        type: 'string',
        default: DEFAULT_PRESET,
        describe:
          'a preset (vit-b-32, vit-b-16, vit-l-14, tiny), a model directory with config.json + model.safetensors, or a hub id in the local Hugging Face cache',
      })
      .option('dtype', {
        choices: WEIGHT_FORMATS,
        default: 'fp32' as WeightFormat,
        describe: 'weight format of a synthetic checkpoint (int8 = I8 weights + F32 per-row <name>.scale)',
      })
      .option('seed', countOption('seed', 'seed of the synthetic values', { min: 0, max: 2 ** 32 - 1 }, 0))
      .option('layout', {
        type: 'boolean',
        default: false,
        describe: 'list every tensor (file order: name, dtype, shape, bytes)',
      })
      // A model that does not resolve is a usage error; a checkpoint that resolves but breaks its config is the
      // check failing (exit 1), reported by the handler.
      .check(usageCheck((args) => checkModel(args.model, 'model', false)))
      .example(
        '$0 checkpoint',
        'write (once) and describe the synthetic vit-b-32 fp32 checkpoint in $CLIPMEM_CACHE or ~/.cache/clip-mem',
      )
      .example('$0 checkpoint vit-b-32 --dtype int8', 'the int8 weight-only variant: about a quarter of the bytes')
      .example(
        '$0 checkpoint ~/models/my-clip --layout',
        'check a model directory against its config.json and list its tensors',
      )
      .epilogue(
        'Synthetic checkpoints have exactly the layout and byte size of the Hugging Face model.safetensors (names, dtypes, shapes, ' +
          'file order, padded header), with seeded values; they are written once through a temporary file and a rename. ' +
          'A user checkpoint is validated (header, offsets, every tensor the config needs, shapes); errors name the file, the tensor and the field.\n\n' +
          exitStatus('0 when the checkpoint was made or is valid, 1 when a checkpoint breaks its config.json'),
      ),
  handler: (args) => {
    const model = resolveClipModel(args.model, {
      format: args.dtype,
      seed: args.seed,
      onProgress: jsonTarget(args) !== null ? undefined : progressPrinter(),
    });
    const index = readCheckpointIndex(model.weightsFile);
    checkCheckpointLayout(index, model.config);
    const fileBytes = fs.statSync(model.weightsFile).size;
    const tensors = fileOrder(index.entries).map(({ name, dtype, shape }) => ({
      name,
      dtype,
      shape: [...shape],
      bytes: tensorBytes(dtype, shape),
    }));
    const totals = layoutTotals(tensors);
    const largest = tensors.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    if (jsonTarget(args) !== null) {
      writeJson(args, {
        schema: CHECKPOINT_SCHEMA,
        model: args.model,
        kind: model.kind,
        file: model.weightsFile,
        weightsFormat: model.weightsFormat,
        fileBytes,
        ...totals,
        largest,
        tensors: args.layout ? tensors : undefined,
      });
      return;
    }
    const lines = [
      `${model.description}`,
      `  ${totals.entries} tensors, ${totals.parameters.toLocaleString('en-US')} parameters, ${model.weightsFormat} file ${formatBytes(fileBytes)} (${fileBytes} B)`,
      ...Object.entries(totals.bytesByDtype).map(
        ([dtype, bytes]) => `  ${dtype.padEnd(4)} ${formatBytes(bytes!).padStart(10)}  (${bytes} B)`,
      ),
      `  largest: ${largest.name} ${largest.dtype} ${largest.shape.join('x')} = ${largest.bytes} B`,
    ];
    if (args.layout)
      lines.push(
        '',
        ...tensors.map((s) => `${s.name}\t${s.dtype}\t${s.shape.length ? s.shape.join('x') : 'scalar'}\t${s.bytes}`),
      );
    process.stdout.write(lines.join('\n') + '\n');
  },
};
