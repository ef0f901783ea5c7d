// Slurm job memory: the variables Slurm sets in a job's environment (values in MiB, "M" in Slurm), the
// request as the controller holds it (`scontrol show job`: `srun --mem=X` alone sets no SLURM_MEM_*
// variable), and the job's and step's memory cgroups, where Slurm enforces the request.
import { spawnSync } from 'node:child_process';
import { Field, describeError, isUnknown, unknown } from '../core/field';
import type { CgroupReport, MemoryCgroup } from './cgroup';

/** What the job's environment says (readSlurmJob), and what the controller and the cgroups say (probeSlurmJob). */
export interface SlurmJob {
  jobId: string;
  /** SLURM_STEP_ID: the step this process runs in (null outside a step, e.g. in an sbatch script's batch step). */
  stepId: string | null;
  /** --mem: memory per node, in bytes. Null when not set. */
  memPerNode: Field<number> | null;
  /** --mem-per-cpu, in bytes. */
  memPerCpu: Field<number> | null;
  /** --mem-per-gpu, in bytes. */
  memPerGpu: Field<number> | null;
  /** SLURM_CPUS_ON_NODE, to turn memPerCpu into this node's total. */
  cpusOnNode: Field<number> | null;
  /** The job as the controller holds it; unknown when scontrol is missing or fails; null: not asked. */
  scontrol: Field<ScontrolJob> | null;
  /** The job's and step's memory cgroups (where the request is enforced), or null when not in one. */
  cgroup: SlurmCgroups | null;
}

/** What `scontrol show job -o` says of a job (sizes in bytes). */
export interface ScontrolJob {
  jobId: string;
  name: string | null;
  /** JobState: RUNNING, COMPLETED, OUT_OF_MEMORY, FAILED, CANCELLED... */
  state: string | null;
  reason: string | null;
  /** ExitCode as Slurm writes it, "exit:signal" (e.g. "0:125"). */
  exitCode: string | null;
  partition: string | null;
  nodeList: string | null;
  /** MinMemoryNode: --mem, per node. */
  memPerNode: number | null;
  /** MinMemoryCPU: --mem-per-cpu (or the cluster's DefMemPerCPU). */
  memPerCpu: number | null;
  numCpus: number | null;
  /** The request as an option: "--mem=300M", "--mem-per-cpu=1024M"; null when the job has none. */
  request: string | null;
  /** Bytes the request gives the job on one node (--mem, or --mem-per-cpu x its CPUs). */
  memoryOnNode: number | null;
  command: string | null;
  stdErr: string | null;
  stdOut: string | null;
  startTime: string | null;
  endTime: string | null;
}

/** The memory cgroups Slurm made for the job: /slurm_<node>/uid_U/job_N and its step_S. */
export interface SlurmCgroups {
  job: MemoryCgroup;
  step: MemoryCgroup | null;
}

const MiB = 2 ** 20;

function mebibytes(env: NodeJS.ProcessEnv, name: string): Field<number> | null {
  const value = env[name];
  if (value === undefined || value === '') return null;
  // Slurm writes plain MiB counts; some sites' wrappers append the unit.
  const match = /^(\d+)\s*M?$/i.exec(value.trim());
  return match ? Number(match[1]) * MiB : unknown(`${name}="${value}" is not a count of MiB`);
}

/** A Slurm size ("300M", "1.50G", "1024"; MiB without a unit) in bytes, or null. */
export function slurmBytes(text: string | null | undefined): number | null {
  const match = /^(\d+(?:\.\d+)?)([KMGTP]?)$/i.exec(text?.trim() ?? '');
  if (!match) return null;
  const power = { K: -1, '': 0, M: 0, G: 1, T: 2, P: 3 }[match[2]!.toUpperCase() as 'K'] ?? 0;
  return Math.round(Number(match[1]) * MiB * 1024 ** power);
}

