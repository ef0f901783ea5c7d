// The clip-mem command line. Each command lives in src/cli/commands/<name>.ts and is listed once below.
import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { checkpointCommand } from './commands/checkpoint';
import { compareCommand } from './commands/compare';
import { estimateCommand } from './commands/estimate';
import { fitCommand } from './commands/fit';
import { nativeProbeCommand } from './commands/native-probe';
import { runCommand } from './commands/run';
import { slurmCommand } from './commands/slurm';
import { traceCommandModule } from './commands/trace';
import { nativeDescription, toolVersion } from '../core/native';

// Each command declares its own argument type; the list holds them all.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const commands: CommandModule<any, any>[] = [
  nativeProbeCommand,
  traceCommandModule,
  runCommand,
  compareCommand,
  checkpointCommand,
  estimateCommand,
  fitCommand,
  slurmCommand,
];

class UsageError extends Error {}

/** The options that take no value: `--verify=abc` would otherwise read as false, silently. */
const BOOLEAN_OPTIONS = new Set([
  'verify',
  'calibrate',
  'refresh-baseline',
  'layout',
  'allow-different',
  'cluster',
  'slurm',
  'help',
  'version',
]);

/**
 * What yargs would misread, made plain before it parses: a lone `-` after `--json` (an unknown argument
 * to yargs) and a negative value (`--limit-as -5G` reads as the short options -5 and -G) are joined to
 * their option, so that the option's own check names them; a value given to a boolean option is refused.
 * Nothing after a bare `--` (the program trace or fit runs, and its arguments) is touched; other commands
 * refuse a `--`.
 */
/**
 * Old spellings that keep working, each with a note: the weight format is --dtype in every command (it was
 * --weights in native-probe and --format in checkpoint).
 */
const RENAMED: Record<string, Record<string, string>> = {
  'native-probe': { weights: 'dtype' },
  checkpoint: { format: 'dtype' },
};

/** argv with the old option spellings of its command replaced by today's, each named once on stderr. */
function renameOldOptions(argv: string[]): string[] {
  const renamed = RENAMED[argv.find((a) => !a.startsWith('-')) ?? ''] ?? {};
  const end = argv.includes('--') ? argv.indexOf('--') : argv.length;
  return argv.map((arg, i) => {
    const option = /^--([\w-]+)(=.*)?$/s.exec(arg);
    const now = option && i < end ? renamed[option[1]!] : undefined;
    if (!now) return arg;
    process.stderr.write(
      `clip-mem: --${option![1]} is now --${now}, the same in every command; --${option![1]} still works\n`,
    );
    return `--${now}${option![2] ?? ''}`;
  });
}

/** fit's options for the CLIP scenarios, which mean nothing for a command given after `--`. */
const FIT_CLIP_OPTIONS = new Set([
  'phase',
  'model',
  'dtype',
  'optimizer',
  'segments',
  'max-batch',
  'threads',
  'verify',
]);

function joinDashValues(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      // yargs would set whatever follows aside, silently: only trace and fit run a command given after `--`.
      const command = argv.find((a) => !a.startsWith('-'));
      if (command !== 'trace' && command !== 'fit')
        throw new UsageError(
          `only trace and fit take a command after \`--\`; ${command ?? 'no command'} was given ${JSON.stringify(argv.slice(i + 1).join(' '))} there`,
        );
      // With a command of the user's own, fit finds a limit for it: the CLIP scenarios' options say nothing.
      const clipOnly = joined.find((given) => FIT_CLIP_OPTIONS.has(given.replace(/^--([\w-]+).*$/, '$1')));
      if (command === 'fit' && clipOnly)
        throw new UsageError(
          `${clipOnly.split('=')[0]} is for the CLIP scenarios; with a command after --, fit takes --for, --max, --step, --runs, --timeout, --pass-if, --json`,
        );
      joined.push(...argv.slice(i));
      break;
    }
    const option = /^--([a-z][\w-]*)(=(.*))?$/s.exec(arg);
    const next = argv[i + 1];
    if (option && option[2] !== undefined && BOOLEAN_OPTIONS.has(option[1]!) && !/^(true|false)$/.test(option[3]!)) {
      throw new UsageError(`--${option[1]} takes no value (got ${JSON.stringify(option[3])})`);
    }
    if (
      option &&
      option[2] === undefined &&
      !BOOLEAN_OPTIONS.has(option[1]!) &&
      next !== undefined &&
      (next === '-' || /^-(\d|\.\d)/.test(next))
    )
      joined.push(`${arg}=${argv[++i]}`);
    else joined.push(arg);
  }
  return joined;
}

function usageFailure(message: string): never {
  process.stderr.write(`clip-mem: ${message}\nRun \`clip-mem --help\` or \`clip-mem <command> --help\` for usage.\n`);
  process.exit(2);
}

export async function main(argv: string[]): Promise<void> {
  let args: string[];
  try {
    args = joinDashValues(renameOldOptions(argv));
  } catch (error) {
    if (error instanceof UsageError) usageFailure(error.message);
    throw error;
  }
  let parser = yargs(args)
    .scriptName('clip-mem')
    .usage('$0 <command> [options]\n\nTells you exactly why your model ran out of memory, and what will fit instead.')
    .strict()
    .demandCommand(1, 'Name a command: start with `clip-mem native-probe` to see every limit that binds this process.')
    .recommendCommands()
    .help()
    .alias('help', 'h')
    // The version names the native binaries in use (a build from source or a prebuild): found only when asked.
    .version(args.includes('--version') ? `${toolVersion()} (${nativeDescription()})` : toolVersion())
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, error) => {
      // yargs reports its own usage failures (including a command's .check) as YError: those exit 2.
      if (error instanceof Error && error.name !== 'YError') throw error;
      usageFailure(message);
    });
  for (const command of commands) parser = parser.command(command);
  await parser.parseAsync();
}
