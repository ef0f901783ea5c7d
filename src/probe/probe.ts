// `native-probe` as a library call: every limit that binds this process, what can be allocated now, and
// the verdict. Cheap (a few ms, no pages touched) so it can run at the start of any job.
import type { WeightFormat } from '../clip/config';
import { nativeDescription, toolVersion } from '../core/native';
import { CgroupReport, CgroupSources, TaskLimit, readCgroups, readTaskCgroup } from './cgroup';
import { unknownsAsNull, type Field } from '../core/field';
import { probeGpu } from './gpu';
import { AllocatorProbe, GpuReport, Mallinfo, ResourceLimits, probeAddon } from './native';
import {
  HostMemory,
  ProcessStatus,
  SharedMemoryUse,
  countMappings,
  readHostMemory,
  readProcessStatus,
  readSharedMemory,
} from './proc';
import { SlurmJob, probeSlurmJob } from './slurm';
import { ModelFit, ProbeFacts, Verdict, modelFit, verdict } from './verdict';

/** Bumped whenever a field of the --json output changes meaning or disappears (schema/native-probe.schema.json). */
export const NATIVE_PROBE_SCHEMA = 'clip-mem-native-probe/2';

export interface ProcessMemory extends ProcessStatus {
  /** Lines of /proc/self/maps: compare with host.maxMapCount. */
  mappings: Field<number>;
  mallinfo: Mallinfo;
  /** MALLOC_ARENA_MAX as set in the environment, or null. */
  mallocArenaMax: string | null;
  /** GLIBC_TUNABLES (may set glibc.malloc.arena_max and friends), or null. */
  glibcTunables: string | null;
}

export interface NativeProbeReport {
  schema: typeof NATIVE_PROBE_SCHEMA;
  /** native: which binaries ran the probe (a build from source or a prebuild, src/core/native.ts). */
  tool: { name: string; version: string; native: string };
  pid: number;
  time: string;
  limits: ResourceLimits;
  process: ProcessMemory;
  host: HostMemory;
  cgroups: CgroupReport;
  /** /dev/shm when it is a tmpfs (a container's is 64 MiB unless --shm-size): where DataLoader batches pass. */
  sharedMemory: SharedMemoryUse | null;
  /** The pids cgroup: the most tasks it and its ancestors allow, where set, and the forks or threads refused so far. */
  tasks: TaskLimit | null;
  slurm: SlurmJob | null;
  gpu: GpuReport;
  allocator: AllocatorProbe;
  verdict: Verdict;
  models: ModelFit[];
}

export interface ProbeOptions {
  /** CLIP presets or model directories to check against the limits. */
  models?: string[];
  weights?: WeightFormat;
  env?: NodeJS.ProcessEnv;
  /** Where the cgroup files are (tests point this at sample trees). */
  cgroupSources?: CgroupSources;
}

export function runProbe(options: ProbeOptions = {}): NativeProbeReport {
  const env = options.env ?? process.env;
  const addon = probeAddon();
  // The process's own figures first, before the probe's own work can move them.
  const status = readProcessStatus();
  const mappings = countMappings();
  const mallinfo = addon.readMallinfo();
  const limits = addon.readResourceLimits();
  const host = readHostMemory();
  const cgroups = readCgroups(options.cgroupSources);
  const slurm = probeSlurmJob(env, cgroups);
  const allocator = addon.probeAllocator();
  // After the allocator probe: a CUDA context reserves address space for good.
  const gpu = probeGpu(env);
  const facts: ProbeFacts = { limits, status, mappings, host, cgroups, slurm, allocator };
  const result = verdict(facts);
  const models = (options.models ?? []).map((model) =>
    modelFit(model, options.weights ?? 'fp32', facts, result.constraints),
  );
  return {
    schema: NATIVE_PROBE_SCHEMA,
    tool: { name: 'clip-mem', version: toolVersion(), native: nativeDescription() },
    pid: process.pid,
    time: new Date().toISOString(),
    limits,
    process: {
      ...status,
      mappings,
      mallinfo,
      mallocArenaMax: env.MALLOC_ARENA_MAX ?? null,
      glibcTunables: env.GLIBC_TUNABLES ?? null,
    },
    host,
    cgroups,
    sharedMemory: readSharedMemory(),
    tasks: taskLimit(options.cgroupSources),
    slurm,
    gpu,
    allocator,
    verdict: result,
    models,
  };
}

/** The pids cgroup's limit and the refusals its own group counted since it began (pids.events). */
function taskLimit(sources?: CgroupSources): NativeProbeReport['tasks'] {
  const group = readTaskCgroup(sources);
  if (!group) return null;
  const refused = Math.max(0, ...group.refusals.values());
  return { cgroup: group.path, limit: group.limit, limitedAt: group.limitedAt, refused };
}

/** The report as `native-probe --json` writes it: unreadable values null, with why in `unknowns`. */
export function probeJson(report: NativeProbeReport): Record<string, unknown> {
  const { json, unknowns } = unknownsAsNull(report);
  return { ...(json as Record<string, unknown>), unknowns };
}
