// `clip-mem run`: the seed's scenarios, each in its own child under the limits asked for, diagnosed,
// with fixes and reports.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { CommandModule } from 'yargs';
import { resolveClipModel, type ClipModelSource } from '../../clip/checkpoint';
import { WEIGHT_FORMATS, type WeightFormat } from '../../clip/config';
import { renderHtml } from '../../report/html';
import { renderMarkdown } from '../../report/markdown';
import type { ProgressEvent } from '../../commands/run-scenarios';
import { renderTerminal } from '../../report/terminal';
import { BACKENDS, SCENARIO_CATALOG, SCENARIO_NAMES, catalogEntry } from '../../scenarios/catalog';
import type { RunOptions, ScenarioOptions } from '../../scenarios/scenario';
import { formatBytes, parseBytes } from '../../core/units';
import { partitionNodes } from '../../probe/slurm';
import { defaultJobs, jobsRefusal } from '../../scenarios/jobs';
import {
  BATCH_RANGE,
  checkModel,
  checkOutputFile,
  checkDistinctOutputs,
  countOption,
  durationOption,
  exitStatus,
  THREADS_RANGE,
  JOBS_RANGE,
  jsonTarget,
  LIMIT_BOUNDS,
  limitsFrom,
  withJsonOption,
  withLimitOptions,
  type JsonArgs,
  type LimitArgs,
  usageCheck,
  stoppable,
  checkCgroupUsable,
  parseCount,
} from '../options';

interface RunArgs extends LimitArgs, JsonArgs {
  scenarios: string[];
  model: string;
  dtype: WeightFormat;
  batch: number;
  'large-batch': number;
  backend: string;
  threads: number;
  jobs?: number;
  timeout: number;
  markdown?: string;
  html?: string;
  slurm?: boolean;
  partition?: string;
  mem?: string;
  nodes?: number;
}

/** run's arguments as given, without the ones that submit it (--slurm, --partition P, --mem X, --nodes N). */
function argsInsideJob(argv: string[]): string[] {
  const inside: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--slurm') continue;
    if (arg === '--partition' || arg === '--mem' || arg === '--nodes') {
      i++;
      continue;
    }
    if (/^--(partition|mem|slurm|nodes)=/.test(arg)) continue;
    inside.push(arg);
  }
  return inside.slice(inside.indexOf('run') + 1);
}

/** The model for --model (clipdata's resolution: preset, directory, file or hub id); a preset's synthetic
 * checkpoint is made on first use, with progress. */
function resolveModel(model: string, dtype: WeightFormat, progress: (text: string) => void): ClipModelSource {
  let shown = -1;
  return resolveClipModel(model, {
    format: dtype,
    onProgress: ({ bytesWritten, totalBytes }) => {
      // Every percent on a terminal line that rewrites itself; every tenth in a log.
      const percent = Math.floor((100 * bytesWritten) / totalBytes);
      if (percent !== shown && (process.stderr.isTTY || percent % 10 === 0))
        progress(
          `making the synthetic ${model} ${dtype} checkpoint (first use): ${percent}% of ${formatBytes(totalBytes)}`,
        );
      shown = percent;
    },
  });
}

/**
 * Progress on standard error: on a terminal one line that rewrites itself, showing every scenario in
 * flight; in a log a line each time a scenario's phase changes.
 */
function progressPrinter(): (event: ProgressEvent | string) => void {
  const tty = process.stderr.isTTY;
  const lastPhase = new Map<string, string>();
  const inFlight = new Map<string, string>();
  return (event) => {
    if (typeof event === 'string') {
      process.stderr.write(tty ? `\r\x1b[K${event}` : `${event}\n`);
      return;
    }
    const memory = event.rss !== null ? `  RSS ${formatBytes(event.rss)}  VmSize ${formatBytes(event.vmSize!)}` : '';
    const line = `[${event.index}/${event.total}] ${event.scenario}  ${(event.elapsedMs / 1000).toFixed(1)} s  ${event.phase || 'running'}${memory}`;
    if (event.ended) inFlight.delete(event.scenario);
    else inFlight.set(event.scenario, line);
    if (tty) {
      const all = [...inFlight.values()].join('  |  ');
      process.stderr.write(`\r\x1b[K${all.slice(0, (process.stderr.columns || 120) - 1)}`);
    } else if (lastPhase.get(event.scenario) !== event.phase) process.stderr.write(`${line}\n`);
    lastPhase.set(event.scenario, event.phase);
  };
}

