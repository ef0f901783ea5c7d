// A traced run inside a Slurm job: the job's request and the job's and step's memory cgroups, read before
// and after the run, so that an OOM kill by the job's cgroup is named as Slurm's ("Slurm job 12, --mem=300M")
// even when the kernel log cannot be read (/proc/vmstat's oom_kill counts cgroup kills too, so it alone
// would look like the host's).
import { isUnknown, known } from '../core/field';
import { type MemoryCgroup, readCgroupV1, readCgroupV2, readCgroups } from '../probe/cgroup';
import { type SlurmJob, probeSlurmJob, slurmNodeMemory, slurmRequest } from '../probe/slurm';

export interface SlurmStepOutcome {
  jobId: string;
  /** SLURM_STEP_ID; null in an sbatch script's batch step. */
  stepId: string | null;
  /** The request as an option ("--mem=300M"), from the environment or scontrol; null when neither says. */
  request: string | null;
  /** Why the request is not known, when it is not (scontrol missing, the controller unreachable). */
  requestUnknown?: string;
  /** The job's memory cgroup (/slurm_<node>/uid_U/job_N), null when the job has none (OverMemoryKill, no cgroups). */
  cgroup: string | null;
  stepCgroup: string | null;
  /** The job's cgroup limit in bytes (memory.limit_in_bytes), else the request's bytes. */
  limit: number | null;
  /** The step's memory peak (memory.max_usage_in_bytes: RSS + page cache of every process of the step). */
  peak: number | null;
  /** OOM kills the job's cgroup counted during the run (memory.oom_control oom_kill). */
  oomKills: number | null;
}

export interface SlurmWatch {
  job: SlurmJob;
  /** This process's memory groups inside the job (task_0, step_S, job_N) and their OOM kill counts before the run. */
  groups: MemoryCgroup[];
  killsBefore: (number | undefined)[];
}

const reread = (group: MemoryCgroup): MemoryCgroup =>
  group.version === 1 ? readCgroupV1(group.directory, group.path) : readCgroupV2(group.directory, group.path);

/** Before the run: the job, or undefined outside Slurm (no SLURM_JOB_ID). */
export function watchSlurmJob(env: NodeJS.ProcessEnv): SlurmWatch | undefined {
  if (!env.SLURM_JOB_ID) return undefined;
  const cgroups = readCgroups();
  const job = probeSlurmJob(env, cgroups);
  if (!job) return undefined;
  const top = job.cgroup?.job.path;
  const groups =
    top === undefined
      ? []
      : cgroups.hierarchies.flatMap((h) => h.groups).filter((g) => g.path === top || g.path.startsWith(`${top}/`));
  return { job, groups, killsBefore: groups.map((g) => known(g.oomKills)) };
}

/**
 * OOM kills in the job during the run. cgroup v1 counts a kill only in the victim's own group (task_0),
 * v2 in every ancestor too: the largest difference over the groups is the number of kills.
 */
function killsDuring(watch: SlurmWatch): number | null {
  let kills: number | null = null;
  watch.groups.forEach((group, i) => {
    const before = watch.killsBefore[i];
    const after = known(reread(group).oomKills);
    if (before !== undefined && after !== undefined) kills = Math.max(kills ?? 0, after - before);
  });
  return kills;
}

/** After the run: what the job's cgroup saw meanwhile. */
export function slurmOutcome(watch: SlurmWatch): SlurmStepOutcome {
  const { job } = watch;
  const jobGroup = job.cgroup && reread(job.cgroup.job);
  const stepGroup = job.cgroup?.step ? reread(job.cgroup.step) : null;
  const limit = jobGroup ? known(jobGroup.limit) : undefined;
  const request = slurmRequest(job);
  const peakGroup = stepGroup ?? jobGroup;
  const peak = peakGroup ? known(peakGroup.peak) : undefined;
  return {
    jobId: job.jobId,
    stepId: job.stepId,
    request,
    ...(request === null && isUnknown(job.scontrol) ? { requestUnknown: job.scontrol.slice('unknown: '.length) } : {}),
    cgroup: jobGroup?.path ?? null,
    stepCgroup: stepGroup?.path ?? null,
    limit: typeof limit === 'number' ? limit : (slurmNodeMemory(job) ?? null),
    peak: peak ?? null,
    oomKills: killsDuring(watch),
  };
}
