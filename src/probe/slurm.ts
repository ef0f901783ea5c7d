// Slurm job memory, from the variables Slurm sets in a job's environment (values in MiB, "M" in Slurm).
import { Field, unknown } from '../core/field';

export interface SlurmJob {
  jobId: string;
  /** --mem: memory per node, in bytes. Null when not set. */
  memPerNode: Field<number> | null;
  /** --mem-per-cpu, in bytes. */
  memPerCpu: Field<number> | null;
  /** --mem-per-gpu, in bytes. */
  memPerGpu: Field<number> | null;
  /** SLURM_CPUS_ON_NODE, to turn memPerCpu into this node's total. */
  cpusOnNode: Field<number> | null;
}

function mebibytes(env: NodeJS.ProcessEnv, name: string): Field<number> | null {
  const value = env[name];
  if (value === undefined || value === '') return null;
  // Slurm writes plain MiB counts; some sites' wrappers append the unit.
  const match = /^(\d+)\s*M?$/i.exec(value.trim());
  return match ? Number(match[1]) * 2 ** 20 : unknown(`${name}="${value}" is not a count of MiB`);
}

/** The job's memory request, or null outside a Slurm job (no SLURM_JOB_ID). */
export function readSlurmJob(env: NodeJS.ProcessEnv = process.env): SlurmJob | null {
  const jobId = env.SLURM_JOB_ID;
  if (!jobId) return null;
  const cpus = env.SLURM_CPUS_ON_NODE;
  return {
    jobId,
    memPerNode: mebibytes(env, 'SLURM_MEM_PER_NODE'),
    memPerCpu: mebibytes(env, 'SLURM_MEM_PER_CPU'),
    memPerGpu: mebibytes(env, 'SLURM_MEM_PER_GPU'),
    cpusOnNode:
      cpus === undefined
        ? null
        : /^\d+$/.test(cpus)
          ? Number(cpus)
          : unknown(`SLURM_CPUS_ON_NODE="${cpus}" is not a count`),
  };
}

/** The job's memory on this node in bytes: --mem, else --mem-per-cpu x CPUs on the node. */
export function slurmNodeMemory(job: SlurmJob): number | undefined {
  if (typeof job.memPerNode === 'number') return job.memPerNode;
  if (typeof job.memPerCpu === 'number' && typeof job.cpusOnNode === 'number') return job.memPerCpu * job.cpusOnNode;
  return undefined;
}
