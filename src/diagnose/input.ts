// The one path from a traced run to the diagnosis' input: `trace`, `run`, `estimate --calibrate` and
// `fit --verify` all build it here, so the same child is diagnosed the same way whichever command ran it.
import type { Limits } from '../core/limits';
import type { TraceRun } from '../track/launcher';
import type { AllocationRecord } from '../track/record';
import { phaseLabel } from '../track/phases';
import type { DiagnosisInput } from './index';

/**
 * The limits a record's process ran under: RLIMIT_AS and RLIMIT_DATA at its latest failure when it had one
 * (a program may lower its own after it starts, Python's resource.setrlimit), else at its start (`at:
 * 'start'` for the start alone; absent: unlimited), and `mem`, the cgroup clip-mem made for the run.
 */
export function recordLimits(
  record: AllocationRecord,
  mem: number | undefined,
  at: 'failure' | 'start' = 'failure',
): Limits {
  const failed = at === 'failure' && record.failures.length > 0;
  const as = failed ? record.failureRlimitAs : record.rlimitAs;
  const data = failed ? record.failureRlimitData : record.rlimitData;
  return { ...(as >= 0 ? { as } : {}), ...(data >= 0 ? { data } : {}), ...(mem !== undefined ? { mem } : {}) };
}

/** Limits in force: the record's (clip-mem's --limit-as and --limit-data are in it), and the cgroup clip-mem made. */
export function effectiveLimits(run: TraceRun): Limits {
  if (!run.record) return { ...run.limits };
  return recordLimits(run.record, run.limits.mem);
}

/**
 * What the diagnosis reads of one traced run. `reportedError` is what the program said of its failure
 * somewhere other than its output (a scenario child's report): runtimes name some causes only in words.
 * `heldBy`: the live-heap profile's top call sites, symbolized by the report (report/heap-profile.ts), since
 * naming a frame takes addr2line.
 */
export function diagnosisInput(
  run: TraceRun,
  reportedError?: string | null,
  heldBy?: DiagnosisInput['heldBy'],
): DiagnosisInput {
  const record = run.record;
  const lastSample = record?.timeline[record.timeline.length - 1];
  const output = `${run.stderrTail}\n${run.stdoutTail}`;
  return {
    exit: run.exit,
    limits: effectiveLimits(run),
    failures: record?.failures ?? [],
    cgroup: run.cgroup && {
      path: run.cgroup.path,
      limit: run.cgroup.limit,
      oomKills: run.cgroup.oomKills,
      peak: run.cgroup.peak,
    },
    hostOomKills: run.hostOomKills,
    tasks: run.tasks,
    userspaceOomKillers: run.userspaceOomKillers,
    memoryCgroups: run.memoryCgroups,
    sharedMemory: run.sharedMemory,
    slurm: run.slurm,
    output: reportedError ? `${output}\n${reportedError}` : output,
    filePeak: record?.counters.filePeak,
    last: record
      ? {
          phase: phaseLabel(record, record.currentPhase),
          heap: record.counters.heapCurrent,
          // Read from outside every 100 ms: pages touched without an allocation call show here first.
          rss: run.lastSeen?.rss ?? lastSample?.rss,
          anon: record.counters.anonMapped,
          file: record.counters.fileMapped,
        }
      : undefined,
    notTracked: run.notTracked,
    imageBytes: run.program.imageBytes,
    lostTrack: run.lostTrack,
    timeoutMs: run.timedOut ? run.timeoutMs : undefined,
    stoppedBy: run.stoppedBy,
    oomKilled: run.oomKilled.map((v) => ({
      pid: v.pid,
      name: v.exe ? `${v.comm}, ${v.exe}` : v.comm,
      main: v.main,
      rss: v.rss,
      cgroup: v.cgroup,
      cgroupLimit: v.cgroupLimit,
    })),
    kernelLog: run.kernelLog,
    endedUnclean: run.endedUnclean,
    untrackedStarted: run.watched
      .filter((p) => p.pid !== run.pid && !run.descendants.some((r) => r.pid === p.pid))
      .map((p) => ({ pid: p.pid, exe: p.exe || p.command.split(' ')[0] || '?' })),
    descendantFailures: run.descendants
      .filter((r) => r.failures.some((f) => !f.injected))
      .map((r) => ({
        pid: r.pid,
        exe: r.exe,
        exitCode: r.exitCode,
        // Its own record's limits: lowered inside the job (a shell's `ulimit -v`), they show only there.
        limits: recordLimits(r, run.limits.mem),
        failures: r.failures,
      })),
    heldBy,
  };
}
