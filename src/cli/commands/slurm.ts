// `clip-mem slurm explain JOBID [--trace FILE...] [--json FILE]`: what happened to a Slurm job's memory.
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { SLURM_EXPLAIN_SCHEMA, explainSlurmJob, formatSlurmExplanation } from '../../commands/slurm-explain';
import type { TraceReport } from '../../report/trace-report';
import { TRACE_SCHEMA } from '../../report/trace-report';
import { checkReadableFile, jsonTarget, usageCheck, withJsonOption, writeJson, type JsonArgs } from '../options';

interface ExplainArgs extends JsonArgs {
  action?: string;
  job?: string | number;
  trace?: string[];
}

/** A trace --json report, or a usage error naming the file and what it holds instead. */
function readTrace(file: string): TraceReport {
  let report: TraceReport;
  try {
    report = JSON.parse(fs.readFileSync(file, 'utf8')) as TraceReport;
  } catch (error) {
    throw new Error(
      `--trace ${file}: not JSON (${(error as Error).message}); give a file written by clip-mem trace --json`,
    );
  }
  if (report?.schema !== TRACE_SCHEMA)
    throw new Error(`--trace ${file}: not a clip-mem trace --json report (schema ${TRACE_SCHEMA})`);
  return report;
}

export const slurmCommand: CommandModule<object, ExplainArgs> = {
  command: 'slurm <action> [job]',
  describe: "Slurm: `slurm explain JOBID`, what happened to a job's memory, to which step, and what --mem to request",
  builder: (yargs) =>
    withJsonOption(
      yargs
        .positional('action', { type: 'string', choices: ['explain'], describe: 'explain: a job, after the fact' })
        .positional('job', { type: 'string', describe: 'the job id (as squeue, sbatch and srun print it)' })
        .option('trace', {
          type: 'string',
          array: true,
          describe:
            "a report the job wrote with `clip-mem trace --json FILE` (may be repeated): the program's own figures",
        }),
      `the explanation (schema/slurm-explain.schema.json, "schema": "${SLURM_EXPLAIN_SCHEMA}")`,
    )
      .check(
        usageCheck((args: ExplainArgs) => {
          const job = String(args.job ?? '');
          if (!/^\d+$/.test(job))
            throw new Error(`slurm explain: give a job id (digits, e.g. 15), not ${JSON.stringify(job)}`);
          for (const file of args.trace ?? []) {
            checkReadableFile(file, '--trace');
            readTrace(file);
          }
        }),
      )
      .example('$0 slurm explain 15', "the job's state, which step was killed for memory, and what to request")
      .example(
        '$0 slurm explain 15 --trace trace.json',
        'with the report of `srun --mem=300M clip-mem trace --json trace.json -- python3 train.py`: the --mem it needs',
      )
      .epilogue(
        'Reads scontrol show job (the controller keeps a job MinJobAge after its end), sacct (else sacct -c, the ' +
          "completion log: state and exit code only), the node's kernel log (/dev/kmsg: who the OOM killer killed, in " +
          "which step's cgroup), slurmd's log and the job's stderr file (OverMemoryKill's \"exceeded memory limit\"), " +
          'and the reports given with --trace; each source it could not read is named, with why. ' +
          'Exit status: 0 when the job was found and explained; 1 when no source knows the job; 2 on a usage error.',
      ),
  handler: (args) => {
    const reports = (args.trace ?? []).map(readTrace);
    const explanation = explainSlurmJob(String(args.job), reports);
    const out = jsonTarget(args) === '-' ? process.stderr : process.stdout;
    out.write(formatSlurmExplanation(explanation));
    writeJson(args, explanation);
    const known = explanation.job !== null || explanation.accounting !== null || explanation.steps.length > 0;
    process.exitCode = known ? 0 : 1;
  },
};
