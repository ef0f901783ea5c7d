// `clip-mem fit`: the largest batch under a limit, the cheapest change when none fits, and --verify.
import type { CommandModule } from 'yargs';
import {
  BATCH_RANGE,
  checkModelConfig,
  commandOf,
  checkProgram,
  durationOption,
  once,
  countOption,
  exitStatus,
  SEGMENTS_RANGE,
  THREADS_RANGE,
  jsonTarget,
  limitsFrom,
  withJsonOption,
  withLimitOptions,
  writeJson,
  type JsonArgs,
  type LimitArgs,
  usageCheck,
  stoppable,
  checkCgroupUsable,
} from '../options';
import { DEFAULT_TRAINING_SEGMENTS } from '../../clip/onnx/train';
import { WEIGHT_FORMATS, type WeightFormat } from '../../clip/config';
import { ensureBaseline } from '../../commands/calibrate';
import { verifyBoundary, type Verification } from '../../commands/verify';
import { LIMIT_KINDS } from '../../core/limits';
import { SGD_UNCALIBRATED } from '../../estimate/estimate';
import {
  cheapest,
  FIT_SCHEMA,
  fitPlan,
  LIMIT_MEASURES,
  type LimitedFigure,
  type FitAnswer,
  type FitLimit,
  expectedBoundary,
} from '../../estimate/fit';
import { OPTIMIZERS, PHASES, type Optimizer, type Phase } from '../../estimate/model';
import { storeFile } from '../../estimate/store';
import { formatBytes, parseBytes } from '../../core/units';
import {
  FIT_TARGETS,
  fitLimitForCommand,
  parsePassRules,
  type CommandFit,
  type FitTarget,
} from '../../commands/fit-command';
import { defaultThreads, endProgress, progressLine } from './estimate';

interface FitArgs extends LimitArgs, JsonArgs {
  phase: Phase;
  model: string;
  dtype: WeightFormat;
  optimizer: Optimizer;
  segments: number;
  'max-batch': number;
  threads: number;
  verify: boolean;
  // A command of the user's own (after --) instead of the CLIP scenarios:
  '--'?: (string | number)[];
  command?: (string | number)[];
  for: FitTarget;
  max?: string;
  step?: string;
  runs: number;
  timeout?: number;
  'pass-if'?: string[];
}

function renderCommandFit(fit: CommandFit): string {
  const what = {
    as: 'RLIMIT_AS (ulimit -v)',
    data: 'RLIMIT_DATA (ulimit -d)',
    mem: 'a memory cgroup',
    slurm: "Slurm's --mem (a cgroup)",
  }[fit.target];
  const counted = fit.target === 'mem' || fit.target === 'slurm' ? "the cgroup's charge" : 'VmSize';
  const lines = [`clip-mem fit --for ${fit.target}: ${fit.command.join(' ')}: the smallest ${what} it passes under`];
  const rule = [
    `exit ${fit.passIf.exitCodes.join(' or ')}`,
    ...fit.passIf.output.map((text) => `"${text}" in its output`),
  ];
  lines.push(`  passing means: ${rule.join(' and ')}`);
  const peaks = fit.free.map((r) => (r.peak === null ? 'unknown' : formatBytes(r.peak)));
  lines.push(`  without a limit: ${fit.free.length} run(s), ${counted} peak ${peaks.join(', ')}`);
  lines.push(`  under a limit: ${fit.limitRuns}`);
  for (const r of fit.runs) {
    const how = r.passed ? 'PASS' : `FAIL  ${r.cause}${r.evidence[0] ? `: ${r.evidence[0]}` : ''}`;
    lines.push(`  ${formatBytes(r.limit).padStart(10)} (${r.limit} B)  ${how}`);
  }
  switch (fit.outcome) {
    case 'stopped':
      lines.push(`stopped by ${fit.stoppedBy} after ${fit.free.length + fit.runs.length} run(s): no boundary proven`);
      break;
    case 'fails-without-limit':
      lines.push('it fails without any limit: nothing to fit (make it pass first, e.g. with `clip-mem trace`)');
      break;
    case 'flaky':
      lines.push(
        fit.passes !== null && fit.fails !== null
          ? `flaky: it passed and failed at the same limits between ${formatBytes(fit.fails)} and ${formatBytes(fit.passes)}; no boundary can be proven (fix what varies, or give more room)`
          : 'flaky: it passed and failed without any limit; no boundary can be proven',
      );
      break;
    case 'passes-at-floor':
      lines.push(
        `it passes even at ${formatBytes(fit.passes ?? fit.step)}, the bottom of the range: this limit does not bind it`,
      );
      break;
    case 'fails-at-max':
      lines.push(`it fails even at ${formatBytes(fit.fails!)} (--max): raise --max or look at the failure above`);
      break;
    case 'found':
      lines.push(
        `proven: passes at ${formatBytes(fit.passes!)} (${fit.passes} B), fails one step (${formatBytes(fit.step)}) below at ${formatBytes(fit.fails!)}`,
        `margin: +${formatBytes(fit.margin)}, the spread of the peak over ${fit.free.length} run(s) without a limit` +
          (fit.free.length < 2 ? ' (one run measures no spread: use --runs 3)' : ''),
        `ask for: ${formatBytes(fit.recommended!)}:  ${fit.say.join('   or   ')}`,
      );
  }
  return lines.join('\n') + '\n';
}

