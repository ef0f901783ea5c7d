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
import { probeCluster, renderClusterProbe } from '../../commands/cluster-probe';
import { renderProbe } from '../../probe/render';

interface NativeProbeArgs extends JsonArgs {
  model: string[];
  dtype: WeightFormat;
  cluster?: boolean;
  partition?: string;
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
      .option('cluster', {
        type: 'boolean',
        describe: 'probe every node of the Slurm cluster, each in a job step (srun -w NODE): one row per node',
      })
      .option('partition', {
        type: 'string',
        describe: 'with --cluster: only the nodes of this Slurm partition (and run the probes there)',
      })
      // A bad --model is a usage error (exit 2), found before probing.
      .check(
        usageCheck((args) => {
          args.model.forEach((model) => checkModelConfig(model, '--model'));
          if (args.partition !== undefined && !args.cluster)
            throw new Error('--partition goes with --cluster (the nodes of that partition)');
          if (args.partition !== undefined && !/^[\w.-]+$/.test(args.partition))
            throw new Error(`--partition: ${JSON.stringify(args.partition)} is not a partition name`);
        }),
      )
      .example('$0 native-probe', 'the limits, the allocator probe and the verdict as a table')
      .example('$0 native-probe --model vit-b-32', 'and whether CLIP ViT-B/32 fits now')
      .example('$0 native-probe --cluster --partition gpu', 'every node of the Slurm partition gpu, a row each')
      .example(
        'prlimit --as=4294967296 $0 native-probe --json',
        'the report under a 4 GiB address-space limit, for scripts',
      )
      .epilogue(
        'The verdict names the limit with the least headroom: the first one an allocation will hit. ' +
          `GPU libraries are found by dlopen; set ${NVML_LIBRARY_VARIABLE} / ${CUDA_LIBRARY_VARIABLE} to a path to use others. ` +
          'README.md explains every field.\n\n' +
          exitStatus(
            '0 when the report was made, whatever it says; 1 when the probe itself failed (--cluster: no Slurm ' +
              'cluster answers, or a node could not be probed)',
          ),
      ),
  handler: (args) => {
    if (args.cluster) {
      const probeArgs = [...args.model.flatMap((m) => ['--model', m]), '--dtype', args.dtype];
      const cluster = probeCluster(args.partition ?? null, probeArgs);
      if (jsonTarget(args) !== null) writeJson(args, cluster);
      else process.stdout.write(renderClusterProbe(cluster));
      if (cluster.nodes.some((n) => n.error !== null)) process.exitCode = 1;
      return;
    }
    const report = runProbe({ models: args.model, weights: args.dtype });
    if (jsonTarget(args) !== null) writeJson(args, probeJson(report));
    else process.stdout.write(renderProbe(report));
  },
};
