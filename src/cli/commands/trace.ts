// `clip-mem trace [--limit-as N] [--limit-data N] [--limit-mem N] [--model M] [--json FILE] [--markdown FILE] [--html FILE] [--pprof FILE] [--heap-html FILE] -- <command...>`
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { CommandModule } from 'yargs';
import { traceCommand } from '../../track/launcher';
import { isPresetName, presetConfig } from '../../clip/config';
import { resolveClipModel } from '../../clip/checkpoint';
import {
  checkFailRule,
  checkModel,
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
import { heapPprof } from '../../report/pprof';
import { heapProfileHtml } from '../../report/heap-flame';
import { traceEvents } from '../../report/trace-events';
import { renderTraceHtml, renderTraceMarkdown } from '../../report/trace-document';

interface TraceArgs extends LimitArgs, JsonArgs {
  timeout?: number;
  fail?: string;
  model?: string;
  pprof?: string;
  heapHtml?: string;
  markdown?: string;
  html?: string;
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
      .option('markdown', {
        type: 'string',
        requiresArg: true,
        describe:
          'write the report to FILE as Markdown: the ending, diagnosis and fix, every failure, a row and a timeline per process',
      })
      .option('html', {
        type: 'string',
        requiresArg: true,
        describe:
          'write the same report to FILE as one self-contained HTML page, with the RSS of the tree and of each process charted',
      })
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
      .option('model', {
        type: 'string',
        describe:
          'a CLIP preset (vit-b-32, ...), model directory or checkpoint: each failed size is named as the tensor(s) of exactly that many bytes in fp32, fp16/bf16 or int8',
      })
      .option('pprof', {
        type: 'string',
        requiresArg: true,
        describe:
          'write the live-heap profile as a gzipped pprof heap profile (profile.proto: pprof, speedscope, Perfetto) ' +
          'at the moment that explains the ending (the first failure, else the kill, else the peak)',
      })
      .option('heap-html', {
        type: 'string',
        requiresArg: true,
        describe:
          'write the live-heap profile as a self-contained HTML page: icicle charts (inline SVG, no script) of the live bytes by stack at the failure, the peak and the kill',
      })
      .check(
        usageCheck((args) => {
          if (args.fail !== undefined) checkFailRule(args.fail);
          if (args.model !== undefined) checkModel(args.model, '--model', false);
          checkOutputFile(args['trace-events'], '--trace-events');
          checkOutputFile((args as TraceArgs).markdown, '--markdown');
          checkOutputFile((args as TraceArgs).html, '--html');
          checkOutputFile(args.pprof, '--pprof');
          checkOutputFile((args as TraceArgs).heapHtml, '--heap-html');
          checkDistinctOutputs({
            '--json': jsonTarget(args as TraceArgs),
            '--trace-events': args['trace-events'],
            '--pprof': args.pprof,
            '--heap-html': (args as TraceArgs).heapHtml,
            '--markdown': (args as TraceArgs).markdown,
            '--html': (args as TraceArgs).html,
          });
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
        '$0 trace --limit-as 700M --model vit-b-32 -- python3 load_clip.py',
        'and which tensor of CLIP ViT-B/32 each failed size is',
      )
      .example(
        '$0 trace --limit-mem 300M --json out.json -- node app.js',
        'run in a 300 MiB memory cgroup; JSON for scripts',
      )
      .example(
        '$0 trace --limit-mem 300M --pprof heap.pb.gz -- python3 train.py',
        'who held the memory at the kill, for `go tool pprof -top heap.pb.gz` or speedscope',
      )
      .example(
        '$0 trace --limit-mem 2G --markdown oom.md --html oom.html -- python3 train.py',
        'the report as Markdown (for an issue) and as one HTML page with the memory of every process charted',
      )
      .example(
        '$0 trace --trace-events run.trace.json -- python3 train.py',
        'every process over time, for ui.perfetto.dev or chrome://tracing',
      )
      .epilogue(
        "The command runs with LD_PRELOAD set to clip-mem's interposer, which records every malloc, calloc, realloc, " +
          'posix_memalign, mmap, mremap, pthread_create, mprotect (making reserved pages writable commits them) and fork that fails, ' +
          'with the exact size, errno, stack and phase, into a ' +
          'file that survives the process being killed. It also samples the allocations (one per 512 KiB on average, ' +
          'CLIPMEM_HEAP_SAMPLE=BYTES to change it, 0 for none) to estimate which call sites hold the live memory. ' +
          'After the command ends, trace prints how it ended, the peaks, every ' +
          'failure with the limit it hit (with the arithmetic), who held the memory at the failure, the peak and the kill, and a diagnosis: address-space, data-limit, commit-limit, ' +
          'overcommit-heuristic, map-count, cgroup-oom-kill, host-oom-kill, gpu-memory, js-heap, shared-memory, not-memory, none, or unknown ' +
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
      const model =
        args.model === undefined
          ? undefined
          : isPresetName(args.model)
            ? presetConfig(args.model)
            : resolveClipModel(args.model).config;
      const report = buildTraceReport(run, { model });
      process.stderr.write(formatTraceReport(report));
      writeJson(args, report);
      if (args.markdown !== undefined) fs.writeFileSync(args.markdown, renderTraceMarkdown(report));
      if (args.html !== undefined) fs.writeFileSync(args.html, renderTraceHtml(report));
      if (args.pprof !== undefined) {
        const profile = heapPprof(run.record ? [run.record, ...run.descendants] : run.descendants);
        if (profile) fs.writeFileSync(args.pprof, profile);
        else
          process.stderr.write(`clip-mem trace: no heap profile to write to ${args.pprof} (no process was profiled)\n`);
      }
      if (args.heapHtml !== undefined) {
        if (report.heapProfile) fs.writeFileSync(args.heapHtml, heapProfileHtml(report.heapProfile, command));
        else
          process.stderr.write(
            `clip-mem trace: no heap profile to write to ${args.heapHtml} (no process was profiled)\n`,
          );
      }
      if (args['trace-events'] !== undefined)
        fs.writeFileSync(args['trace-events'], JSON.stringify(traceEvents(report)) + '\n');
      const { code, signal } = run.exit;
      const signalNumber = signal ? os.constants.signals[signal] : undefined;
      process.exitCode = code ?? (signalNumber !== undefined ? 128 + signalNumber : 1);
    });
  },
};