/** Parses one job of `scontrol show job -o` (key=value pairs; Command= and paths may hold spaces, read last). */
export function parseScontrolJob(text: string): ScontrolJob | null {
  const value = (key: string): string | null => {
    const match = new RegExp(`(?:^|\\s)${key}=(.*?)(?=\\s+[A-Z][\\w:/]*=|$)`).exec(text.trim());
    const found = match?.[1]?.trim();
    return found === undefined || found === '' || found === '(null)' ? null : found;
  };
  const jobId = value('JobId');
  if (!jobId) return null;
  const memPerNode = slurmBytes(value('MinMemoryNode'));
  const memPerCpu = slurmBytes(value('MinMemoryCPU'));
  const numCpus = Number(value('NumCPUs')) || null;
  const mib = (bytes: number) => `${Math.ceil(bytes / MiB)}M`;
  return {
    jobId,
    name: value('JobName'),
    state: value('JobState'),
    reason: value('Reason'),
    exitCode: value('ExitCode'),
    partition: value('Partition'),
    nodeList: value('NodeList'),
    memPerNode,
    memPerCpu,
    numCpus,
    request:
      memPerNode !== null ? `--mem=${mib(memPerNode)}` : memPerCpu !== null ? `--mem-per-cpu=${mib(memPerCpu)}` : null,
    memoryOnNode: memPerNode ?? (memPerCpu !== null && numCpus !== null ? memPerCpu * numCpus : null),
    command: value('Command'),
    stdErr: value('StdErr'),
    stdOut: value('StdOut'),
    startTime: value('StartTime'),
    endTime: value('EndTime'),
  };
}

/**
 * `scontrol show job -o JOBID` run as a child: the job, or unknown saying why (scontrol not installed,
 * the controller unreachable, the job purged after MinJobAge).
 */
export function scontrolJob(jobId: string, env: NodeJS.ProcessEnv = process.env): Field<ScontrolJob> {
  const run = spawnSync('scontrol', ['show', 'job', '-o', jobId], { encoding: 'utf8', env, timeout: 15_000 });
  if (run.error) {
    const missing = (run.error as NodeJS.ErrnoException).code === 'ENOENT';
    return unknown(
      missing
        ? "scontrol is not on PATH (Slurm's client commands are not installed here), so the job's request cannot be read"
        : `scontrol show job ${jobId} failed (${describeError(run.error)})`,
    );
  }
  const said = `${run.stderr}${run.stdout}`.trim().split('\n')[0] ?? '';
  if (run.status !== 0) return unknown(`scontrol show job ${jobId} failed: ${said || `exit ${run.status}`}`);
  return parseScontrolJob(run.stdout) ?? unknown(`scontrol show job ${jobId} printed no job: ${said}`);
}

/** Whether the job's state is one of Slurm's final ones; any other (PENDING, RUNNING, COMPLETING...) may still change. */
export function slurmJobEnded(state: string | null): boolean {
  return state !== null && slurmFinalStates.has(state);
}

const slurmFinalStates = new Set([
  'BOOT_FAIL',
  'CANCELLED',
  'COMPLETED',
  'DEADLINE',
  'FAILED',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
  'PREEMPTED',
  'TIMEOUT',
]);

/**
 * scontrolJob once `settled(state)` holds, asked every half second for at most `seconds`; then the job as
 * it is (or unknown, at once). A job that just ended reads COMPLETING for a moment (its epilog, the
 * cgroup's OOM count) before its final state: OUT_OF_MEMORY only then.
 */
export function scontrolJobWhen(
  jobId: string,
  settled: (state: string | null) => boolean,
  seconds = 30,
): Field<ScontrolJob> {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; ; waited += 0.5) {
    const job = scontrolJob(jobId);
    if (isUnknown(job) || settled(job.state) || waited >= seconds) return job;
    Atomics.wait(pause, 0, 0, 500); // a synchronous half-second sleep
  }
}

