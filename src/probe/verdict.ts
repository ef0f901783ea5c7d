// The verdict: every limit that caps this process's memory as one comparable "constraint" (limit, used,
// headroom), the one with the least headroom binds first, and whether a CLIP model fits under them.
import { describeLayout, WeightFormat } from '../clip/config';
import { formatBytes } from '../core/units';
import type { CgroupReport, MemoryCgroup } from './cgroup';
import { Field, known } from '../core/field';
import type { AllocatorProbe, ResourceLimits } from './native';
import type { HostMemory, ProcessStatus } from './proc';
import { SlurmJob, slurmNodeMemory, slurmRequest } from './slurm';

/** What a limit counts: every mapping, private writable memory, or pages actually resident. */
export type Counts = 'address space' | 'private writable memory' | 'resident memory';

export interface Constraint {
  /** What runs out, e.g. "address space", "cgroup memory". */
  name: string;
  /** The setting that sets the limit, e.g. "RLIMIT_AS", "memory.limit_in_bytes of /slurm/job_7". */
  source: string;
  counts: Counts;
  limit: number;
  used: number;
  /** limit - used, never below 0. */
  headroom: number;
}

export interface ProbeFacts {
  limits: ResourceLimits;
  status: ProcessStatus;
  /** Lines of /proc/self/maps. */
  mappings: Field<number>;
  host: HostMemory;
  cgroups: CgroupReport;
  slurm: SlurmJob | null;
  allocator: AllocatorProbe;
}

function constraint(name: string, source: string, counts: Counts, limit: number, used: number): Constraint {
  return { name, source, counts, limit, used, headroom: Math.max(0, limit - used) };
}

function cgroupConstraint(group: MemoryCgroup): Constraint | undefined {
  const usage = known(group.usage);
  if (typeof group.limit !== 'number' || usage === undefined) return undefined;
  const file = group.version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
  return constraint(
    'cgroup memory',
    `cgroup v${group.version} ${file} of ${group.path}`,
    'resident memory',
    group.limit,
    usage,
  );
}

/** Every limit that applies now, least headroom first. */
export function constraints(facts: ProbeFacts): Constraint[] {
  const { limits, status, host, cgroups, slurm } = facts;
  const list: Constraint[] = [];
  const vmSize = known(status.vmSize);
  if (typeof limits.as.soft === 'number' && vmSize !== undefined) {
    list.push(constraint('address space', 'RLIMIT_AS', 'address space', limits.as.soft, vmSize));
  }
  const vmData = known(status.vmData);
  if (typeof limits.data.soft === 'number' && vmData !== undefined) {
    list.push(constraint('data segment', 'RLIMIT_DATA', 'private writable memory', limits.data.soft, vmData));
  }
  const commitLimit = known(host.commitLimit);
  const committed = known(host.committedAs);
  if (known(host.overcommitMemory) === 2 && commitLimit !== undefined && committed !== undefined) {
    list.push(
      constraint(
        'commit limit',
        'CommitLimit (vm.overcommit_memory = 2)',
        'private writable memory',
        commitLimit,
        committed,
      ),
    );
  }
  for (const hierarchy of cgroups.hierarchies) {
    // Each group in the chain caps the process; the one with the least headroom is the one to show.
    const groups = hierarchy.groups.map(cgroupConstraint).filter((c): c is Constraint => c !== undefined);
    groups.sort((a, b) => a.headroom - b.headroom);
    if (groups[0]) list.push(groups[0]);
  }
  const slurmMemory = slurm ? slurmNodeMemory(slurm) : undefined;
  const rss = known(status.vmRss);
  if (slurmMemory !== undefined && rss !== undefined) {
    const source =
      typeof slurm!.memPerNode === 'number'
        ? 'SLURM_MEM_PER_NODE'
        : typeof slurm!.memPerCpu === 'number' && typeof slurm!.cpusOnNode === 'number'
          ? 'SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE'
          : `${slurmRequest(slurm!)} (scontrol show job ${slurm!.jobId})`;
    // Slurm enforces the request through the job's cgroup; without it, this process's RSS is what we know.
    list.push(constraint('Slurm job memory', source, 'resident memory', slurmMemory, rss));
  }
  const memTotal = known(host.memTotal);
  const memAvailable = known(host.memAvailable);
  if (memTotal !== undefined && memAvailable !== undefined) {
    // Host-wide: used = MemTotal - MemAvailable, headroom = MemAvailable.
    list.push(constraint('physical memory', 'MemTotal', 'resident memory', memTotal, memTotal - memAvailable));
  }
  return list.sort((a, b) => a.headroom - b.headroom);
}

export interface Verdict {
  /** The limit with the least headroom: the first that an allocation will hit. */
  bindsFirst: Constraint | null;
  constraints: Constraint[];
  /** The largest anonymous read-write block that can be mapped now. */
  largestMappableBlock: number;
  /** One line, e.g. "address space: 3.91 GiB of RLIMIT_AS 4.00 GiB used, 92 MiB (96468992 bytes) left; ...". */
  summary: string;
  /** What else to know: a soft limit that may be raised, a map count close to vm.max_map_count. */
  notes: string[];
}

export function describeConstraint(c: Constraint): string {
  return `${c.name}: ${formatBytes(c.used)} of ${c.source} ${formatBytes(c.limit)} used, ${formatBytes(c.headroom)} (${c.headroom} bytes) left`;
}

