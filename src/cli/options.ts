// The option vocabulary every command shares: one spelling, one meaning, one check for each. A bad value
// is a usage error (exit 2) found before any work starts.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Argv } from 'yargs';
import { checkCheckpointLayout, readCheckpointIndex, resolveClipModel } from '../clip/checkpoint';
import { isPresetName, PRESET_NAMES, resolveClipConfig } from '../clip/config';
import { LIMIT_KINDS, LIMIT_OPTIONS, type Limits } from '../core/limits';
import { parseBytes, type ByteBounds } from '../core/units';
import { createChildCgroup, removeCgroup } from '../track/cgroup';
import { stopSignal, stopTraces } from '../track/launcher';
import { trackedFunctions } from '../track/record';

export interface LimitArgs {
  'limit-as'?: string;
  'limit-data'?: string;
  'limit-mem'?: string;
}

const limitDescriptions: Record<keyof Limits, string> = {
  as: 'address-space limit, RLIMIT_AS (what `ulimit -v` sets): the most VmSize may reach, e.g. 4G',
  data: 'data-segment limit, RLIMIT_DATA (`ulimit -d`): heap plus private writable memory, e.g. 2G',
  mem: 'memory cgroup limit (what Slurm --mem or a container sets): RSS + page cache, OOM kill above it, e.g. 300M',
};

/**
 * A yargs check from a function that throws on bad input: yargs treats a returned message as a usage error
 * (exit 2 with the help hint), while a thrown one would be reported as a failure of the command itself.
 */
export function usageCheck<T>(check: (args: T) => void): (args: T) => true | string {
  return (args) => {
    try {
      check(args);
      return true;
    } catch (error) {
      return (error as Error).message;
    }
  };
}

/** One page: a process cannot even be loaded under a smaller limit. */
export const PAGE_BYTES = 4096;
/** The user address space of x86-64 and arm64 (4-level page tables): a limit above it limits nothing. */
export const MAX_LIMIT_BYTES = 2 ** 47;

/** What every --limit-* accepts. */
export const LIMIT_BOUNDS: ByteBounds = {
  min: PAGE_BYTES,
  minReason: 'one page; nothing can run under less',
  max: MAX_LIMIT_BYTES,
  maxReason: 'the user address space of x86-64 and arm64',
};

/** --limit-as, --limit-data and --limit-mem, each checked to be a byte size of at least one page. */
export function withLimitOptions<T>(yargs: Argv<T>): Argv<T & LimitArgs> {
  let with_ = yargs as Argv<T & LimitArgs>;
  for (const kind of LIMIT_KINDS) {
    with_ = with_.option(LIMIT_OPTIONS[kind].slice(2), { type: 'string', describe: limitDescriptions[kind] }) as Argv<
      T & LimitArgs
    >;
  }
  return with_.check(usageCheck((args) => limitsFrom(args)));
}

/** The limits given on the command line, in bytes; throws a message naming the option for a bad size. */
export function limitsFrom(args: LimitArgs): Limits {
  const limits: Limits = {};
  for (const kind of LIMIT_KINDS) {
    const text = args[`limit-${kind}`];
    if (text !== undefined)
      limits[kind] = parseBytes(once(text, LIMIT_OPTIONS[kind]), LIMIT_OPTIONS[kind], LIMIT_BOUNDS);
  }
  return limits;
}

/**
 * --limit-mem runs children in a memory cgroup made under this process's own: one is made and removed
 * here, so that a user who cannot make one (not root, a read-only cgroup) hears it before any work
 * (run would first write a 577 MiB checkpoint).
 */
export function checkCgroupUsable(limit: number | undefined): void {
  if (limit !== undefined) removeCgroup(createChildCgroup(limit).directory);
}

export interface JsonArgs {
  json?: string;
}

/**
 * `--json [FILE]` means the same in every command: write the result as JSON to FILE, or to standard
 * output when FILE is `-` or left out (the human-readable output then goes to standard error).
 */
