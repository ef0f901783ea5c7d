// A traced run as scripts read it (`trace --json`) and as people read it (the terminal summary).
// The JSON names exit / failures / peaks / diagnosis are a contract: keep them.
import * as os from 'node:os';
import * as path from 'node:path';
import { tensorsOfSize, type ClipConfig, type TensorOfSize } from '../clip/config';
import { cudaErrorName } from '../core/cuda-error';
import { errnoName } from '../core/errno';
import {
  diagnose,
  explainFailure,
  groupThatCountedKills,
  slurmJobName,
  startedProcessRefusal,
  type Diagnosis,
  type StartedProcessRefusal,
} from '../diagnose';
import { diagnosisInput, effectiveLimits, recordLimits } from '../diagnose/input';
import { phaseLabel } from '../track/phases';
import { formatBytes } from '../core/units';
import { limitTexts, type Limits } from '../core/limits';
import type { LimitedGroupKills } from '../probe/cgroup';
import type { TraceRun } from '../track/launcher';
import { type PythonStack, type RecordDevice, type RecordFailure, type RecordGpuFailure } from '../track/record';
import type { SlurmStepOutcome } from '../track/slurm';
import { arrayBufferFailureStack, type JsFrame } from '../track/node-stack';
import { gpuFixes, type GpuFix } from './gpu-fixes';
import { formatHeapProfile, heldBy, ownHeldBy, traceHeapProfile, type TraceHeapProfile } from './heap-profile';
import { SymbolizedFrame, elideTemplates, formatFrame, symbolize } from '../track/symbolize';
import { highest, processRows, treeFigures, type ProcessRow, type TreeFigures } from './process-rows';

export interface TraceFailure {
  fn: string;
  /** Bytes exactly as requested (calloc: nmemb*size). */
  size: number;
  errno: number;
  errnoName: string;
  phase: string;
  /** Innermost first: "name (file:line)", "name (module+0xoffset)" or "module+0xoffset"; C++ names whole. */
  stack: string[];
  /** The failing thread's Python stack (innermost first) when the process is CPython 3.8 to 3.13, else null. */
  python: PythonStack | null;
  /** In a Node process: the JavaScript frames (see track/node-stack.ts) and where they come from; else null. */
  javascript: JavaScriptStack | null;
  sizeOverflow: boolean;
  injected: boolean;
  /** The limit this failure hit, with the arithmetic; absent if none explains it. */
  limit?: Diagnosis;
  /** Process state at the failure (bytes; null where /proc could not be read). */
  vmSize: number | null;
  vmData: number | null;
  rss: number | null;
  /** Milliseconds since the process's record started, to place it on the timeline. */
  tMs: number;
  tid: number;
  /** With `trace --model`: the model's tensors of exactly this many bytes in fp32, fp16/bf16 or int8. */
  tensors?: TensorOfSize[];
  /** Everything the record holds about it (mmap prot/flags/fd path/offset, alignment, ...). */
  detail: Omit<RecordFailure, 'stack' | 'python'>;
  /** A GPU allocation's status by name and the device's state at the failure (errno is then 0); else null. */
  gpu: (RecordGpuFailure & { statusName: string }) | null;
}

/** Bumped when a field of `trace --json` changes meaning or disappears (schema/trace.schema.json). */
export const TRACE_SCHEMA = 'clip-mem-trace/2';

