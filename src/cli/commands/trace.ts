// `clip-mem trace [--limit-as N] [--limit-data N] [--limit-mem N] [--json FILE] -- <command...>`
import * as os from 'node:os';
import type { CommandModule } from 'yargs';
import { traceCommand } from '../../track/launcher';
import {
  checkFailRule,
  checkProgram,
  commandOf,
  jsonTarget,
  stoppable,
  durationOption,
  limitsFrom,
  checkCgroupUsable,
  checkDistinctOutputs,
  checkOutputFile,
  usageCheck,
  withJsonOption,
  withLimitOptions,
  writeJson,
  type JsonArgs,
  type LimitArgs,
} from '../options';
import { buildTraceReport, formatTraceReport } from '../../report/trace-report';
import { traceEvents } from '../../report/trace-events';
import * as fs from 'node:fs';

interface TraceArgs extends LimitArgs, JsonArgs {
  timeout?: number;
  fail?: string;
  'trace-events'?: string;
  '--'?: (string | number)[];
  command?: (string | number)[];
}

export const traceCommandModule: CommandModule<object, TraceArgs> = {
  command: 'trace [command..]',
  describe: 'Run a command under the allocation tracker: every failed allocation, byte-exact, and why it failed',
  builder: (yargs) =>
    withJsonOption(
      withLimitOptions(yargs.parserConfiguration({ 'populate--': true, 'unknown-options-as-args': false })),
      "the result (schema/trace.schema.json); with `-`, the command's own standard output goes to standard error",
    )
      .option('timeout', durationOption('timeout', "seconds before the command's whole process group is killed"))
      .option('trace-events', {
        type: 'string',
        requiresArg: true,
        describe:
          'write the run as a Chrome trace / Perfetto JSON to FILE (open it in ui.perfetto.dev): RSS, VmSize and heap ' +
          'per process, the tree summed, phases, failures and kills',
      })
      .option('fail', {
        type: 'string',
        describe:
          'fault injection: make calls fail with ENOMEM, e.g. malloc:nth=3, mmap:above=1048576 or mprotect:nth=1 (comma-separated)',
      })
      .check(
        usageCheck((args) => {
          if (args.fail !== undefined) checkFailRule(args.fail);
          checkOutputFile(args['trace-events'], '--trace-events');
          checkDistinctOutputs({ '--json': jsonTarget(args as TraceArgs), '--trace-events': args['trace-events'] });
          const program = commandOf(args as TraceArgs)[0];
          if (program !== undefined) checkProgram(program);
          checkCgroupUsable(limitsFrom(args).mem);
        }),
      )
      .example(
        '$0 trace --limit-as 4G -- python3 train.py',
        'which allocation failed under a 4 GiB address-space limit, and why',
      )
      .example(
        '$0 trace --limit-mem 300M --json out.json -- node app.js',
        'run in a 300 MiB memory cgroup; JSON for scripts',
      )
      .example(
        '$0 trace --trace-events run.trace.json -- python3 train.py',
        'every process over time, for ui.perfetto.dev or chrome://tracing',
      )
      .epilogue(
        "The command runs with LD_PRELOAD set to clip-mem's interposer, which records every malloc, calloc, realloc, " +
          'posix_memalign, mmap, mremap, pthread_create and mprotect (making reserved pages writable commits them) that fails, ' +
          'with the exact size, errno, stack and phase, into a ' +
          'file that survives the process being killed. After the command ends, trace prints how it ended, the peaks, every ' +
          'failure with the limit it hit (with the arithmetic), and a diagnosis: address-space, data-limit, commit-limit, ' +
          'overcommit-heuristic, map-count, cgroup-oom-kill, host-oom-kill, gpu-memory, js-heap, not-memory, none, or unknown ' +
          '(the evidence is not there: it says what is missing). ' +
          "Exit status: the command's own (128 + signal number when it was killed); 2 on a usage error (a bad option " +
          'or value, or a program that does not exist), found before the command starts.',
      ),
  handler: async (args) => {
    const command = commandOf(args);
    if (!command.length) {
      process.stderr.write(
        'clip-mem trace: name the command to run after --, e.g. clip-mem trace --limit-as 4G -- node app.js\n',
      );
      process.exit(2);
    }
    const limits = limitsFrom(args);
    // SIGINT (Ctrl-C), SIGTERM, SIGHUP to clip-mem: the command's process group is killed, and the report
    // of what ran so far is still printed and written (stoppable).
    await stoppable(async () => {
      const run = await traceCommand({
        command,
        limits,
        timeoutMs: args.timeout !== undefined ? args.timeout * 1000 : undefined,
        failRule: args.fail,
        // With the JSON on standard output, the command's own output goes to standard error: stdout
        // then carries the JSON alone, for `| jq`.
        onStdout: (chunk) => (jsonTarget(args) === '-' ? process.stderr : process.stdout).write(chunk),
        onStderr: (chunk) => process.stderr.write(chunk),
      });
      const report = buildTraceReport(run);
      process.stderr.write(formatTraceReport(report));
      writeJson(args, report);
      if (args['trace-events'] !== undefined)
        fs.writeFileSync(args['trace-events'], JSON.stringify(traceEvents(report)) + '\n');
      const { code, signal } = run.exit;
      const signalNumber = signal ? os.constants.signals[signal] : undefined;
      process.exitCode = code ?? (signalNumber !== undefined ? 128 + signalNumber : 1);
    });
  },
};