export function withJsonOption<T>(yargs: Argv<T>, what: string): Argv<T & JsonArgs> {
  return yargs
    .option('json', {
      type: 'string',
      describe: `write ${what} as JSON to FILE (\`-\` or no FILE: standard output)`,
      requiresArg: false,
    })
    .check(
      usageCheck((args) => {
        once((args as JsonArgs).json, '--json');
        const target = jsonTarget(args as JsonArgs);
        if (target !== null && target !== '-') checkWritable(target, '--json');
      }),
    ) as Argv<T & JsonArgs>;
}

/** Two outputs naming one file would leave only the one written last: refused. */
export function checkDistinctOutputs(outputs: Record<string, string | null | undefined>): void {
  const seen = new Map<string, string>();
  for (const [option, file] of Object.entries(outputs)) {
    if (!file || file === '-') continue;
    const resolved = path.resolve(file);
    const other = seen.get(resolved);
    if (other) throw new Error(`${other} and ${option} name the same file (${file}): give each output its own file`);
    seen.set(resolved, option);
  }
}

/** null: no JSON asked for; '-': standard output; else the file. */
export function jsonTarget(args: JsonArgs): string | null {
  if (args.json === undefined) return null;
  return args.json === '' || args.json === '-' ? '-' : args.json;
}

/** Writes the value where --json asked; nothing when it was not given. */
export function writeJson(args: JsonArgs, value: unknown): void {
  const target = jsonTarget(args);
  if (target === null) return;
  const text = JSON.stringify(value, null, 2) + '\n';
  if (target === '-') process.stdout.write(text);
  else fs.writeFileSync(target, text);
}

/**
 * An output file must be writable before the work that fills it starts: a report lost at the end of a
 * long run is worse than a refusal at the start.
 */
export function checkWritable(file: string, option: string): void {
  const dir = path.dirname(path.resolve(file));
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new Error(`${option} ${file}: cannot write there (${dir} does not exist or is not writable)`);
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw new Error(`${option} ${file}: is a directory; give a file name`);
  }
}

/** Says how each command ends, in the same words everywhere: the last paragraph of every --help. */
export function exitStatus(codes: string): string {
  return `Exit status: ${codes}; 2 on a usage error (a bad option or value, found before anything runs).`;
}

/** An option given twice reaches a check as an array: a usage error, not a silent choice of one value. */
export function once(value: unknown, option: string): string {
  if (Array.isArray(value)) {
    throw new Error(`${option} was given ${value.length} times (${value.map(String).join(', ')}): give it once`);
  }
  return String(value);
}

export interface Range {
  min: number;
  max: number;
}

/**
 * A count (a batch, a number of threads, segments, runs): a whole number in [min, max]. "abc", "1.5", "0",
 * "-3" and absurd sizes such as "1e9" are refused with a message naming the option, the value and the range.
 */
export function parseCount(value: unknown, option: string, range: Range): number {
  const text = once(value, option).trim();
  const accepted = `give a whole number from ${range.min} to ${range.max}`;
  const shown = `${option}: ${JSON.stringify(text)}`;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text)) throw new Error(`${shown} is not a number: ${accepted}`);
  const number = Number(text);
  if (!Number.isInteger(number)) throw new Error(`${shown} is not a whole number: ${accepted}`);
  if (number < range.min) throw new Error(`${shown} is too small: ${accepted}`);
  if (number > range.max) throw new Error(`${shown} is too large: ${accepted}`);
  return number;
}

const durationUnits: Record<string, number> = { '': 1, s: 1, sec: 1, m: 60, min: 60, h: 3600 };

/** The longest --timeout: a week (Node's timers themselves stop at 24.8 days). */
export const MAX_TIMEOUT_S = 7 * 24 * 3600;

