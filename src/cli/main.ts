// The clip-mem command line. Each command lives in src/cli/commands/<name>.ts and is listed once below.
import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { checkpointCommand } from './commands/checkpoint';
import { compareCommand } from './commands/compare';
import { estimateCommand } from './commands/estimate';
import { fitCommand } from './commands/fit';
import { nativeProbeCommand } from './commands/native-probe';
import { runCommand } from './commands/run';
import { traceCommandModule } from './commands/trace';

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
];

/** yargs reads a lone `-` after an option as an unknown argument: `--json -` is passed as `--json=-`. */
function joinDashValues(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json' && argv[i + 1] === '-') joined.push(`--json=${argv[++i]}`);
    else joined.push(argv[i]!);
  }
  return joined;
}

export async function main(argv: string[]): Promise<void> {
  let parser = yargs(joinDashValues(argv))
    .scriptName('clip-mem')
    .usage('$0 <command> [options]\n\nTells you exactly why your model ran out of memory, and what will fit instead.')
    .strict()
    .demandCommand(1, 'Name a command: start with `clip-mem native-probe` to see every limit that binds this process.')
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, error) => {
      // yargs reports its own usage failures (including a command's .check) as YError: those exit 2.
      if (error instanceof Error && error.name !== 'YError') throw error;
      process.stderr.write(
        `clip-mem: ${message}\nRun \`clip-mem --help\` or \`clip-mem <command> --help\` for usage.\n`,
      );
      process.exit(2);
    });
  for (const command of commands) parser = parser.command(command);
  await parser.parseAsync();
}
