// The option vocabulary every command shares: one spelling, one meaning, one check for each. A bad value
// is a usage error (exit 2) found before any work starts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv } from 'yargs';
import { LIMIT_KINDS, LIMIT_OPTIONS, type Limits } from '../core/limits';
import { parseBytes } from '../core/units';

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

/** --limit-as, --limit-data and --limit-mem, each checked to be a byte size. */
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
    if (text !== undefined) limits[kind] = parseBytes(text, LIMIT_OPTIONS[kind]);
  }
  return limits;
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
        const target = jsonTarget(args as JsonArgs);
        if (target !== null && target !== '-') checkWritable(target, '--json');
      }),
    ) as Argv<T & JsonArgs>;
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