export const runCommand: CommandModule<object, RunArgs> = {
  command: 'run [scenarios..]',
  describe:
    'Run the CLIP scenarios, each in its own child under simulated limits; diagnose every failure and say what would fit',
  builder: (yargs) =>
    withJsonOption(
      withLimitOptions(yargs),
      'the results as JSON lines (one per scenario, each as it finishes; schema/clip-mem-run.schema.json)',
    )
      .positional('scenarios', {
        type: 'string',
        array: true,
        choices: SCENARIO_NAMES,
        default: SCENARIO_NAMES,
        // The list is already in the choices: yargs would print it again, wrapped mid-name.
        defaultDescription: 'all, in this order',
        describe: 'scenarios to run',
      })
      .option('model', {
        type: 'string',
        default: 'vit-b-32',
        describe:
          'preset (vit-b-32, vit-b-16, vit-l-14, tiny; a synthetic checkpoint with the real layout is made on first use), a model directory or a .safetensors file',
      })
      .option('dtype', { choices: WEIGHT_FORMATS, default: 'fp32' as WeightFormat, describe: 'weight format' })
      .option('batch', countOption('batch', 'batch of clip-forward and clip-train', BATCH_RANGE, 2))
      .option('large-batch', countOption('large-batch', 'batch of large-batch', BATCH_RANGE, 32))
      .option('backend', {
        choices: BACKENDS,
        default: 'auto',
        describe:
          'auto: onnxruntime for inference and training, the best tfjs backend for basic-ops and small-mlp; or one tfjs backend for everything',
      })
      .option(
        'threads',
        countOption('threads', 'compute threads of the runtime', THREADS_RANGE, Math.min(os.cpus().length, 4)),
      )
      .option('jobs', {
        type: 'string',
        describe: `scenarios run at once, each in its own child (${JOBS_RANGE.min} to ${JOBS_RANGE.max}), the longest first; times grow when children share the cores (--jobs 1 times each alone)`,
        defaultDescription: '2 with 2+ cores and 8 GiB available, else 1; 1 under --limit-mem or a cgroup limit',
        coerce: (value: unknown) => (value === undefined ? undefined : parseCount(value, '--jobs', JOBS_RANGE)),
      })
      .option(
        'timeout',
        durationOption('timeout', 'seconds before a child and its whole process group are killed', 600),
      )
      .option('markdown', { type: 'string', describe: 'write the Markdown report to FILE' })
      .option('html', { type: 'string', describe: 'write the self-contained HTML report (memory timelines) to FILE' })
      .option('slurm', {
        type: 'boolean',
        describe:
          "submit the run as one Slurm job step (srun) and stream it; each OOM kill by the job is named as Slurm's",
      })
      .option('partition', { type: 'string', describe: 'with --slurm: the Slurm partition' })
      .option('mem', { type: 'string', describe: "with --slurm: the job's --mem, e.g. 1500M" })
      .option('nodes', {
        type: 'string',
        describe:
          'with --slurm: run on this many nodes at once (one task each), each writing its own --json/--markdown/--html ' +
          'files (".<node>" before the extension; --json defaults to clip-mem-run.<node>.jsonl), then the cluster report (1 to 1024)',
        coerce: (value: unknown) =>
          value === undefined ? undefined : parseCount(value, '--nodes', { min: 1, max: 1024 }),
      })
      .check(
        usageCheck((args) => {
          if (args.nodes !== undefined && jsonTarget(args) === '-')
            throw new Error('--json -: with --nodes each node writes its own file: give --json FILE');
          for (const option of ['partition', 'mem', 'nodes'] as const)
            if (args[option] !== undefined && !args.slurm) throw new Error(`--${option} goes with --slurm`);
          // srun would wait in the queue for ever for more nodes than the partition has.
          const available = args.nodes !== undefined ? partitionNodes(args.partition) : undefined;
          if (typeof available === 'number' && args.nodes! > available)
            throw new Error(
              `--nodes: ${args.nodes} is more than the ${available} node(s) of partition ${args.partition ?? '(the default)'}`,
            );
          if (args.partition !== undefined && !/^[\w.-]+$/.test(args.partition))
            throw new Error(`--partition: ${JSON.stringify(args.partition)} is not a partition name`);
          if (args.mem !== undefined) parseBytes(args.mem, '--mem', LIMIT_BOUNDS);
          for (const option of ['markdown', 'html'] as const) checkOutputFile(args[option], `--${option}`);
          checkDistinctOutputs({ '--json': jsonTarget(args), '--markdown': args.markdown, '--html': args.html });
          // Inside a Slurm job the scenarios share the job's memory cgroup, as in any limited cgroup.
          const refusal =
            args.jobs !== undefined && args.jobs > 1
              ? args.slurm
                ? "with --slurm the scenarios run one at a time (they would share the job's memory cgroup)"
                : jobsRefusal(limitsFrom(args))
              : null;
          if (refusal !== null) throw new Error(`--jobs: ${refusal}: drop --jobs`);
          checkCgroupUsable(limitsFrom(args).mem);
          // The whole checkpoint (config, weights file, every tensor the config needs) before any scenario.
          const names = [...new Set(args.scenarios)];
          if (names.some((n) => catalogEntry(n).usesCheckpoint)) checkModel(args.model, '--model', true);
          else checkModel(args.model, '--model', false);
        }),
      )
      .example('$0 run', 'all eight scenarios on the synthetic vit-b-32 checkpoint')
      .example(
        '$0 run clip-load-copy --limit-as 1.2G',
        "the seed's failure: a 101187584-byte allocation under an address-space limit",
      )
      .example(
        '$0 run clip-train --limit-mem 1G --json run.json',
        'a cgroup (Slurm --mem) kill, results kept as JSON lines',
      )
      .epilogue(
        `Scenarios:\n${SCENARIO_CATALOG.map((s) => `  ${s.name.padEnd(15)} ${s.summary}`).join('\n')}\n\n` +
          exitStatus('0 when every scenario passed, 1 when any failed'),
      ),
  handler: async (args) => {
    if (args.slurm) {
      const { formatClusterReport, runInSlurm } = await import('../../commands/slurm-run');
      const outcome = await runInSlurm({
        runArgs: argsInsideJob(process.argv.slice(2)),
        partition: args.partition,
        mem: args.mem !== undefined ? parseBytes(args.mem, '--mem', LIMIT_BOUNDS) : undefined,
        nodes: args.nodes,
        progress: (line) => process.stderr.write(`clip-mem run --slurm: ${line}\n`),
      });
      process.stderr.write(`clip-mem run --slurm: ${outcome.ending}\n`);
      if (outcome.nodes) process.stdout.write(formatClusterReport(outcome));
      const failed = outcome.nodes?.some((n) => !n.results?.end || n.results.end.failed > 0) ?? false;
      process.exitCode = outcome.status === 0 && !failed ? 0 : 1;
      return;
    }
    const names = [...new Set(args.scenarios)];
    names.forEach(catalogEntry);
    const limits = limitsFrom(args);
    const json = jsonTarget(args);
    const print = progressPrinter();
    const needsCheckpoint = names.some((n) => catalogEntry(n).usesCheckpoint);
    const model = resolveModel(args.model, args.dtype, print);
    if (needsCheckpoint && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    // Loaded here, not at the top: other commands (native-probe) must start without the ML runtimes.
    const { runScenarios } = await import('../../commands/run-scenarios');
    const options: RunOptions = {
      model: args.model,
      dtype: args.dtype,
      batch: args.batch,
      largeBatch: args['large-batch'],
      backend: args.backend,
      threads: args.threads,
      limits,
      timeoutMs: args.timeout * 1000,
      scenarios: names,
      jobs: args.jobs ?? defaultJobs(limits),
    };
    const scenarioOptions: ScenarioOptions = {
      model: args.model,
      config: model.config,
      tokenizer: model.tokenizer,
      checkpoint: needsCheckpoint ? model.weightsFile : '',
      dtype: args.dtype,
      batch: args.batch,
      largeBatch: args['large-batch'],
      backend: args.backend,
      threads: args.threads,
    };
    const outputs = [
      json !== null ? ` --json ${json}` : '',
      args.markdown ? ` --markdown ${args.markdown}` : '',
      args.html ? ` --html ${args.html}` : '',
    ].join('');
    // SIGINT, SIGTERM, SIGHUP: the running child is killed, no further scenario starts; the JSON lines
    // keep every scenario that finished.
    await stoppable(async () => {
      const results = await runScenarios({
        options,
        scenarioOptions,
        outputs,
        jsonFile: json ?? undefined,
        progress: print,
      });
      if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
      if (results.stoppedBy) {
        process.stderr.write(
          `\nclip-mem run: stopped by ${results.stoppedBy} after ${results.scenarios.length} scenario(s); those are in the --json file\n`,
        );
        return; // stoppable sets the exit status: 128 + the signal's number
      }
      // With the JSON lines on standard output, the summary for people goes to standard error.
      (json === '-' ? process.stderr : process.stdout).write(renderTerminal(results.header, results.scenarios));
      if (args.markdown) fs.writeFileSync(args.markdown, renderMarkdown(results));
      if (args.html) fs.writeFileSync(args.html, renderHtml(results));
      process.exitCode = results.end!.failed ? 1 : 0;
    });
  },
};