async function fitUserCommand(args: FitArgs): Promise<void> {
  const fit = await fitLimitForCommand({
    command: commandOf(args),
    target: args.for,
    max: args.max !== undefined ? parseBytes(args.max, '--max') : undefined,
    step: args.step !== undefined ? parseBytes(args.step, '--step') : undefined,
    runs: args.runs,
    timeoutMs: args.timeout !== undefined ? args.timeout * 1000 : undefined,
    passIf: parsePassRules(args['pass-if'] ?? []),
    progress: (line) => process.stderr.write(`clip-mem fit: ${line}\n`),
  });
  (jsonTarget(args) === '-' ? process.stderr : process.stdout).write(renderCommandFit(fit));
  writeJson(args, fit);
  process.exitCode = fit.outcome === 'found' ? 0 : 1;
}

function limitOf(args: FitArgs): FitLimit {
  const limits = limitsFrom(args);
  const given = LIMIT_KINDS.filter((kind) => limits[kind] !== undefined);
  if (given.length !== 1) throw new Error('give exactly one of --limit-as, --limit-data, --limit-mem');
  return { kind: given[0]!, bytes: limits[given[0]!]! };
}

function describeAnswer(a: FitAnswer): string {
  const figure = (f: LimitedFigure) =>
    `${formatBytes(f.predicted)} ± ${formatBytes(f.band)}, up to ${formatBytes(f.upper)}`;
  const what = `${a.model} ${a.dtype}${a.estimate.phase === 'train' ? ` ${a.optimizer}${a.segments !== DEFAULT_TRAINING_SEGMENTS ? `, ${a.segments} segments` : ''}` : ''}`;
  const u = a.estimate.uncertainty;
  const far = u.withinGoal ? '' : ` [band ${u.scope}, ±${((100 * a.limited.band) / a.limited.predicted).toFixed(1)}%]`;
  if (a.batch === 0) return `${what}: does not fit at batch 1 (needs ${figure(a.limited)})${far}`;
  const next = a.nextLimited ? `; batch ${a.batch + 1} would need ${figure(a.nextLimited)}` : '';
  return `${what}: batch ${a.batch} (needs ${figure(a.limited)}${next})${far}`;
}

/** The proven boundary beside the proposal and the range the band gave it. */
function expectation(v: Verification): string {
  const { from, to } = v.expected;
  if (from === to) return v.passed === from ? ' (as predicted)' : ` (predicted ${from})`;
  const outside = v.passed! < from || v.passed! > to ? ', found outside' : '';
  return ` (proposed ${from}; expected between ${from} and ${to} by the band${outside})`;
}