/** A duration in seconds: "90", "1.5", "90s", "10m", "2h"; positive and at most `maxSeconds`. */
export function parseDuration(value: unknown, option: string, maxSeconds = MAX_TIMEOUT_S): number {
  const text = once(value, option).trim();
  const accepted = `give seconds (e.g. 90 or 1.5), or a number with s, m or h (e.g. 90s, 10m, 2h), more than 0 and at most ${maxSeconds} s`;
  const shown = `${option}: ${JSON.stringify(text)}`;
  const match = /^(\d+(?:\.\d+)?|\.\d+)\s*(s|sec|m|min|h)?$/i.exec(text);
  if (!match) {
    const negative = /^-\s*(\d|\.\d)/.test(text);
    throw new Error(`${shown} is not a duration${negative ? ' (it cannot be negative)' : ''}: ${accepted}`);
  }
  const seconds = Number(match[1]) * durationUnits[(match[2] ?? '').toLowerCase()]!;
  if (!(seconds >= 0.001)) throw new Error(`${shown} is too short: ${accepted}`);
  if (seconds > maxSeconds) throw new Error(`${shown} is too long: ${accepted}`);
  return seconds;
}

interface CheckedOption<T> {
  type: 'string';
  describe: string;
  coerce: (value: unknown) => T;
}

/** A count option: a string on the command line, a checked whole number in the handler. */
export function countOption(
  option: string,
  describe: string,
  range: Range,
  defaultValue: number,
): CheckedOption<number> & { default: number } {
  return {
    type: 'string',
    describe: `${describe} (${range.min} to ${range.max})`,
    default: defaultValue,
    coerce: (value) => parseCount(value, `--${option}`, range),
  };
}

/** A --timeout option: a checked number of seconds in the handler. */
export function durationOption(option: string, describe: string): CheckedOption<number>;
export function durationOption(
  option: string,
  describe: string,
  defaultValue: number,
): CheckedOption<number> & { default: number };
export function durationOption(option: string, describe: string, defaultValue?: number): CheckedOption<number> {
  return {
    type: 'string',
    describe: `${describe} (e.g. 90, 1.5, 10m, 2h; at most ${MAX_TIMEOUT_S} s, a week)`,
    ...(defaultValue !== undefined ? { default: defaultValue } : {}),
    coerce: (value) => parseDuration(value, `--${option}`),
  };
}

/** The batch sizes a command accepts (a batch of a million images is a typo, not a plan). */
export const BATCH_RANGE: Range = { min: 1, max: 65536 };
/** Compute threads. */
export const THREADS_RANGE: Range = { min: 1, max: 1024 };
/** Scenarios of `clip-mem run` at once (there are eight). */
export const JOBS_RANGE: Range = { min: 1, max: 8 };
/** Backward segments per tower (at most one per layer; checked against the model where it is known). */
export const SEGMENTS_RANGE: Range = { min: 1, max: 256 };

/** An input file: it exists, is a regular file (or a FIFO, for `<(...)`) and can be read. */
export function checkReadableFile(file: string, option: string): void {
  if (file === '') throw new Error(`${option}: give a file name`);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new Error(`${option} ${file}: no such file`);
  }
  if (stat.isDirectory()) throw new Error(`${option} ${file}: is a directory; give a file`);
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw new Error(`${option} ${file}: cannot be read (permission denied)`);
  }
}

const modelForms = `a preset (${PRESET_NAMES.join(', ')}), a model directory with config.json, a checkpoint file beside its config.json, or a hub id in the local Hugging Face cache`;

/**
 * A --model for the commands that load weights (run, checkpoint): a preset, or a user model that
 * resolves to a config and a weights file. With `layout`, the checkpoint's header is read and every tensor
 * the config needs is checked, so a run does not find a missing tensor in its third scenario.
 */
export function checkModel(spec: unknown, option: string, layout: boolean): void {
  const text = once(spec, option);
  if (text.trim() === '') throw new Error(`${option}: give ${modelForms}`);
  if (isPresetName(text)) return;
  let problem: string | undefined;
  try {
    const model = resolveClipModel(text);
    if (layout) checkCheckpointLayout(readCheckpointIndex(model.weightsFile), model.config);
  } catch (error) {
    problem = (error as Error).message;
  }
  if (problem !== undefined) throw new Error(`${option} ${text}: ${problem}`);
}