/** The job's and step's groups among this process's memory cgroups (readCgroups walks up through both). */
export function slurmCgroups(cgroups: CgroupReport, jobId: string): SlurmCgroups | null {
  for (const hierarchy of cgroups.hierarchies) {
    const job = hierarchy.groups.find((g) => g.path.endsWith(`/job_${jobId}`));
    if (!job) continue;
    const step = hierarchy.groups.find((g) => new RegExp(`/job_${jobId}/step_[^/]+$`).test(g.path)) ?? null;
    return { job, step };
  }
  return null;
}

/** The job's memory request as its environment has it, or null outside a Slurm job (no SLURM_JOB_ID). */
export function readSlurmJob(env: NodeJS.ProcessEnv = process.env): SlurmJob | null {
  const jobId = env.SLURM_JOB_ID;
  if (!jobId) return null;
  const cpus = env.SLURM_CPUS_ON_NODE;
  return {
    jobId,
    stepId: env.SLURM_STEP_ID || null,
    memPerNode: mebibytes(env, 'SLURM_MEM_PER_NODE'),
    memPerCpu: mebibytes(env, 'SLURM_MEM_PER_CPU'),
    memPerGpu: mebibytes(env, 'SLURM_MEM_PER_GPU'),
    cpusOnNode:
      cpus === undefined
        ? null
        : /^\d+$/.test(cpus)
          ? Number(cpus)
          : unknown(`SLURM_CPUS_ON_NODE="${cpus}" is not a count`),
    scontrol: null,
    cgroup: null,
  };
}

/** readSlurmJob, with the job as scontrol has it (a child process) and its cgroups among `cgroups`. */
export function probeSlurmJob(env: NodeJS.ProcessEnv, cgroups: CgroupReport): SlurmJob | null {
  const job = readSlurmJob(env);
  return job && { ...job, scontrol: scontrolJob(job.jobId, env), cgroup: slurmCgroups(cgroups, job.jobId) };
}

/** The job's memory on this node in bytes: --mem, else --mem-per-cpu x CPUs on the node, else the controller's. */
export function slurmNodeMemory(job: SlurmJob): number | undefined {
  if (typeof job.memPerNode === 'number') return job.memPerNode;
  if (typeof job.memPerCpu === 'number' && typeof job.cpusOnNode === 'number') return job.memPerCpu * job.cpusOnNode;
  if (job.scontrol && !isUnknown(job.scontrol) && job.scontrol.memoryOnNode !== null) return job.scontrol.memoryOnNode;
  return undefined;
}

/** "--mem=300M": the request from the environment, else from scontrol; null when neither says. */
export function slurmRequest(job: SlurmJob): string | null {
  const mib = (bytes: number) => `${Math.ceil(bytes / MiB)}M`;
  if (typeof job.memPerNode === 'number') return `--mem=${mib(job.memPerNode)}`;
  if (typeof job.memPerCpu === 'number') return `--mem-per-cpu=${mib(job.memPerCpu)}`;
  return job.scontrol && !isUnknown(job.scontrol) ? job.scontrol.request : null;
}

/** One row of sacct: the job or one of its steps ("15", "15.0", "15.batch"). */
export interface SacctRow {
  jobId: string;
  state: string;
  exitCode: string;
  /** Bytes; null when sacct -c (no accounting) or not recorded. */
  maxRss: number | null;
}

/** What accounting says of a job: full sacct, or `sacct -c` (the completion log: state and exit code only). */
export interface SacctJob {
  source: 'sacct' | 'sacct -c';
  rows: SacctRow[];
  /** Why full accounting is not there, when sacct -c stood in ("sacct: Slurm accounting storage is disabled"). */
  missing: string | null;
}