export interface TraceReport {
  schema: typeof TRACE_SCHEMA;
  command: string[];
  pid: number;
  limits: Limits;
  exit: { code: number | null; signal: string | null };
  timedOut: boolean;
  /** The timeout it ran under (ms), when one was set. */
  timeoutMs: number | null;
  /** The signal clip-mem was stopped by (it then killed the process group), when it was. */
  stoppedBy: string | null;
  /** How the command's own process ended, in words: the headline ("exited with code 3", "timed out after 10 s, killed by clip-mem"). */
  ending: string;
  durationMs: number;
  tracked: boolean;
  notTracked?: string;
  lostTrack?: string;
  failuresTotal: number;
  failures: TraceFailure[];
  /**
   * The failures with identical stacks (function, Python and native frames) counted once, in the order
   * each stack first failed: indices into `failures` of the first and of the largest request (the first
   * one on a tie).
   */
  failureGroups: FailureGroup[];
  /** Bytes; null where unknown (no record). */
  peaks: {
    heap: number | null;
    anon: number | null;
    file: number | null;
    /** Mapped PROT_NONE (reserved address space; V8 and wasm reserve this way and commit with mprotect, which moves bytes to anon). */
    reserved: number | null;
    rss: number | null;
    vmSize: number | null;
  };
  /** Counters at the end (or at the kill); rss as last read from outside, every 100 ms. */
  last: { heap: number; anon: number; file: number; reserved: number; phase: string; rss: number | null } | null;
  calls: Record<string, number> | null;
  phases: { label: string; heap: number; anon: number; file: number }[];
  /** Samples over time (ms since the record started; bytes): on activity every 10 ms or 64 MiB of change. */
  /** gpu: bytes this process held on its GPUs (CUDA allocations the tracker counted). */
  timeline: {
    tMs: number;
    heap: number;
    anon: number;
    file: number;
    rss: number;
    vmSize: number;
    gpu: number;
    phase: string;
  }[];
  cgroup?: TraceRun['cgroup'];
  /** The Slurm job the run was inside: its request, its memory cgroup, the OOM kills it counted; null outside Slurm. */
  slurm: SlurmStepOutcome | null;
  hostOomKills: number | null;
  /** The limited memory cgroups clip-mem ran in; the pids cgroup and its refusals; /dev/shm's size and use. */
  memoryCgroups: TraceRun['memoryCgroups'];
  tasks: TraceRun['tasks'];
  sharedMemory: TraceRun['sharedMemory'];
  /** Processes the kernel log says the OOM killer killed during the run (its own process or others). */
  oomKilled: TraceRun['oomKilled'];
  /** Why the kernel log could not be read, when it could not (then who was OOM-killed is not known). */
  kernelLog?: string;
  /** Every process of the run, the command's own first: parent, command line, times, ending, peaks, failures. */
  processes: ProcessRow[];
  /** The tree's combined figures: summed RSS over time and its peak, next to the largest single process. */
  tree: TreeFigures;
  /** Processes of the run still alive when its own process ended (daemons, background jobs). */
  outlived: TraceRun['outlived'];
  /** Set when the record directory could not be removed. */
  recordDirLeft?: string;
  /** Who held the live memory at the failure, at the peak and at the end (sampled), or null without a record. */
  heapProfile: TraceHeapProfile | null;
  diagnosis: Diagnosis;
  /** What the run needed at least of the limit that bound it, and the command that proves the real minimum. */
  fix: TraceFix | null;
  /** GPU memory the process allocated (per CUDA device) and page-locked host memory; null without a record. */
  gpu: { devices: RecordDevice[]; pinnedPeak: number; untracked: number } | null;
  /** For gpu-memory: what would make room on the device (smaller batch, 16-bit weights, allocator settings, other processes). */
  gpuFixes: GpuFix[];
}

export interface FailureGroup {
  fn: string;
  count: number;
  first: number;
  largest: number;
}

export interface JavaScriptStack {
  /** Innermost first; empty when none could be had (`note` says why). */
  frames: JsFrame[];
  /** Where the frames come from, or why there are none. */
  note: string;
}

const arrayBufferFrame = 'BackingStore::Allocate';

/**
 * The JavaScript side of each failure in Node's main process. Node prints the JS stack of an ArrayBuffer
 * whose memory could not be had, when the RangeError is not caught; no other allocation has one anywhere
 * to read. An uncaught error ends the program, so the stack belongs to its last ArrayBuffer request: the
 * trailing failures of one size (V8 retries a request after a garbage collection).
 */
function javaScriptStacks(
  failures: { stack: string[]; size: number; tid: number }[],
  pid: number,
  printed: JsFrame[] | null,
): JavaScriptStack[] {
  const buffers = failures.flatMap((f, i) => (f.stack.some((frame) => frame.includes(arrayBufferFrame)) ? [i] : []));
  const lastRequest = new Set<number>();
  for (let k = buffers.length - 1; k >= 0 && failures[buffers[k]!]!.size === failures[buffers.at(-1)!]!.size; k--)
    lastRequest.add(buffers[k]!);
  return failures.map((f, i) => {
    if (!buffers.includes(i))
      return {
        frames: [],
        note: "not available: not an ArrayBuffer's memory (V8's own, or a native module's), and the tracker reads native frames only",
      };
    if (f.tid !== pid)
      return { frames: [], note: `not available: the failure was on thread ${f.tid}, not Node's main thread` };
    if (!printed || !lastRequest.has(i))
      return {
        frames: [],
        note: 'not available: Node printed no RangeError stack for it (the program caught the error)',
      };
    return {
      frames: printed,
      note: 'from the RangeError Node printed on stderr for this failure, not read at the allocation',
    };
  });
}

/** "fn (file:line:column)", as V8 writes a frame. */
export function javaScriptFrame(frame: JsFrame): string {
  const place = `${frame.file}:${frame.line}:${frame.column}`;
  return frame.function ? `${frame.function} (${place})` : place;
}

/** A failure's Python frames, innermost first: "function (file:line) [Python]", and where some were left out. */
export function pythonFrames(f: TraceFailure): string[] {
  const frames = (f.python?.frames ?? []).map((p) => `${p.function} (${p.file}:${p.line < 0 ? '?' : p.line}) [Python]`);
  const { omitted = 0, omittedAfter = null } = f.python ?? {};
  if (omittedAfter !== null) frames.splice(omittedAfter, 0, `... ${omitted} Python frame(s) left out`);
  return frames;
}

/** Why a failure's Python stack is missing or cut short, in words; undefined when it is whole or not Python. */
export function pythonGap(f: TraceFailure): string | undefined {
  const python = f.python;
  if (!python) return undefined;
  if (python.status === 'no-thread') return `Python ${python.version}: this thread has no Python thread state`;
  if (python.status === 'unreadable')
    return `Python ${python.version}: the interpreter's memory could not be read past ${python.frames.length} frame(s)`;
  if (!python.frames.length) return `Python ${python.version}: no Python code running on this thread`;
  return undefined;
}