function renderVerification(v: Verification): string {
  const lines = [
    `verify: ${v.runs.length} run(s) in children under ${LIMIT_MEASURES[v.limit.kind].option} ${formatBytes(v.limit.bytes)} (at most ${v.maxRuns}: ceil(log2(--max-batch)) + 1)`,
  ];
  for (const r of v.runs) {
    const counted =
      v.limit.kind === 'mem' && r.limitedPeak !== null ? `, cgroup charge peak ${formatBytes(r.limitedPeak)}` : '';
    const peaks = `RSS peak ${r.rssPeak === null ? 'unknown' : formatBytes(r.rssPeak)}, VmSize peak ${r.vmSizePeak === null ? 'unknown' : formatBytes(r.vmSizePeak)}${counted}`;
    lines.push(
      `  batch ${String(r.batch).padStart(4)}  ${r.passed ? 'PASS' : 'FAIL'}  ${peaks}${r.passed ? '' : `  cause ${r.cause}${r.evidence[0] ? `: ${r.evidence[0]}` : ''}`}`,
    );
  }
  if (v.proven)
    lines.push(`proven: batch ${v.passed} passes and batch ${v.failed} fails under the limit` + expectation(v));
  else if (v.failed === 1) lines.push('proven: not even batch 1 passes under the limit');
  else lines.push(`every batch run up to ${v.passed} passed (--max-batch bounds the search)`);
  for (const o of v.outsideBand)
    lines.push(
      `outside the band: batch ${o.batch} ${o.measure === 'rss' ? 'RSS' : 'VmSize'} ${formatBytes(o.measured)}, estimated ${formatBytes(o.predicted)} ± ${formatBytes(o.band)}` +
        ` (${o.measured > o.predicted ? '+' : ''}${((100 * (o.measured - o.predicted)) / o.predicted).toFixed(1)}%): recorded in ${storeFile()}; the next estimate widens its band to it`,
    );
  if (!v.outsideBand.length && v.runs.some((r) => r.passed))
    lines.push("every passing run landed inside the estimate's band");
  return lines.join('\n');
}

export const fitCommand: CommandModule<object, FitArgs> = {
  command: 'fit [command..]',
  describe:
    'The largest batch that fits a limit, the cheapest change when none does; --verify proves the boundary by running it',
  builder: (yargs) =>
    withJsonOption(
      withLimitOptions(yargs.parserConfiguration({ 'populate--': true, 'unknown-options-as-args': false })),
      'the plan and the verification, or the limit a command needs (schema/fit.schema.json)',
    )
      .option('for', {
        choices: FIT_TARGETS,
        default: 'mem' as FitTarget,
        describe: 'with a command: the limit to fit: mem (a cgroup), as (ulimit -v), data (ulimit -d), slurm (--mem)',
      })
      .option('max', { type: 'string', describe: 'with a command: the largest limit to try (default: twice the peak)' })
      .option('step', {
        type: 'string',
        describe: "with a command: the search's resolution (default: the peak / 256, at least 1M)",
      })
      .option(
        'runs',
        countOption(
          'runs',
          'with a command: runs without a limit first, to measure how much the peak varies',
          { min: 1, max: 20 },
          2,
        ),
      )
      .option('timeout', durationOption('timeout', "with a command: seconds before a run's process group is killed"))
      .option('pass-if', {
        type: 'string',
        array: true,
        describe:
          'with a command: what passing means, instead of exit 0: exit=CODE[,CODE...] and/or output=TEXT (a text it prints on success); repeatable, all must hold',
      })
      .option('phase', { choices: PHASES, default: 'train' as Phase, describe: 'what has to fit' })
      .option('model', { type: 'string', default: 'vit-b-32', describe: 'preset, model directory or config.json' })
      .option('dtype', { choices: WEIGHT_FORMATS, default: 'fp32' as WeightFormat, describe: 'weight format' })
      .option('optimizer', { choices: OPTIMIZERS, default: 'adamw' as Optimizer, describe: 'train: adamw or sgd' })
      .option(
        'segments',
        countOption(
          'segments',
          "train: the trainer's backward graphs per tower (the default is what clip-mem run trains with)",
          SEGMENTS_RANGE,
          DEFAULT_TRAINING_SEGMENTS,
        ),
      )
      .option('max-batch', countOption('max-batch', 'largest batch considered', BATCH_RANGE, 256))
      .option('threads', countOption('threads', 'compute threads', THREADS_RANGE, defaultThreads()))
      .option('verify', {
        type: 'boolean',
        default: false,
        describe:
          "prove the boundary by runs in children under the limit: the batches between the band's edges first, then the rest of 1..--max-batch if the boundary is not there",
      })
      .check(
        usageCheck((args) => {
          if (commandOf(args as FitArgs).length) {
            if (LIMIT_KINDS.some((kind) => args[`limit-${kind}`] !== undefined))
              throw new Error('with a command, fit finds the limit itself: use --for mem|as|data|slurm, not --limit-*');
            if (args.max !== undefined) parseBytes(once(args.max, '--max'), '--max');
            if (args.step !== undefined && parseBytes(once(args.step, '--step'), '--step') < 4096)
              throw new Error(`--step: "${args.step}" is too small: give at least 4096 bytes (one page), e.g. 1M`);
            checkProgram(commandOf(args as FitArgs)[0]!);
            parsePassRules(args['pass-if'] ?? []);
            if (args.for === 'mem') checkCgroupUsable(1 << 30);
            return;
          }
          for (const option of ['max', 'step', 'timeout', 'pass-if'] as const)
            if (args[option] !== undefined)
              throw new Error(`--${option} is for a command of your own (fit [options] -- <command>); none was given`);
          if (args.verify) checkCgroupUsable(limitsFrom(args).mem);
          limitOf(args as FitArgs);
          checkModelConfig(args.model, '--model');
        }),
      )
      .example('$0 fit --limit-mem 1500M --phase train', 'what trains under a 1500 MiB cgroup (Slurm --mem=1500M)')
      .example(
        '$0 fit --for slurm -- python3 train.py',
        'the smallest Slurm --mem your own job passes under, proven by runs',
      )
      .example(
        '$0 fit --limit-as 2G --phase forward --verify',
        'the largest forward batch under ulimit -v 2G, proven by runs',
      )
      .epilogue(
        "The limit is compared with the estimate's figure for what it counts: --limit-mem with RSS, --limit-as with VmSize, " +
          '--limit-data with VmSize less the read-only weight mapping. Changes are tried cheapest first: a smaller weight format; ' +
          'for training one backward segment per layer, plain SGD, both; then a smaller preset. With --verify the answer runs in a ' +
          'child under the limit, and the next batch up; when the prediction was wrong, a bisection of 1..--max-batch finds the ' +
          'batch that passes with the one above it failing, in at most ceil(log2(--max-batch)) + 1 runs.\n\n' +
          exitStatus('0 when something fits (and, with --verify, the boundary was proven), 1 otherwise'),
      ),
  // SIGINT, SIGTERM, SIGHUP: the running child is killed and no further run starts (stoppable).
  handler: (args) => stoppable(() => (commandOf(args).length ? fitUserCommand(args) : fitClip(args))),
};