function runSacct(args: string[]): { ok: boolean; out: string } {
  const run = spawnSync('sacct', args, { encoding: 'utf8', timeout: 15_000 });
  if (run.error) return { ok: false, out: describeError(run.error) };
  const out = `${run.stdout}`.trim();
  const err = `${run.stderr}`.trim();
  return { ok: run.status === 0 && !/storage is disabled/i.test(out + err), out: run.status === 0 ? out || err : err };
}

/** sacct for the job, else `sacct -c`, else unknown saying why neither answered. */
export function sacctJob(jobId: string): Field<SacctJob> {
  const parse = (out: string, full: boolean): SacctRow[] =>
    out
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split('|'))
      .map(([id, state, exitCode, maxRss]) => ({
        jobId: id ?? '',
        state: state ?? '',
        exitCode: exitCode ?? '',
        maxRss: full ? slurmBytes(maxRss?.replace(/K$/, 'K')) : null,
      }));
  const full = runSacct(['-j', jobId, '-P', '-n', '--format=JobID,State,ExitCode,MaxRSS']);
  if (full.ok) return { source: 'sacct', rows: parse(full.out, true), missing: null };
  const missing = `sacct: ${full.out.split('\n')[0] || 'no answer'}`;
  const completion = runSacct(['-c', '-j', jobId, '-P', '-n', '--format=JobID,State,ExitCode']);
  if (completion.ok && completion.out) return { source: 'sacct -c', rows: parse(completion.out, false), missing };
  return unknown(`${missing}; sacct -c: ${completion.out.split('\n')[0] || 'the job is not in the completion log'}`);
}

/** `scontrol show config` as key -> value, or unknown. */
export function slurmConfig(): Field<Map<string, string>> {
  const run = spawnSync('scontrol', ['show', 'config'], { encoding: 'utf8', timeout: 15_000 });
  if (run.error || run.status !== 0)
    return unknown(`scontrol show config failed (${run.error ? describeError(run.error) : run.stderr.trim()})`);
  const config = new Map<string, string>();
  for (const match of run.stdout.matchAll(/^(\w+)\s+= (.*)$/gm)) config.set(match[1]!, match[2]!.trim());
  return config;
}

/** True when a Slurm controller answers here (srun on PATH, `scontrol ping` UP); else why not. */
/**
 * How many nodes the partition has (the default one when none is named), from sinfo; a sentence saying
 * why not when it cannot be read.
 */
export function partitionNodes(partition?: string): number | string {
  const sinfo = spawnSync('sinfo', ['-h', '-o', '%P %D', ...(partition ? ['-p', partition] : [])], {
    encoding: 'utf8',
    timeout: 15_000,
  });
  if (sinfo.error || sinfo.status !== 0) return `sinfo failed: ${sinfo.stderr?.trim() || describeError(sinfo.error)}`;
  const rows = sinfo.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(/\s+/));
  // Without -p, the default partition is the one sinfo marks with "*".
  const row = partition ? rows[0] : (rows.find((r) => r[0]!.endsWith('*')) ?? rows[0]);
  if (!row) return partition ? `sinfo lists no partition ${partition}` : 'sinfo lists no partition';
  return rows.filter((r) => r[0] === row[0]).reduce((sum, r) => sum + Number(r[1]), 0);
}

export function slurmReachable(): true | string {
  const ping = spawnSync('scontrol', ['ping'], { encoding: 'utf8', timeout: 15_000 });
  if (ping.error)
    return (ping.error as NodeJS.ErrnoException).code === 'ENOENT'
      ? 'scontrol is not on PATH (no Slurm client here)'
      : `scontrol ping failed (${describeError(ping.error)})`;
  if (ping.status !== 0 || !/\bUP\b/.test(ping.stdout))
    return `scontrol ping: ${`${ping.stdout}${ping.stderr}`.trim().split('\n')[0] || `exit ${ping.status}`}`;
  const srun = spawnSync('srun', ['--version'], { encoding: 'utf8', timeout: 15_000 });
  if (srun.error || srun.status !== 0) return 'srun is not on PATH (no Slurm client here)';
  return true;
}
