// `clip-mem trace [--limit-as N] [--limit-data N] [--limit-mem N] [--json FILE] -- <command...>`
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { CommandModule } from 'yargs';
import { parseBytes } from '../../units';
import { TraceLimits, traceCommand } from '../../track/launcher';
import { buildTraceReport, formatTraceReport } from '../../track/report';

interface TraceArgs {
  'limit-as'?: string;
  'limit-data'?: string;
  'limit-mem'?: string;
  json?: string;
  timeout?: number;
  fail?: string;
  '--'?: (string | number)[];
  command?: (string | number)[];
}

export const traceCommandModule: CommandModule<{}, TraceArgs> = {
  command: 'trace [command..]',
  describe: 'Run a command under the allocation tracker: every failed allocation, byte-exact, and why it failed',
  builder: (yargs) =>
    yargs
      .parserConfiguration({ 'populate--': true, 'unknown-options-as-args': false })
      .option('limit-as', { type: 'string', describe: 'RLIMIT_AS for the command (like ulimit -v), e.g. 4G' })
      .option('limit-data', {
        type: 'string',
        describe: 'RLIMIT_DATA for the command (heap + private writable), e.g. 2G',
      })
      .option('limit-mem', {
        type: 'string',
        describe: 'memory cgroup limit (RSS + page cache; the kernel OOM-kills above it), e.g. 300M',
      })
      .option('json', {
        type: 'string',
        describe: 'also write the result as JSON to this file ("-" for stdout, after the output)',
      })
      .option('timeout', { type: 'number', describe: "seconds before the command's whole process group is killed" })
      .option('fail', {
        type: 'string',
        describe:
          'fault injection: make calls fail with ENOMEM, e.g. malloc:nth=3, mmap:above=1048576 or mprotect:nth=1 (comma-separated)',
      })
      .example(
        '$0 trace --limit-as 4G -- python3 train.py',
        'which allocation failed under a 4 GiB address-space limit, and why',
      )
      .example(
        '$0 trace --limit-mem 300M --json out.json -- node app.js',
        'run in a 300 MiB memory cgroup; JSON for scripts',
      )
      .epilogue(
        "The command runs with LD_PRELOAD set to clip-mem's interposer, which records every malloc, calloc, realloc, " +
          'posix_memalign, mmap, mremap, pthread_create and mprotect (making reserved pages writable commits them) that fails, ' +
          'with the exact size, errno, stack and phase, into a ' +
          'file that survives the process being killed. After the command ends, trace prints how it ended, the peaks, every ' +
          'failure with the limit it hit (with the arithmetic), and a diagnosis: address-space, data-limit, commit-limit, ' +
          'overcommit-heuristic, map-count, cgroup-oom-kill, host-oom-kill, gpu-memory, js-heap, not-memory or none. ' +
          "The exit code is the command's (128 + signal number when killed).",
      ),
  handler: async (args) => {
    const command = [...(args['--'] ?? []), ...(args.command ?? [])].map(String);
    if (!command.length) {
      process.stderr.write(
        'clip-mem trace: name the command to run after --, e.g. clip-mem trace --limit-as 4G -- node app.js\n',
      );
      process.exit(2);
    }
    const limits: TraceLimits = {};
    if (args['limit-as'] !== undefined) limits.as = parseBytes(args['limit-as'], '--limit-as');
    if (args['limit-data'] !== undefined) limits.data = parseBytes(args['limit-data'], '--limit-data');
    if (args['limit-mem'] !== undefined) limits.mem = parseBytes(args['limit-mem'], '--limit-mem');
    const run = await traceCommand({
      command,
      limits,
      timeoutMs: args.timeout !== undefined ? args.timeout * 1000 : undefined,
      failRule: args.fail,
      onStdout: (chunk) => process.stdout.write(chunk),
      onStderr: (chunk) => process.stderr.write(chunk),
    });
    const report = buildTraceReport(run);
    process.stderr.write(formatTraceReport(report));
    if (args.json === '-') process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    else if (args.json) fs.writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
    const { code, signal } = run.exit;
    const signalNumber = signal ? os.constants.signals[signal] : undefined;
    process.exitCode = code ?? (signalNumber !== undefined ? 128 + signalNumber : 1);
  },
};
