// How many of `clip-mem run`'s scenarios run at once (--jobs): its default, and when more than one must not.
import * as os from 'node:os';
import { known } from '../core/field';
import type { Limits } from '../core/limits';
import { formatBytes } from '../core/units';
import { inheritedMemoryLimit } from '../probe/cgroup';
import { readHostMemory } from '../probe/proc';

/** Host memory available before a second scenario runs beside the first (vit-b-32's two largest: ~3 GiB). */
const MEMORY_FOR_TWO = 8 * 1024 ** 3;

/**
 * --jobs when not given: two scenarios at once on a machine with 2 or more cores and 8 GiB available,
 * else one. One under a cgroup limit, ours or the one this runs in (`jobsRefusal`).
 */
export function defaultJobs(limits: Limits): number {
  if (jobsRefusal(limits) !== null) return 1;
  const available = known(readHostMemory().memAvailable);
  return os.cpus().length >= 2 && available !== undefined && available >= MEMORY_FOR_TWO ? 2 : 1;
}

/**
 * Why scenarios may not run at once under these limits, or null. Under --limit-mem the checkpoint's page
 * cache is charged to whichever child reads it first, and each scenario's analysis counts what was cached
 * before it started; inside a memory-limited cgroup (a Slurm job, a container) the children's memory adds
 * up against the one limit, so one could be killed for the other's memory.
 */
export function jobsRefusal(limits: Limits, inherited = inheritedMemoryLimit()): string | null {
  if (limits.mem !== undefined)
    return "under --limit-mem the scenarios run one at a time (each one's cgroup is charged for the checkpoint pages it reads first)";
  if (inherited !== null)
    return `this runs in a cgroup limited to ${formatBytes(inherited)} (a Slurm job's --mem, a container's limit): scenarios at once would add up against it, so they run one at a time`;
  return null;
}