async function fitClip(args: FitArgs): Promise<void> {
  const limit = limitOf(args);
  const quiet = jsonTarget(args) !== null ? () => undefined : progressLine;
  const record = await ensureBaseline(args.threads, quiet);
  endProgress();
  const plan = fitPlan(
    { model: args.model, dtype: args.dtype, optimizer: args.optimizer, segments: args.segments },
    args.phase,
    limit,
    record,
    args['max-batch'],
  );
  const choice = cheapest(plan);
  let verification: Verification | undefined;
  if (args.verify && choice) {
    verification = await verifyBoundary(
      choice,
      args.phase,
      limit,
      expectedBoundary(choice, args.phase, limit, record, args['max-batch']),
      args['max-batch'],
      record,
      progressLine,
    );
    endProgress();
  }
  process.exitCode = choice && (!args.verify || verification?.proven) ? 0 : 1;
  if (jsonTarget(args) !== null) {
    writeJson(args, {
      schema: FIT_SCHEMA,
      runtime: record.key,
      phase: args.phase,
      limit,
      answer: plan.answer,
      alternatives: plan.alternatives,
      choice: choice ?? null,
      verification: verification ?? null,
    });
    return;
  }
  const lines = [
    `clip-mem fit: ${args.phase} under ${LIMIT_MEASURES[limit.kind].option} ${formatBytes(limit.bytes)} (${limit.bytes} B), compared with ${LIMIT_MEASURES[limit.kind].counts}`,
    `as asked: ${describeAnswer(plan.answer)}`,
  ];
  if (plan.alternatives.length)
    lines.push('changes, cheapest first:', ...plan.alternatives.map((a) => `  ${a.change}: ${describeAnswer(a)}`));
  const sgdUncalibrated = (a: FitAnswer) =>
    a.estimate.phase === 'train' && a.optimizer === 'sgd' && a.estimate.uncertainty.scope === 'uncalibrated';
  if ([plan.answer, ...plan.alternatives].some(sgdUncalibrated)) lines.push(`note: ${SGD_UNCALIBRATED}`);
  if (!choice) lines.push('nothing fits: raise the limit');
  else if (choice !== plan.answer) lines.push(`cheapest change that fits: ${choice.change}, batch ${choice.batch}`);
  if (verification) lines.push(renderVerification(verification));
  process.stdout.write(lines.join('\n') + '\n');
}
