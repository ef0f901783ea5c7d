// `clip-mem native-probe`: every limit that binds this process, what can be allocated now, the verdict.
import type { CommandModule } from 'yargs';
import {
  checkModelConfig,
  exitStatus,
  jsonTarget,
  usageCheck,
  withJsonOption,
  writeJson,
  type JsonArgs,
} from '../options';
import { PRESET_NAMES, WEIGHT_FORMATS, WeightFormat } from '../../clip/config';
import { CUDA_LIBRARY_VARIABLE, NVML_LIBRARY_VARIABLE } from '../../probe/gpu';
import { probeJson, runProbe } from '../../probe/probe';
import { renderProbe } from '../../probe/render';

interface NativeProbeArgs extends JsonArgs {
  model: string[];
  dtype: WeightFormat;
}

export const nativeProbeCommand: CommandModule<object, NativeProbeArgs> = {
  command: 'native-probe',
  describe:
    'Show every memory limit that binds this process, what can be allocated right now, and which limit binds first',
  builder: (yargs) =>
    withJsonOption(yargs, 'the report (schema/native-probe.schema.json)')
      .option('model', {
        type: 'string',
        array: true,
        default: [] as string[],
        describe: `check whether a CLIP model fits via mmap, via copy and for AdamW training: ${PRESET_NAMES.join(', ')}, or a model directory with config.json`,
      })
      .option('dtype', {
        choices: WEIGHT_FORMATS,
        default: 'fp32' as WeightFormat,
        describe: 'weight format for --model',
      })
      // A bad --model is a usage error (exit 2), found before probing.
      .check(usageCheck((args) => args.model.forEach((model) => checkModelConfig(model, '--model'))))
      .example('$0 native-probe', 'the limits, the allocator probe and the verdict as a table')
      .example('$0 native-probe --model vit-b-32', 'and whether CLIP ViT-B/32 fits now')
      .example(
        'prlimit --as=4294967296 $0 native-probe --json',
        'the report under a 4 GiB address-space limit, for scripts',
      )
      .epilogue(
        'The verdict names the limit with the least headroom: the first one an allocation will hit. ' +
          `GPU libraries are found by dlopen; set ${NVML_LIBRARY_VARIABLE} / ${CUDA_LIBRARY_VARIABLE} to a path to use others. ` +
          'README.md explains every field.\n\n' +
          exitStatus('0 when the report was made, whatever it says; 1 when the probe itself failed'),
      ),
  handler: (args) => {
    const report = runProbe({ models: args.model, weights: args.dtype });
    if (jsonTarget(args) !== null) writeJson(args, probeJson(report));
    else process.stdout.write(renderProbe(report));
  },
};
