// `clip-mem run --slurm`: the same run, submitted as one Slurm job step (srun), its output streamed as it
// comes (the progress), its --json/--markdown/--html files written by the run inside the job (a path the
// node shares), then the job's ending as the controller has it. Inside the job every scenario's OOM kill
// by the job's cgroup is named as Slurm's by the trace path (track/slurm.ts).
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { isUnknown } from '../core/field';
import { packageRoot } from '../core/native';
import { scontrolJob, slurmReachable } from '../probe/slurm';

export interface SlurmRunRequest {
  /** run's own arguments, without --slurm, --partition and --mem. */
  runArgs: string[];
  partition?: string;
  /** --mem in bytes (srun takes whole MiB). */
  mem?: number;
  progress: (line: string) => void;
}

export interface SlurmRunOutcome {
  status: number;
  jobId: string | null;
  /** "Slurm job 12 on vm, --mem=1500M: OUT_OF_MEMORY (exit 0:125)", from scontrol. */
  ending: string;
}

export async function runInSlurm(request: SlurmRunRequest): Promise<SlurmRunOutcome> {
  const reachable = slurmReachable();
  if (reachable !== true) throw new Error(`run --slurm: no Slurm cluster here: ${reachable}`);
  const args = [
    '--job-name=clip-mem-run',
    ...(request.partition ? [`--partition=${request.partition}`] : []),
    ...(request.mem !== undefined ? [`--mem=${Math.ceil(request.mem / 2 ** 20)}M`] : []),
    '--',
    // The job names itself first (srun says its id only on failure): the job and the node it runs on.
    'sh',
    '-c',
    'echo "clip-mem run --slurm: in Slurm job $SLURM_JOB_ID on $(hostname -s)" >&2; exec "$@"',
    'sh',
    process.execPath,
    path.join(packageRoot, 'bin', 'clip-mem.js'),
    'run',
    ...request.runArgs,
  ];
  request.progress(
    `submitting: srun ${args.slice(0, args.indexOf('--')).join(' ')} -- clip-mem run ${request.runArgs.join(' ')}`,
  );
  let jobId: string | null = null;
  const child = spawn('srun', args, { stdio: ['ignore', 'inherit', 'pipe'] });
  child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    jobId ??= /in Slurm job (\d+) on /.exec(text)?.[1] ?? null;
    process.stderr.write(chunk);
  });
  const status = await new Promise<number>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? 128 + (signal ? 9 : 0))),
  );
  const job = jobId ? scontrolJob(jobId) : null;
  const ending =
    job && !isUnknown(job)
      ? `Slurm job ${job.jobId} on ${job.nodeList ?? '?'}, ${job.request ?? 'no memory request'}: ${job.state ?? '?'} (exit ${job.exitCode ?? '?'}); \`clip-mem slurm explain ${job.jobId}\` for the job's side`
      : `srun exited ${status}${job ? ` (${job.slice('unknown: '.length)})` : ''}`;
  return { status, jobId, ending };
}