/** A --model for the commands that need only the architecture (estimate, fit, native-probe). */
export function checkModelConfig(spec: unknown, option: string): void {
  const text = once(spec, option);
  if (text.trim() === '')
    throw new Error(`${option}: give a preset (${PRESET_NAMES.join(', ')}), a model directory or its config.json`);
  try {
    resolveClipConfig(text);
  } catch (error) {
    throw new Error(`${option}: ${(error as Error).message}`);
  }
}

/** `trace --fail`: what the tracker's CLIPMEM_FAIL reads, checked before the program starts. */
export function checkFailRule(value: unknown, option = '--fail'): void {
  const text = once(value, option);
  const functions = trackedFunctions();
  const accepted = `write fn:nth=N (N >= 1) or fn:above=BYTES, comma-separated, with fn one of ${functions.join(', ')}`;
  if (text.trim() === '') throw new Error(`${option}: ${accepted}`);
  for (const rule of text.split(',')) {
    const match = /^([a-z_0-9]+):(nth|above)=(\d+)$/.exec(rule);
    const known = match && (functions as readonly string[]).includes(match[1]!);
    if (!match || !known || (match[2] === 'nth' && Number(match[3]) === 0))
      throw new Error(
        `${option}: ${JSON.stringify(rule)}: ${known === false ? `${match![1]} is not a tracked function; ` : ''}${accepted}`,
      );
  }
}

/** The program `trace` runs: an existing executable file, or a name found on PATH. */
export function checkProgram(program: string): void {
  const isExecutableFile = (file: string) => {
    try {
      return fs.statSync(file).isFile() && (fs.accessSync(file, fs.constants.X_OK), true);
    } catch {
      return false;
    }
  };
  if (program === '') throw new Error('the command to trace is empty: name a program after --');
  if (program.includes('/')) {
    if (!fs.existsSync(program)) throw new Error(`${program}: no such file, so there is nothing to trace`);
    if (fs.statSync(program).isDirectory()) throw new Error(`${program}: is a directory, not a program`);
    if (!isExecutableFile(program))
      throw new Error(`${program}: is not executable (chmod +x it, or name its interpreter)`);
    return;
  }
  const dirs = (process.env.PATH ?? '').split(':').filter(Boolean);
  if (!dirs.some((dir) => isExecutableFile(path.join(dir, program))))
    throw new Error(`${program}: command not found on PATH, so there is nothing to trace`);
}

/** An output file option (--markdown, --html): a FILE, whose directory must be writable before any work. */
export function checkOutputFile(value: unknown, option: string): void {
  if (value === undefined) return;
  const file = once(value, option);
  if (file === '') throw new Error(`${option}: give a FILE to write`);
  checkWritable(file, option);
}

/** A command given to clip-mem to run (trace, fit): what follows `--`, or the trailing words. */
export interface CommandArgs {
  '--'?: (string | number)[];
  command?: (string | number)[];
}

/** The command line of the program to run, as strings. */
export function commandOf(args: CommandArgs): string[] {
  return [...(args['--'] ?? []), ...(args.command ?? [])].map(String);
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs a command's work with SIGINT (Ctrl-C), SIGTERM and SIGHUP stopping every traced child and every
 * loop of runs (stopTraces): the work still reports and writes what ran so far, cgroups and records are
 * removed; then clip-mem exits 128 + the signal's number.
 */
export async function stoppable(work: () => Promise<void>): Promise<void> {
  const onSignal = (signal: NodeJS.Signals) => stopTraces(signal);
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  try {
    await work();
  } catch (error) {
    // A loop of runs that was stopped ends with an error naming what it was running: said, not a crash.
    if (!stopSignal()) throw error;
    process.stderr.write(`clip-mem: ${(error as Error).message}\n`);
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
  }
  const stopped = stopSignal();
  if (stopped) process.exitCode = 128 + os.constants.signals[stopped];
}