/** Failures with the same function and stack, counted once (see TraceReport.failureGroups). */
export function groupFailures(failures: readonly TraceFailure[]): FailureGroup[] {
  const groups = new Map<string, FailureGroup>();
  failures.forEach((f, i) => {
    const key = [f.fn, ...pythonFrames(f), ...f.stack].join('\n');
    const group = groups.get(key);
    if (!group) groups.set(key, { fn: f.fn, count: 1, first: i, largest: i });
    else {
      group.count++;
      if (f.size > failures[group.largest]!.size) group.largest = i;
    }
  });
  return [...groups.values()];
}

export interface TraceFix {
  /** Bytes the limit must allow at least (what was in use + what was refused), or null when not known. */
  needAtLeast: number | null;
  /** The sentence with the arithmetic. */
  text: string;
  /**
   * `clip-mem fit --for ... -- <the command>`: bisects the limit to the smallest that passes. Null when a
   * limit from outside cannot help: the command lowers it itself (a `ulimit -v` in a job script).
   */
  command: string | null;
}

/** A command line as a shell takes it back: arguments with spaces or shell characters single-quoted. */
function shellWords(words: readonly string[]): string {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** What traceFix reads of a traced run besides its diagnosis. */
export interface FixFacts {
  failures: readonly Pick<TraceFailure, 'fn' | 'size' | 'injected' | 'limit' | 'vmSize' | 'vmData'>[];
  /** The memory cgroup clip-mem made for the run (--limit-mem). */
  cgroup?: TraceRun['cgroup'];
  slurm?: SlurmStepOutcome | null;
  peaks?: TraceReport['peaks'] | null;
  /** The refusal in a process the command started, when the diagnosis came from it. */
  started?: StartedProcessRefusal;
  /** The limits the command itself ran under, at its failure; and at its start. */
  commandLimits?: Limits;
  startLimits?: Limits;
  /** The processes the kernel log says its OOM killer killed, and the limited memory cgroups clip-mem ran in. */
  oomKilled?: TraceRun['oomKilled'];
  memoryCgroups?: TraceRun['memoryCgroups'];
  /** /dev/shm's size and use during the run. */
  sharedMemory?: TraceRun['sharedMemory'];
}

/**
 * The fix for the limit that bound the run: the least it needed (the failed request on top of what the
 * process held) and the `fit` command that finds the real minimum by running it. Only for a limit clip-mem
 * can size: address space, data segment, a cgroup (its own, a Slurm job's, or one someone else made that
 * the kernel log names); and for a fork the commit limit refused, how to start workers without committing
 * a copy of a large parent.
 */
export function traceFix(command: readonly string[], diagnosis: Diagnosis, facts: FixFacts): TraceFix | null {
  const {
    failures,
    cgroup,
    slurm = null,
    peaks = null,
    started,
    commandLimits = {},
    startLimits = commandLimits,
  } = facts;
  const fit = (target: string) => `clip-mem fit --for ${target} -- ${shellWords(command)}`;
  if (diagnosis.cause === 'address-space' || diagnosis.cause === 'data-limit') {
    const as = diagnosis.cause === 'address-space';
    const kind = as ? 'as' : 'data';
    const own = failures.find((f) => !f.injected && f.limit?.cause === diagnosis.cause);
    const inStarted = !own && started?.explained.cause === diagnosis.cause ? started : undefined;
    const failure = own ?? inStarted?.failure;
    const reading = failure ? (as ? failure.vmSize : failure.vmData) : undefined;
    const held = reading !== undefined && reading !== null && reading >= 0 ? reading : null;
    const ulimit = as ? '`ulimit -v`' : '`ulimit -d`';
    // What it held + what it was refused, and the least the limit must allow for it.
    const need = failure && held !== null ? held + failure.size : null;
    const arithmetic =
      need !== null
        ? `${as ? 'VmSize' : 'VmData'} ${formatBytes(held!)} + ${formatBytes(failure!.size)} requested`
        : '';
    const atLeast = need !== null ? `at least ${Math.ceil(need / 1024)} KiB` : '';
    // The refusing process ran under a lower limit than the command started with: the command lowered it
    // (a job script's `ulimit -v` for a process it starts, or its own setrlimit before the failure).
    const lowered = inStarted ? inStarted.process.limits[kind] : commandLimits[kind];
    const outside = startLimits[kind];
    if (failure && lowered !== undefined && (outside === undefined || lowered < outside)) {
      const who = inStarted ? `pid ${inStarted.process.pid} (${inStarted.process.exe})` : 'it';
      const when = inStarted ? '' : ' at the failure';
      return {
        needAtLeast: need,
        text:
          `the command lowers ${ulimit} itself: ${who} ran under ${formatBytes(lowered)}${when}, the command started under ` +
          `${outside === undefined ? 'none' : formatBytes(outside)}; raise it where the command sets it` +
          (need !== null ? `, to ${atLeast} (${formatBytes(need)}: ${arithmetic}); later steps may need more` : ''),
        command: null,
      };
    }
    if (need === null) {
      return {
        needAtLeast: null,
        text: `${ulimit} must allow more; how much is not known (no reading at the failure)`,
        command: fit(kind),
      };
    }
    return {
      needAtLeast: need,
      text: `${arithmetic}: ${ulimit} needs ${atLeast} (${formatBytes(need)}); later steps may need more`,
      command: fit(kind),
    };
  }
  const fork = failures.find((f) => !f.injected && f.fn === 'fork' && f.limit?.cause === 'commit-limit');
  if (diagnosis.cause === 'commit-limit' && fork) {
    return {
      needAtLeast: null,
      text:
        `the child of a fork is committed a full copy of the parent's ${formatBytes(fork.size)} of private ` +
        'writable memory: start worker processes from a small process (Python: ' +
        "multiprocessing.set_start_method('forkserver') or 'spawn'; PyTorch: " +
        "DataLoader(..., multiprocessing_context='forkserver')), or before the model is loaded; or have the " +
        'administrator raise vm.overcommit_ratio or add swap',
      command: null,
    };
  }
  if (diagnosis.cause === 'cgroup-oom-kill' && slurm && !cgroup)
    return slurmFix(command, slurm, peaks, facts.oomKilled);
  if (diagnosis.cause === 'shared-memory' && facts.sharedMemory) {
    return {
      needAtLeast: null,
      text:
        `/dev/shm holds ${formatBytes(facts.sharedMemory.size)}: give it more room (docker run --shm-size=2g, or ` +
        '--ipc=host; Kubernetes: an emptyDir volume with medium: Memory mounted at /dev/shm), or pass less ' +
        "through it: fewer DataLoader workers (num_workers=0 uses none), smaller batches; the tmpfs's pages are " +
        'memory, charged to the cgroup of whoever writes them',
      command: null,
    };
  }
  const outside = !cgroup && diagnosis.cause === 'cgroup-oom-kill' ? outsideGroupFix(facts) : null;
  if (outside) return outside;
  if (diagnosis.cause === 'cgroup-oom-kill' && cgroup) {
    return {
      needAtLeast: cgroup.limit + 1,
      text: `the cgroup's ${formatBytes(cgroup.limit)} was not enough: the job needs more (a Slurm --mem, a container's --memory)`,
      command: fit('mem'),
    };
  }
  return null;
}

/** A kill at the limit of a memory cgroup someone else made (a container's): that limit, and what to change. */
function outsideGroupFix(facts: FixFacts): TraceFix | null {
  const fix = (group: LimitedGroupKills, what: string): TraceFix => ({
    needAtLeast: group.limit + 1,
    text:
      `the memory cgroup ${group.path}, made outside clip-mem (a container's or a service's), holds every process ` +
      `in it to ${formatBytes(group.limit)} of RSS + page cache, and ${what}: raise that limit where it is set ` +
      '(docker run --memory, Kubernetes resources.limits.memory, systemd MemoryMax=), or use less: a smaller ' +
      'batch, fewer or lighter worker processes',
    command: null,
  });
  const victims = facts.oomKilled ?? [];
  const counted = victims.length === 0 ? groupThatCountedKills(facts.memoryCgroups) : undefined;
  if (counted) return fix(counted, `counted ${counted.oomKills} OOM kill(s) during the run`);
  for (const victim of victims) {
    const group = facts.memoryCgroups?.find((g) => victim.cgroupLimit && g.path === victim.cgroup);
    if (group) return fix(group, `the OOM killer killed pid ${victim.pid} (${victim.comm}) there`);
  }
  return null;
}

/**
 * The --mem a program killed by its Slurm job's cgroup needs: all it had mapped (VmSize less the PROT_NONE
 * reservations, which hold no memory), since it was killed before touching it all; at least what it held
 * (heap + anonymous + file mappings, or its RSS at the kill); rounded up to MiB. Without a record, only
 * "more than the request" is known.
 */
function slurmFix(
  command: readonly string[],
  slurm: SlurmStepOutcome,
  peaks: TraceReport['peaks'] | null,
  oomKilled: TraceRun['oomKilled'] = [],
): TraceFix {
  const fit = `clip-mem fit --for slurm -- ${shellWords(command)}`;
  const job = `Slurm job ${slurm.jobId}${slurm.stepId !== null ? ` (step ${slurm.stepId})` : ''}: ${slurm.request ?? 'its memory request'}`;
  const above = slurm.limit !== null ? ` above ${Math.ceil(slurm.limit / MiB)}M` : '';
  // A worker killed, not the program: the program's own figures do not bound what the step's processes
  // need together.
  const worker = oomKilled.find((v) => v.main === false);
  if (worker && !oomKilled.some((v) => v.main === true)) {
    const rss = worker.rss !== null ? ` with RSS ${formatBytes(worker.rss)}` : '';
    return {
      needAtLeast: slurm.limit !== null ? slurm.limit + 1 : null,
      text:
        `${job} was not enough for the step's processes together: pid ${worker.pid} (${worker.comm}), a process ` +
        `the command started, was killed${rss}; ask for --mem${above}; how much more is not known from one run`,
      command: fit,
    };
  }
  const mapped = peaks?.vmSize != null ? peaks.vmSize - (peaks.reserved ?? 0) : null;
  const held = peaks?.heap != null ? peaks.heap + (peaks.anon ?? 0) + (peaks.file ?? 0) : null;
  const need = highest([mapped, held, peaks?.rss]);
  if (need === null || (slurm.limit !== null && need <= slurm.limit)) {
    return {
      needAtLeast: slurm.limit !== null ? slurm.limit + 1 : null,
      text: `${job} was not enough; ask for --mem${above}; how much more is not known (the program's own mappings were not recorded)`,
      command: fit,
    };
  }
  const mib = Math.ceil(need / MiB);
  const parts = [
    mapped !== null
      ? `VmSize ${formatBytes(peaks!.vmSize!)} less ${formatBytes(peaks!.reserved ?? 0)} reserved = ${formatBytes(mapped)} mapped`
      : '',
    held !== null
      ? `heap ${formatBytes(peaks!.heap!)} + anonymous ${formatBytes(peaks!.anon ?? 0)} + file ${formatBytes(peaks!.file ?? 0)} = ${formatBytes(held)} allocated`
      : '',
  ].filter(Boolean);
  return {
    needAtLeast: mib * MiB,
    text:
      `${job} was not enough; the program had ${parts.join(', ')} when killed; ask for --mem=${mib}M ` +
      `(srun --mem=${mib}M / #SBATCH --mem=${mib}M: all it mapped, rounded up to MiB; what it touches may be less)`,
    command: fit,
  };
}

const MiB = 2 ** 20;

function signalWithNumber(signal: string): string {
  const number = os.constants.signals[signal as keyof typeof os.constants.signals];
  return `${signal}${number ? ` (${number})` : ''}`;
}

/**
 * How the command's own process ended, first and truthfully: a kill clip-mem sent is clip-mem's, an OOM
 * kill is named only when the diagnosis found the process itself killed (not another of its group).
 */
function describeEnding(run: TraceRun, diagnosis: Diagnosis): string {
  const { code, signal } = run.exit;
  const took = `after ${(run.durationMs / 1000).toFixed(1)} s`;
  if (run.stoppedBy) return `stopped by ${run.stoppedBy} to clip-mem ${took}, killed by clip-mem`;
  if (run.timedOut) return `timed out after ${(run.timeoutMs ?? 0) / 1000} s, killed by clip-mem`;
  const own = diagnosis.evidence[0] ?? '';
  if (
    signal === 'SIGKILL' &&
    diagnosis.cause === 'cgroup-oom-kill' &&
    own.startsWith('killed by the kernel OOM killer')
  )
    return `${own} ${took}`;
  if (signal) return `killed by ${signalWithNumber(signal)} ${took}`;
  return `exited with code ${code} ${took}`;
}

/** The record writes -1 where /proc could not be read; reports write null. */
const knownBytes = (value: number): number | null => (value < 0 ? null : value);

export interface TraceReportOptions {
  /** See diagnosisInput. */
  reportedError?: string | null;
  /** The tensors of each failed size are named from its layout. */
  model?: ClipConfig;
  /**
   * 'report' (trace): every process's live-heap profile, symbolized. 'diagnosis': only what the diagnosis
   * names, the command's own holders at a failure or at its kill; the report's heapProfile is then null. A
   * run that neither failed nor was killed then symbolizes nothing (~0.6 s saved per `run` scenario).
   */
  heapProfile?: 'report' | 'diagnosis';
}

/** The report of one traced run: what `trace` prints, and what `run`, `fit` and calibration diagnose from. */
export function buildTraceReport(run: TraceRun, options: TraceReportOptions = {}): TraceReport {
  const { reportedError, model } = options;
  const record = run.record;
  const limits = effectiveLimits(run);
  const recordFailures = record?.failures ?? [];
  const stacks = symbolize(recordFailures.map((f) => f.stack));
  const heapProfile =
    options.heapProfile === 'diagnosis'
      ? null
      : traceHeapProfile(record ? [record, ...run.descendants] : run.descendants);
  const input = diagnosisInput(run, reportedError, heapProfile ? heldBy(heapProfile, run.pid) : ownHeldBy(record));
  const isNode = record !== undefined && /^node(js)?(\d+)?$/.test(path.basename(record.exe));
  const failures: TraceFailure[] = recordFailures.map((f, i) => {
    const { stack: _stack, python, ...detail } = f;
    const stack = (stacks[i] as SymbolizedFrame[]).map(formatFrame);
    return {
      fn: f.fn,
      size: f.size,
      errno: f.errno,
      errnoName: errnoName(f.errno),
      phase: f.phase,
      stack,
      python,
      javascript: null,
      sizeOverflow: f.sizeOverflow,
      injected: f.injected,
      limit: explainFailure(f, limits, input.output, input.tasks),
      vmSize: knownBytes(f.vmSize),
      vmData: knownBytes(f.vmData),
      rss: knownBytes(f.rss),
      tMs: (f.timeNs - record!.startNs) / 1e6,
      tid: f.tid,
      ...(model ? { tensors: tensorsOfSize(model, f.size) } : {}),
      detail,
      gpu: f.gpu ? { ...f.gpu, statusName: cudaErrorName(f.gpu.api, f.gpu.status) } : null,
    };
  });
  if (isNode)
    javaScriptStacks(failures, record!.pid, arrayBufferFailureStack(run.stderrTail)).forEach(
      (js, i) => (failures[i]!.javascript = js),
    );
  const last = record
    ? {
        heap: record.counters.heapCurrent,
        anon: record.counters.anonMapped,
        file: record.counters.fileMapped,
        reserved: record.counters.reservedMapped,
        phase: input.last?.phase ?? '',
        rss: input.last?.rss ?? null,
      }
    : null;
  const diagnosis = diagnose(input);
  // Peaks that are peaks: the record's own high-water marks can miss pages touched without an allocation
  // call (a killed process never reads VmHWM), so each is also at least every sample and the last value.
  const samples = record?.timeline ?? [];
  const c = record?.counters;
  const peakOf = (own: (number | undefined)[], key: 'heap' | 'anon' | 'file' | 'reserved' | 'rss' | 'vmSize') =>
    record ? highest([...own, ...samples.map((sample) => sample[key])]) : null;
  const peaks = {
    heap: peakOf([c?.heapPeak, c?.heapCurrent], 'heap'),
    anon: peakOf([c?.anonPeak, c?.anonMapped], 'anon'),
    file: peakOf([c?.filePeak, c?.fileMapped], 'file'),
    reserved: peakOf([c?.reservedPeak, c?.reservedMapped], 'reserved'),
    // The kernel's own figure when it OOM-killed this process (anon + file + shmem RSS at the kill).
    rss: peakOf([c?.rssPeak, run.lastSeen?.rss, ...run.oomKilled.filter((v) => v.main).map((v) => v.rss ?? 0)], 'rss'),
    vmSize: peakOf([c?.vmPeak, run.lastSeen?.vmSize], 'vmSize'),
  };
  // A figure the record holds as exactly 0 stays 0 (e.g. no file mapping at all), not unknown.
  for (const key of ['heap', 'anon', 'file', 'reserved'] as const) if (record && peaks[key] === null) peaks[key] = 0;
  const processes = processRows(run, { rss: peaks.rss, vmSize: peaks.vmSize, heap: peaks.heap });
  return {
    schema: TRACE_SCHEMA,
    command: run.command,
    pid: run.pid,
    limits: run.limits,
    exit: run.exit,
    timedOut: run.timedOut,
    timeoutMs: run.timeoutMs ?? null,
    stoppedBy: run.stoppedBy ?? null,
    ending: describeEnding(run, diagnosis),
    durationMs: run.durationMs,
    tracked: record !== undefined,
    notTracked: run.notTracked,
    lostTrack: run.lostTrack,
    failuresTotal: record?.failuresTotal ?? 0,
    failures,
    failureGroups: groupFailures(failures),
    peaks,
    last,
    calls: record ? { ...record.calls } : null,
    phases: (record?.phases ?? []).map((p) => ({ label: p.label, heap: p.heap, anon: p.anon, file: p.file })),
    timeline: (record?.timeline ?? []).map((sample) => ({
      tMs: Math.round((sample.timeNs - record!.startNs) / 1e6),
      heap: sample.heap,
      anon: sample.anon,
      file: sample.file,
      rss: sample.rss,
      vmSize: sample.vmSize,
      gpu: sample.gpu,
      phase: phaseLabel(record!, sample.phaseIndex),
    })),
    cgroup: run.cgroup,
    slurm: run.slurm ?? null,
    hostOomKills: run.hostOomKills,
    memoryCgroups: run.memoryCgroups,
    tasks: run.tasks,
    sharedMemory: run.sharedMemory,
    oomKilled: run.oomKilled,
    ...(run.kernelLog !== undefined ? { kernelLog: run.kernelLog } : {}),
    processes,
    tree: treeFigures(run, processes),
    outlived: run.outlived,
    ...(run.recordDirLeft !== undefined ? { recordDirLeft: run.recordDirLeft } : {}),
    heapProfile,
    diagnosis,
    fix: traceFix(run.command, diagnosis, {
      failures,
      cgroup: run.cgroup,
      slurm: run.slurm ?? null,
      peaks,
      started: startedProcessRefusal(input),
      commandLimits: limits,
      startLimits: record ? recordLimits(record, run.limits.mem, 'start') : limits,
      oomKilled: run.oomKilled,
      memoryCgroups: run.memoryCgroups,
      sharedMemory: run.sharedMemory,
    }),
    gpu: record ? { devices: record.devices, pinnedPeak: record.pinnedPeak, untracked: record.deviceUntracked } : null,
    gpuFixes: diagnosis.gpu ? gpuFixes(diagnosis.gpu, shellWords(run.command)) : [],
  };
}

function bytes(value: number | null): string {
  return value === null || value < 0 ? '?' : formatBytes(value);
}

/** Milliseconds as seconds with one decimal ("2.5"), '?' when not known. */
function seconds(ms: number | null): string {
  return ms === null ? '?' : (ms / 1000).toFixed(1);
}

function requested(f: TraceFailure): string {
  if (f.sizeOverflow) return `${BigInt(f.detail.nmemb)} x ${BigInt(f.detail.elemSize)} bytes (more than 2^64)`;
  return `${f.size} bytes (${formatBytes(f.size)})`;
}

const shownProcesses = 20;

/**
 * The tree's combined figures, each in words: its summed RSS at the peak, the largest single process, the
 * cgroup's own peak, clip-mem's record files. The terminal and the Markdown/HTML documents say the same.
 */
export function treeFigureTexts(report: TraceReport): string[] {
  const tree = report.tree;
  const texts: string[] = [];
  if (tree.rssPeak !== null) texts.push(`summed RSS peak ${bytes(tree.rssPeak)} at ${seconds(tree.rssPeakAtMs)} s`);
  if (tree.largest) texts.push(`largest single process: pid ${tree.largest.pid}, RSS ${bytes(tree.largest.rss)}`);
  if (report.cgroup?.peak != null) texts.push(`the cgroup's own peak ${bytes(report.cgroup.peak)}`);
  if (tree.recordsPageCache !== null)
    texts.push(
      `clip-mem's records: ${bytes(tree.recordsPageCache)} of page cache` +
        (tree.recordsDiskPeak !== null ? `, at most ${bytes(tree.recordsDiskPeak)} of disk` : ''),
    );
  return texts;
}

/** What befell processes besides the rows' own endings: other processes the kernel log says were OOM-killed, and those that outlived the command. */
export function treeEventTexts(report: TraceReport): string[] {
  return [
    ...report.oomKilled
      .filter((v) => v.main !== true)
      .map(
        (v) =>
          `OOM-killed meanwhile: pid ${v.pid} (${v.exe ?? v.comm})` +
          (v.cgroup ? ` in cgroup ${v.cgroup}` : '') +
          (v.rss !== null ? `, RSS ${formatBytes(v.rss)} when killed` : '') +
          ' (kernel log)',
      ),
    ...report.outlived.map(
      (p) => `outlived the command: pid ${p.pid} (${p.exe}) ${p.command ? `"${p.command}" ` : ''}- ${p.fate}`,
    ),
  ];
}

/** A row per process (the first 20; all in the JSON), and the tree's combined RSS next to the largest process. */
function formatProcesses(report: TraceReport): string[] {
  if (report.processes.length < 2) return [];
  const lines = [`  processes (${report.processes.length}):`];
  for (const p of report.processes.slice(0, shownProcesses)) {
    const name = (p.command ?? p.exe).replace(/\s+/g, ' ');
    lines.push(
      `    pid ${p.pid}${p.ppid !== null ? ` (parent ${p.ppid})` : ''} ${name.length > 48 ? `${name.slice(0, 47)}…` : name}: ` +
        `${seconds(p.startMs)}-${seconds(p.endMs)} s, RSS peak ${bytes(p.peaks.rss)}` +
        (p.peaks.heap !== null ? `, heap ${bytes(p.peaks.heap)}` : '') +
        (p.failures ? `, ${p.failures} failed allocation(s)` : '') +
        (p.tracked ? '' : ', untracked') +
        `; ${p.ending.text} [${p.ending.evidence}]`,
    );
  }
  if (report.processes.length > shownProcesses)
    lines.push(`    ... ${report.processes.length - shownProcesses} more (see --json)`);
  const tree = report.tree;
  if (tree.rssPeak !== null) lines.push(`  tree: ${treeFigureTexts(report).join('; ')}`);
  // The cgroup is charged for page cache too: a peak well above the summed RSS is mostly files, clip-mem's own
  // records among them (reclaimable: they do not make the limit kill).
  if (tree.rssPeak !== null && report.cgroup?.peak != null && report.cgroup.peak > 1.5 * tree.rssPeak)
    lines.push(
      `  note: the cgroup's peak is mostly page cache, which it is charged for too: files read or written, ` +
        `clip-mem's record files included (the pages the tracker wrote${tree.recordsPageCache !== null ? `: ${bytes(tree.recordsPageCache)} at the end` : ''}); the kernel reclaims it before an OOM kill`,
    );
  return lines;
}

/** Each failure with its limit, tensors and frames (Python, JavaScript, native); identical stacks once. */
export function formatFailures(report: TraceReport): string[] {
  const lines: string[] = [];
  const failureLines = (f: TraceFailure, i: number, sameAs?: number) => {
    const flags = [f.injected ? 'injected' : ''].filter(Boolean);
    const status = f.gpu
      ? `${f.gpu.statusName} (${f.gpu.status})${f.gpu.device !== null ? ` on GPU ${f.gpu.device}` : ''}`
      : `${f.errnoName} (${f.errno})`;
    lines.push(
      `  #${i + 1} ${f.fn} of ${requested(f)} failed: ${status}` +
        (f.phase ? ` in phase "${f.phase}"` : '') +
        (flags.length ? ` [${flags.join(', ')}]` : ''),
    );
    if (f.detail.fdPath) lines.push(`      file ${f.detail.fdPath} at offset ${f.detail.offset}`);
    for (const sentence of f.limit?.evidence ?? []) lines.push(`      ${f.limit!.cause}: ${sentence}`);
    for (const t of f.tensors ?? []) lines.push(`      the size of ${t.name} [${t.shape.join(', ')}] in ${t.storage}`);
    if (f.tensors?.length === 0) lines.push('      the size of no tensor of the model');
    if (sameAs !== undefined) {
      lines.push(`      at the same stack as #${sameAs + 1}`);
      return;
    }
    // Python frames first: the user's line, then the native frames under it.
    for (const frame of pythonFrames(f)) lines.push(frame.startsWith('...') ? `      ${frame}` : `      at ${frame}`);
    const gap = pythonGap(f);
    if (gap) lines.push(`      (${gap})`);
    if (f.javascript) {
      for (const frame of f.javascript.frames) lines.push(`      at ${javaScriptFrame(frame)} [JavaScript]`);
      lines.push(`      (JavaScript frames: ${f.javascript.note})`);
    }
    for (const frame of f.stack.slice(0, 12)) lines.push(`      at ${elideTemplates(frame)}`);
    if (f.stack.length > 12) lines.push(`      ... ${f.stack.length - 12} more frames (see --json)`);
  };
  // Identical stacks once: the first failure of each in full, and the largest when it is another.
  for (const group of report.failureGroups) {
    failureLines(report.failures[group.first]!, group.first);
    if (group.count === 1) continue;
    lines.push(
      `      ${group.count - 1} more failure(s) with this stack${group.largest !== group.first ? '; the largest:' : ''}`,
    );
    if (group.largest !== group.first) failureLines(report.failures[group.largest]!, group.largest, group.first);
  }
  return lines;
}

/** The terminal summary printed after the child's own output. */
export function formatTraceReport(report: TraceReport): string {
  const lines: string[] = [];
  lines.push(`clip-mem trace: ${report.command.join(' ')} (pid ${report.pid}) ${report.ending}`);
  const limits = limitTexts(report.limits);
  if (limits.length) lines.push(`  limits: ${limits.join(', ')}`);
  if (report.slurm) {
    const where = report.slurm.cgroup ? `, enforced by cgroup ${report.slurm.cgroup}` : ', no Slurm memory cgroup';
    lines.push(`  in ${slurmJobName(report.slurm)}${where}`);
  }
  if (!report.tracked) {
    lines.push(`  not tracked: ${report.notTracked}`);
  } else {
    const p = report.peaks;
    lines.push(
      `  peaks: heap ${bytes(p.heap)}, anonymous mappings ${bytes(p.anon)}, file mappings ${bytes(p.file)}, ` +
        `reserved (PROT_NONE) ${bytes(p.reserved)}, ` +
        `RSS ${bytes(p.rss)}, VmSize ${bytes(p.vmSize)}`,
    );
    if (report.last && (report.exit.signal || report.diagnosis.cause === 'cgroup-oom-kill')) {
      lines.push(
        `  last counters: RSS ${bytes(report.last.rss)}, heap ${bytes(report.last.heap)}, anonymous ${bytes(report.last.anon)}, file ${bytes(report.last.file)}` +
          (report.last.phase ? `, phase "${report.last.phase}"` : ''),
      );
    }
    if (report.lostTrack) lines.push(`  note: ${report.lostTrack}`);
    if (report.failuresTotal === 0) lines.push('  no allocation failed');
    else {
      const shown =
        report.failures.length < report.failuresTotal ? ` (the latest ${report.failures.length} shown)` : '';
      lines.push(`  ${report.failuresTotal} failed allocation(s)${shown}:`);
    }
    lines.push(...formatFailures(report));
    for (const d of report.gpu?.devices ?? []) {
      lines.push(
        `  GPU ${d.ordinal}: peak ${formatBytes(d.peak)} allocated by this process (${d.allocations} allocation(s), ` +
          `${d.failures} failed), ${formatBytes(d.live)} still allocated at the end`,
      );
    }
    if (report.heapProfile) lines.push(...formatHeapProfile(report.heapProfile));
  }
  lines.push(...formatProcesses(report));
  for (const text of treeEventTexts(report)) lines.push(`  ${text}`);
  if (report.recordDirLeft) lines.push(`  left behind: ${report.recordDirLeft}`);
  if (report.cgroup?.removeError) lines.push(`  left behind: ${report.cgroup.removeError}`);
  lines.push(`  diagnosis: ${report.diagnosis.cause}`);
  for (const sentence of report.diagnosis.evidence) lines.push(`    ${sentence}`);
  if (report.fix) {
    lines.push(`  fix: ${report.fix.text}`);
    if (report.fix.command) lines.push(`    the real minimum, proven by runs: ${report.fix.command}`);
  }
  for (const fix of report.gpuFixes) {
    lines.push(`  fix (${fix.kind}): ${fix.text}`);
    if (fix.command) lines.push(`    ${fix.command}`);
  }
  return lines.join('\n') + '\n';
}