export function verdict(facts: ProbeFacts): Verdict {
  const list = constraints(facts);
  const bindsFirst = list[0] ?? null;
  const largestMappableBlock = facts.allocator.readWriteMapping.largest;
  const block = `largest mappable block ${formatBytes(largestMappableBlock)} (${largestMappableBlock} bytes)`;
  const summary = bindsFirst
    ? `${describeConstraint(bindsFirst)}; ${block}`
    : `no memory limit could be read; ${block}`;
  return { bindsFirst, constraints: list, largestMappableBlock, summary, notes: verdictNotes(facts, bindsFirst) };
}

const raisableLimits: Record<string, { limit: 'as' | 'data'; ulimit: string }> = {
  RLIMIT_AS: { limit: 'as', ulimit: '-v' },
  RLIMIT_DATA: { limit: 'data', ulimit: '-d' },
};

function verdictNotes(facts: ProbeFacts, bindsFirst: Constraint | null): string[] {
  const notes: string[] = [];
  const raisable = bindsFirst ? raisableLimits[bindsFirst.source] : undefined;
  if (raisable) {
    const { soft, hard } = facts.limits[raisable.limit];
    if (soft !== hard) {
      const to = hard === 'unlimited' ? 'unlimited' : String(Math.floor(hard / 1024));
      notes.push(
        `the ${bindsFirst!.source} soft limit can be raised by this user up to the hard limit ${hard === 'unlimited' ? 'unlimited' : formatBytes(hard)}: ulimit -S ${raisable.ulimit} ${to}`,
      );
    } else {
      notes.push(
        `${bindsFirst!.source} soft = hard: only the job's launcher (scheduler, container, shell profile) can raise it`,
      );
    }
  }
  const mappings = known(facts.mappings);
  const maxMapCount = known(facts.host.maxMapCount);
  if (mappings !== undefined && maxMapCount !== undefined && mappings >= 0.9 * maxMapCount) {
    notes.push(
      `${mappings} mappings of vm.max_map_count ${maxMapCount}: mmap fails with ENOMEM at the limit whatever the sizes`,
    );
  }
  return notes;
}

export interface FitCheck {
  fits: boolean;
  /** Bytes this way of loading needs. */
  needs: number;
  /** Bytes available to it now. */
  available: number;
  /** What sets `available`. */
  limitedBy: string;
  /** One line for people. */
  explanation: string;
}

export interface ModelFit {
  model: string;
  weights: WeightFormat;
  /** Bytes of all tensors (the safetensors payload). */
  weightBytes: number;
  largestTensor: { name: string; bytes: number };
  /** Mapping the checkpoint read-only: one contiguous range of address space; pages come from the page cache. */
  viaMmap: FitCheck;
  /** Reading the checkpoint into anonymous memory: every limit applies, each tensor must fit in one malloc block. */
  viaCopy: FitCheck;
  /** One AdamW training step: fp32 weights, gradients and two moments (~4x the fp32 weights), activations excluded. */
  training: FitCheck;
}

/** The AdamW state per fp32 weight: the weight, its gradient, exp_avg and exp_avg_sq. */
export const ADAMW_COPIES = 4;

function check(needs: number, available: number, limitedBy: string, what: string): FitCheck {
  const fits = needs <= available;
  const explanation = `${what} ${fits ? 'fits' : 'does NOT fit'}: needs ${formatBytes(needs)}, ${formatBytes(available)} available (${limitedBy})`;
  return { fits, needs, available, limitedBy, explanation };
}

/** Whether `model` (a preset name or a model directory) fits now, loaded each way. */
export function modelFit(model: string, weights: WeightFormat, facts: ProbeFacts, list: Constraint[]): ModelFit {
  const layout = describeLayout(model, weights);
  const weightBytes = layout.totals.totalBytes;
  const largest = layout.tensors.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  const fp32Bytes = weights === 'fp32' ? weightBytes : describeLayout(layout.config, 'fp32').totals.totalBytes;

  const reservation = facts.allocator.reservation.largest;
  const addressLimit = list.find((c) => c.counts === 'address space');
  const mmapSource = addressLimit
    ? `largest PROT_NONE reservation under ${addressLimit.source}`
    : 'largest free address range';
  const viaMmap = check(weightBytes, reservation, mmapSource, 'via mmap');

  // Anonymous memory: the least headroom of all limits, and never more than the address space that
  // could actually be reserved (the probe's measure, which also sees what the limits cannot).
  const tightest = list[0];
  const reservable = facts.allocator.reservable.total;
  const [anonymous, anonymousSource] =
    tightest && tightest.headroom <= reservable
      ? [tightest.headroom, `${tightest.name}, ${tightest.source}`]
      : [reservable, 'reservable address space'];
  let viaCopy = check(weightBytes, anonymous, anonymousSource, 'via copy');
  const mallocLargest = facts.allocator.malloc.largest;
  if (viaCopy.fits && largest.bytes > mallocLargest) {
    viaCopy = check(largest.bytes, mallocLargest, `largest malloc block now, for ${largest.name}`, 'via copy');
  }
  const training = check(
    ADAMW_COPIES * fp32Bytes,
    anonymous,
    anonymousSource,
    'training (AdamW, 4x fp32 weights, activations excluded)',
  );
  return {
    model: layout.config.name,
    weights,
    weightBytes,
    largestTensor: { name: largest.name, bytes: largest.bytes },
    viaMmap,
    viaCopy,
    training,
  };
}
