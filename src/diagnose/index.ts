// Why a process ran out of memory: one cause from a fixed vocabulary, with evidence sentences that show
// the arithmetic ("VmSize 3.95 GiB + 96.5 MiB > RLIMIT_AS 4.00 GiB"). Input is what a traced run
// observed, built from a traced run by diagnosisInput (input.ts); fixes are built on top of this by
// src/report/fixes.ts. Pure: no I/O, no process access (the layer check in `npm test` enforces it).
import { killedOrTerminated, type Ending } from '../core/ending';
import { errnoName } from '../core/errno';
import type { Limits } from '../core/limits';
import type { LimitedGroupKills, TaskLimit } from '../probe/cgroup';
import type { OomKillerProcess, SharedMemoryWatch } from '../probe/proc';
import { formatBytes } from '../core/units';
import { explainGpuFailure, gpuFromOutput, type GpuDiagnosis, type GpuFacts } from './gpu';

export { errnoName };
export type { GpuCulprit, GpuDiagnosis, GpuFacts, FrameworkOom } from './gpu';

export type Cause =
  | 'address-space'
  | 'data-limit'
  | 'commit-limit'
  | 'overcommit-heuristic'
  | 'map-count'
  | 'cgroup-oom-kill'
  | 'host-oom-kill'
  | 'gpu-memory'
  | 'js-heap'
  | 'shared-memory'
  | 'not-memory'
  | 'none'
  | 'unknown';

export const causes: readonly Cause[] = [
  'address-space',
  'data-limit',
  'commit-limit',
  'overcommit-heuristic',
  'map-count',
  'cgroup-oom-kill',
  'host-oom-kill',
  'gpu-memory',
  'js-heap',
  'shared-memory',
  'not-memory',
  'none',
  'unknown',
];

export interface Diagnosis {
  cause: Cause;
  evidence: string[];
  /** For gpu-memory: the device's figures and what left too little room. */
  gpu?: GpuDiagnosis;
}

/** What is known of one failed allocation (a RecordFailure fits; -1 or absent: unknown). */
export interface FailureFacts {
  fn: string;
  size: number;
  errno: number;
  sizeOverflow?: boolean;
  injected?: boolean;
  nmemb?: number;
  elemSize?: number;
  prot?: number;
  flags?: number;
  /** mremap: the mapping's size before. */
  oldSize?: number;
  fd?: number;
  fdPath?: string;
  vmSize?: number;
  vmData?: number;
  mapCount?: number;
  maxMapCount?: number;
  commitLimit?: number;
  committedAs?: number;
  memTotal?: number;
  overcommitMemory?: number;
  phase?: string;
  /** Set for a GPU allocation (CUDA runtime or driver): the device's state at the failure. */
  gpu?: GpuFacts | null;
}

export interface DiagnosisInput {
  exit: Ending;
  /** Limits in force for the process, set by clip-mem or inherited (absent: none). */
  limits: Limits;
  failures: FailureFacts[];
  /** The memory cgroup the process ran in, if we made one. */
  cgroup?: { path?: string; limit: number | null; oomKills: number | null; peak?: number | null };
  /**
   * The Slurm job the run was inside (its request, its memory cgroup and the OOM kills it counted during
   * the run): a kill there is Slurm's enforcement of --mem, named as such.
   */
  slurm?: {
    jobId: string;
    stepId: string | null;
    request: string | null;
    requestUnknown?: string;
    cgroup: string | null;
    limit: number | null;
    peak: number | null;
    oomKills: number | null;
  };
  /** Kernel OOM kills on the host during the run (/proc/vmstat oom_kill difference). */
  hostOomKills?: number | null;
  /** /dev/shm (a tmpfs): its size, and its use at the start and at most during the run (read every readEveryMs). */
  sharedMemory?: SharedMemoryWatch | null;
  /**
   * The memory cgroups with a limit that clip-mem ran in, made by someone else (a container's), and the OOM
   * kills each counted during the run (null: not read): the word of a kill where the kernel log is unreadable.
   */
  memoryCgroups?: LimitedGroupKills[];
  /** User-space OOM killers running (earlyoom, systemd-oomd): they kill by signal, unseen by the kernel's counters. */
  userspaceOomKillers?: OomKillerProcess[];
  /** The pids cgroup the run was in: its limit on tasks, where set, and the new tasks it refused during the run. */
  tasks?: TaskLimit | null;
  /** The tail of the process's stderr (and stdout): runtimes say some things only there. */
  output?: string;
  /** Peak bytes of file-backed mappings, when tracked. */
  filePeak?: number;
  /** Last state the tracker saw (for a process killed without a failure). */
  last?: { phase?: string; heap?: number; rss?: number; anon?: number; file?: number };
  /** Why the process has no allocation record, if it has none: then the cause is `unknown` at best. */
  notTracked?: string;
  /** The address space exec maps for the program and its dynamic loader before it runs (from its ELF headers). */
  imageBytes?: number;
  /**
   * Where tracking stopped in a process that has a record (it exec'd an untracked program: an exit,
   * _exit included, marks the record ended), said in the evidence.
   */
  lostTrack?: string;
  /** Set when clip-mem killed the process group at its timeout (milliseconds): that kill is ours, not the kernel's. */
  timeoutMs?: number;
  /** Set when clip-mem was told to stop (SIGINT, SIGTERM, SIGHUP) and killed the process group: ours too. */
  stoppedBy?: string;
  /**
   * The processes the kernel log says its OOM killer killed during the run (main: the command's own
   * process; null when the log's pids cannot be compared with ours). Empty or absent: none logged, or the
   * log could not be read (kernelLog says why).
   */
  oomKilled?: {
    pid: number;
    name: string;
    main: boolean | null;
    rss: number | null;
    cgroup: string;
    cgroupLimit: boolean;
  }[];
  kernelLog?: string;
  /**
   * Processes the command started (tracked) that had allocations refused, with the limits their own
   * records saw (a `ulimit` set inside the job shows only there) and the code they exited with.
   */
  descendantFailures?: {
    pid: number;
    exe: string;
    exitCode: number | null;
    limits: Limits;
    failures: FailureFacts[];
  }[];
  /** Processes the command started that were seen running (/proc) but wrote no record: not tracked. */
  untrackedStarted?: { pid: number; exe: string }[];
  /** Descendants whose record ends without a clean exit (killed, or exec'd an untracked program). */
  endedUnclean?: { pid: number; exe: string }[];
  /**
   * The call sites holding the most live memory (sampled estimates, largest first) at the moment that
   * explains the ending ("at failure #1", "at the kill", "at the peak"), when the process was profiled.
   */
  heldBy?: { moment: string; holders: { bytes: number; site: string }[] };
}

/** "the pids cgroup /x refused 2 new process(es) or thread(s) during the run (pids.events), at the limit of 40 tasks (pids.max)". */
function taskRefusals(tasks: TaskLimit | null | undefined): string | undefined {
  if (!tasks || tasks.refused <= 0) return undefined;
  const where = tasks.limitedAt !== null && tasks.limitedAt !== tasks.cgroup ? ` of ${tasks.limitedAt}` : '';
  const limit = tasks.limit !== null ? `, at the limit of ${tasks.limit} tasks (pids.max${where})` : '';
  return `the pids cgroup ${tasks.cgroup} refused ${tasks.refused} new process(es) or thread(s) during the run (pids.events)${limit}`;
}

const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_GROWSDOWN = 0x100;
const ENOMEM = 12;
const EAGAIN = 11;

function known(value: number | undefined): value is number {
  return value !== undefined && value >= 0;
}

/** PROT_READ|PROT_WRITE as "read-write", PROT_READ as "read-only". */
function protName(prot: number | undefined): string {
  if (prot === undefined) return 'accessible';
  if (prot === 0) return 'PROT_NONE';
  const names = (
    [
      [1, 'read'],
      [2, 'write'],
      [4, 'execute'],
    ] as const
  )
    .filter(([bit]) => (prot & bit) !== 0)
    .map(([, name]) => name);
  return names.length === 1 ? `${names[0]}-only` : names.join('-');
}

function describeRequest(f: FailureFacts): string {
  const bytes = `${f.size} bytes (${formatBytes(f.size)})`;
  if (f.fn === 'pthread_create') return `pthread_create of a thread with a ${formatBytes(f.size)} stack`;
  if (f.fn === 'fork')
    return `fork of a process with ${formatBytes(f.size)} of private writable memory (VmData + VmStk)`;
  if (f.fn === 'mprotect') {
    const what = f.fdPath ? `a mapping of ${f.fdPath}` : f.flags === 0 ? 'an address range' : 'anonymous memory';
    return `mprotect making ${bytes} of ${what} ${protName(f.prot)}`;
  }
  if (f.fn === 'mmap' || f.fn === 'mmap64') {
    const what = f.fd !== undefined && f.fd >= 0 ? `file mapping of ${f.fdPath || `fd ${f.fd}`}` : 'anonymous mapping';
    const access = f.prot === undefined ? '' : (f.prot & PROT_WRITE) === 0 ? 'read-only ' : '';
    const article = /^[aeiou]/.test(access + what) ? 'an' : 'a';
    return `${f.fn} of ${article} ${access}${what}, ${bytes}`;
  }
  return `${f.fn} of ${bytes}`;
}

/**
 * RLIMIT_DATA counts private writable mappings (Linux >= 4.7) and the heap; not read-only, shared or
 * grows-down stack ones (MAP_STACK, which glibc uses for thread stacks, does not exempt a mapping).
 * mprotect is checked the same way when it makes a mapping writable (its flags are the mapping's).
 */
function countsAsData(f: FailureFacts): boolean {
  if (f.fn !== 'mmap' && f.fn !== 'mmap64' && f.fn !== 'mprotect') return true;
  const prot = f.prot ?? PROT_WRITE;
  const flags = f.flags ?? 0;
  return (prot & PROT_WRITE) !== 0 && (flags & MAP_SHARED) === 0 && (flags & MAP_GROWSDOWN) === 0;
}

const MAP_HUGETLB = 0x40000;
const MREMAP_MAYMOVE = 1;

/** A refusal that reads as memory running out: ENOMEM, or pthread_create's EAGAIN (glibc's word for a stack it could not map). */
function refusedAsMemory(f: FailureFacts): boolean {
  return f.errno === ENOMEM || (f.fn === 'pthread_create' && f.errno === EAGAIN);
}

/** Refusals that read as memory running out and that no limit clip-mem reads explains, with where they happened. */
function unexplainedRefusals(input: DiagnosisInput): { who: string; failure: FailureFacts }[] {
  const explained = (failure: FailureFacts, limits: Limits) =>
    explainFailure(failure, limits, undefined, input.tasks) !== undefined;
  const own = input.failures.map((failure) => ({ who: '', limits: input.limits, failure }));
  const started = (input.descendantFailures ?? []).flatMap((p) =>
    p.failures.map((failure) => ({ who: `pid ${p.pid} (${p.exe}): `, limits: p.limits, failure })),
  );
  return [...own, ...started]
    .filter(({ failure, limits }) => !failure.injected && refusedAsMemory(failure) && !explained(failure, limits))
    .map(({ who, failure }) => ({ who, failure }));
}

/** What else can refuse such a request, for the evidence of an unexplained refusal. */
function otherRefusers(f: FailureFacts): string {
  if ((f.fn === 'mmap' || f.fn === 'mmap64') && ((f.flags ?? 0) & MAP_HUGETLB) !== 0)
    return (
      "MAP_HUGETLB takes its pages from the kernel's huge page pool (vm.nr_hugepages; HugePages_Free in " +
      '/proc/meminfo), which free ordinary memory does not refill: an empty or exhausted pool refuses with ENOMEM'
    );
  if (f.fn === 'pthread_create')
    return (
      "glibc's pthread_create says EAGAIN both when the thread's stack cannot be mapped and when the kernel " +
      "refuses a new task (RLIMIT_NPROC, the pids cgroup's pids.max, kernel.threads-max)"
    );
  if (f.fn === 'fork')
    return (
      'fork also fails with ENOMEM when the kernel cannot allocate the child (its page tables, under a cgroup ' +
      "that limits kernel memory) or when the PID namespace's first process has exited"
    );
  return 'a hugetlb or kernel-memory cgroup limit, the huge page pool or a locked-memory limit can also refuse it';
}

/** The last line of a Python traceback for a failed allocation ("MemoryError", or with a message). */
const PYTHON_MEMORY_ERROR = /^MemoryError\b/m;

/** A process the command started, with a refused allocation a limit explains (descendantFailures). */
export interface StartedProcessRefusal {
  process: NonNullable<DiagnosisInput['descendantFailures']>[number];
  failure: FailureFacts;
  explained: Diagnosis;
}

/** The first refusal a limit explains among the processes the command started, in the order they started. */
export function startedProcessRefusal(
  input: Pick<DiagnosisInput, 'descendantFailures' | 'output' | 'tasks'>,
): StartedProcessRefusal | undefined {
  for (const process of input.descendantFailures ?? []) {
    for (const failure of process.failures) {
      const explained = explainFailure(failure, process.limits, input.output, input.tasks);
      if (explained && explained.cause !== 'not-memory') return { process, failure, explained };
    }
  }
  return undefined;
}

/**
 * A command that exited non-zero without a refused allocation of its own, and a process it started whose
 * allocation a limit refused: that limit is the cause when the command exited with that process's own
 * code (a shell or launcher passing it on) or ended with Python's MemoryError (a pool re-raising a
 * worker's), `unknown` otherwise (the refusal is evidence, not proof).
 */
function startedProcessFailure(input: DiagnosisInput): Diagnosis | undefined {
  const refusal = startedProcessRefusal(input);
  if (!refusal) return undefined;
  const { process, explained } = refusal;
  const { exit } = input;
  const who = `pid ${process.pid} (${process.exe})`;
  const evidence = explained.evidence.map((line, i) => (i === 0 ? `${who}: ${line}` : line));
  if (process.exitCode !== null && process.exitCode === exit.code)
    return {
      ...explained,
      evidence: [`${endingOf(exit)}, passing on the exit code of ${who}, whose allocation was refused`, ...evidence],
    };
  // Python re-raises a worker's MemoryError in the parent (multiprocessing, concurrent.futures): the worker
  // lives on (or is stopped by the pool), the command says it failed for memory, and the refusal in the
  // tree says which limit. A process that died of its refusal with a code the command did not pass on
  // leaves the command's own code unexplained.
  const survivedIt = process.exitCode === null || process.exitCode === 0;
  if (survivedIt && input.output && PYTHON_MEMORY_ERROR.test(input.output))
    return {
      ...explained,
      evidence: [
        `${endingOf(exit)} after Python's MemoryError, and ${who}, a process it started, had an allocation refused`,
        ...evidence,
      ],
    };
  return {
    cause: 'unknown',
    evidence: [
      `${endingOf(exit)}; no allocation of its own failed, but ${who}, a process it started, had one refused (${explained.cause})`,
      ...evidence,
      `whether the command ${endingOf(exit)} because of it is not known: ${who} ` +
        (process.exitCode === null ? 'did not exit normally' : `exited with code ${process.exitCode}`),
    ],
  };
}

/**
 * The cause of one failed allocation and the arithmetic that shows it; undefined if nothing explains it.
 * `output`: the program's output, where a framework's own out-of-memory message is evidence for a GPU failure.
 */
export function explainFailure(
  f: FailureFacts,
  limits: Limits,
  output?: string,
  tasks?: TaskLimit | null,
): Diagnosis | undefined {
  if (f.injected) return undefined;
  if (f.gpu) return explainGpuFailure({ fn: f.fn, size: f.size, gpu: f.gpu }, output);
  const request = describeRequest(f);
  if (f.sizeOverflow) {
    return {
      cause: 'not-memory',
      evidence: [
        `${f.fn}(${BigInt(f.nmemb ?? 0)}, ${BigInt(f.elemSize ?? 0)}): the product overflows 64 bits, so no amount of ` +
          'memory could satisfy it ' +
          '(a size computation bug, not a memory shortage)',
      ],
    };
  }
  if (!refusedAsMemory(f)) {
    const evidence = [`${request} failed with ${errnoName(f.errno)}, which is not a memory shortage`];
    if (f.fn === 'fork' && f.errno === EAGAIN)
      evidence.push(
        taskRefusals(tasks) ??
          "fork's EAGAIN is a limit on processes and threads (RLIMIT_NPROC, the pids cgroup's pids.max, kernel.threads-max)",
      );
    return { cause: 'not-memory', evidence };
  }
  // The tracker describes the mapping at mprotect's start from /proc/self/maps: none there, the kernel
  // refused an address range that is not mapped, with the same ENOMEM.
  if (f.fn === 'mprotect' && f.flags === 0) {
    return {
      cause: 'not-memory',
      evidence: [`${request} failed with ENOMEM: nothing is mapped at its start (not a memory shortage)`],
    };
  }
  // fork maps nothing new in the parent: only the commit limit judges it (the child's copy of the private
  // writable memory is committed in full), never RLIMIT_AS, RLIMIT_DATA or the map count.
  if (f.fn === 'fork') return commitRefusal(f, request);
  const readOnlyFile =
    (f.fn === 'mmap' || f.fn === 'mmap64') && f.fd !== undefined && f.fd >= 0 && ((f.prot ?? 0) & PROT_WRITE) === 0;
  // mprotect maps nothing new: RLIMIT_AS never refuses it (the kernel checks it for mmap, mremap, brk).
  if (limits.as !== undefined && known(f.vmSize) && f.fn !== 'mprotect') {
    const total = f.vmSize + f.size;
    // malloc asks the kernel for more than the caller asked: page rounding, 64 MiB thread arenas.
    const slack = 64 * 2 ** 20;
    if (total > limits.as || (f.fn !== 'mmap' && f.fn !== 'mmap64' && total + slack > limits.as)) {
      const relation = total > limits.as ? '>' : `is within ${formatBytes(limits.as - total)} of`;
      const evidence = [
        `VmSize ${formatBytes(f.vmSize)} + ${formatBytes(f.size)} ${relation} RLIMIT_AS ${formatBytes(limits.as)}: ` +
          `${request} needs address space the limit does not leave`,
      ];
      if (total <= limits.as) {
        evidence.push('malloc reserves more than it is asked for (page rounding, 64 MiB per-thread arenas)');
      }
      if (readOnlyFile) {
        evidence.push(
          'a read-only file mapping counts against RLIMIT_AS (address space) but not RLIMIT_DATA: it is not data',
        );
      }
      if (f.fn === 'pthread_create') {
        evidence.push("every thread's stack is mapped address space: RLIMIT_AS caps how many threads can start");
      }
      return { cause: 'address-space', evidence };
    }
  }
  if (limits.data !== undefined && known(f.vmData) && countsAsData(f) && f.vmData + f.size > limits.data) {
    return {
      cause: 'data-limit',
      evidence: [
        `VmData ${formatBytes(f.vmData)} + ${formatBytes(f.size)} > RLIMIT_DATA ${formatBytes(limits.data)}: ` +
          `${request} is private writable memory, which RLIMIT_DATA counts`,
      ],
    };
  }
  if (f.fn === 'mremap' && ((f.flags ?? 0) & MREMAP_MAYMOVE) === 0 && f.size > (f.oldSize ?? 0)) {
    // The kernel refuses a growth in place with ENOMEM when the pages after the mapping are taken.
    return {
      cause: 'not-memory',
      evidence: [
        `${request} failed with ENOMEM: without MREMAP_MAYMOVE a mapping can only grow in place, and the ` +
          'address space right after it is in use (not a memory shortage)',
      ],
    };
  }
  if (known(f.mapCount) && known(f.maxMapCount) && f.mapCount >= f.maxMapCount - 2) {
    return {
      cause: 'map-count',
      evidence: [`${f.mapCount} mappings = vm.max_map_count ${f.maxMapCount}: ${request} needs one more mapping`],
    };
  }
  const committed = commitRefusal(f, request);
  if (committed) return committed;
  const refusedTasks = f.fn === 'pthread_create' ? taskRefusals(tasks) : undefined;
  if (refusedTasks) {
    return {
      cause: 'not-memory',
      evidence: [`${request} failed with EAGAIN: ${refusedTasks}; a limit on processes and threads, not memory`],
    };
  }
  if (f.overcommitMemory === 0 && known(f.memTotal) && f.size > f.memTotal) {
    return {
      cause: 'overcommit-heuristic',
      evidence: [
        `${formatBytes(f.size)} > RAM + swap ${formatBytes(f.memTotal)}: vm.overcommit_memory=0 refuses a single ` +
          `allocation larger than all memory (${request})`,
      ],
    };
  }
  return undefined;
}

/** Under vm.overcommit_memory=2, a request past what the commit limit leaves. */
function commitRefusal(f: FailureFacts, request: string): Diagnosis | undefined {
  if (f.overcommitMemory !== 2 || !known(f.committedAs) || !known(f.commitLimit)) return undefined;
  if (f.committedAs + f.size <= f.commitLimit) return undefined;
  const evidence = [
    `Committed_AS ${formatBytes(f.committedAs)} + ${formatBytes(f.size)} > CommitLimit ${formatBytes(f.commitLimit)} ` +
      `(vm.overcommit_memory=2): ${request} cannot be committed`,
  ];
  if (f.fn === 'fork')
    evidence.push(
      "the child shares the parent's pages until either writes them, but the kernel commits the whole copy at " +
        'the fork: a large parent cannot start workers under this limit however little they use',
    );
  return { cause: 'commit-limit', evidence };
}

/** ld.so's "failed to map segment" under a limit: which library, and why the limit counts it. */
function loaderRefusal(output: string, limit: string, why: string): string {
  const library = /([^\s:]+\.so[\w.]*): failed to map segment/.exec(output)?.[1] ?? 'a shared library';
  return (
    `the dynamic loader could not map ${library} ("failed to map segment from shared object") under ${limit}: ` +
    `${why}, and the limit left too little to load it`
  );
}

const outputSigns: {
  pattern: RegExp;
  cause: Cause;
  when?: (limits: DiagnosisInput['limits']) => boolean;
  say: (limits: DiagnosisInput['limits'], output: string) => string;
}[] = [
  {
    // ld.so maps a library's segments itself (not through the interposed mmap), so no failure is recorded.
    pattern: /failed to map segment from shared object/,
    cause: 'address-space',
    when: (limits) => limits.as !== undefined,
    say: (limits, output) =>
      loaderRefusal(output, `RLIMIT_AS ${formatBytes(limits.as!)}`, "a library's code and data are address space"),
  },
  {
    // The same refusal under RLIMIT_DATA: a library's writable data segment is private writable memory.
    pattern: /failed to map segment from shared object/,
    cause: 'data-limit',
    when: (limits) => limits.data !== undefined,
    say: (limits, output) =>
      loaderRefusal(
        output,
        `RLIMIT_DATA ${formatBytes(limits.data!)}`,
        "a library's writable data segment is private writable memory, which RLIMIT_DATA counts",
      ),
  },
  {
    pattern: /Failed to reserve virtual memory for CodeRange/,
    cause: 'address-space',
    say: (limits) =>
      'V8 could not reserve its CodeRange at start-up ("Failed to reserve virtual memory for CodeRange", exit 133): ' +
      `node needs about 700 MiB of address space before running any code` +
      (limits.as !== undefined ? `, more than RLIMIT_AS ${formatBytes(limits.as)} allows` : ''),
  },
  {
    pattern: /JavaScript heap out of memory|Reached heap limit/,
    cause: 'js-heap',
    say: () =>
      'V8 reached its JavaScript heap limit ("JavaScript heap out of memory"): raise --max-old-space-size or keep less on the JS heap',
  },
  {
    pattern:
      /CUDA out of memory|cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED|out of memory on device|CUDA_ERROR_OUT_OF_MEMORY/,
    cause: 'gpu-memory',
    say: () => 'the GPU ran out of device memory (the runtime reported an out-of-memory error on the device)',
  },
  {
    pattern: /libgomp: Thread creation failed/,
    cause: 'address-space',
    say: (limits) =>
      'libgomp could not create its OpenMP threads ("Thread creation failed"): each thread stack is mapped address space' +
      (limits.as !== undefined ? ` under RLIMIT_AS ${formatBytes(limits.as)}` : ''),
  },
];

function lastState(last: DiagnosisInput['last']): string | undefined {
  if (!last) return undefined;
  const parts: string[] = [];
  if (last.phase) parts.push(`phase "${last.phase}"`);
  if (last.rss !== undefined && last.rss >= 0) parts.push(`RSS ${formatBytes(last.rss)}`);
  if (last.heap !== undefined) parts.push(`heap ${formatBytes(last.heap)}`);
  if (last.anon !== undefined) parts.push(`anonymous mappings ${formatBytes(last.anon)}`);
  if (last.file !== undefined) parts.push(`file mappings ${formatBytes(last.file)}`);
  return parts.length ? `last seen before the kill: ${parts.join(', ')}` : undefined;
}

/** Causes where memory ran out: who held it is part of the evidence. */
const HOLDERS_EXPLAIN: readonly Cause[] = [
  'address-space',
  'data-limit',
  'commit-limit',
  'overcommit-heuristic',
  'cgroup-oom-kill',
  'host-oom-kill',
];

/** "at the kill: 210 MiB held by hold_big (holder.c:12), 90 MiB by grow_steps (holder.c:25)". */
function holdersSentence(heldBy: NonNullable<DiagnosisInput['heldBy']>): string | undefined {
  const top = heldBy.holders.slice(0, 3);
  if (!top.length) return undefined;
  const parts = top.map((h, i) => `${formatBytes(h.bytes)} ${i === 0 ? 'held by' : 'by'} ${h.site}`);
  return `${heldBy.moment}: ${parts.join(', ')} (sampled estimates)`;
}

export function diagnose(input: DiagnosisInput): Diagnosis {
  const diagnosis = diagnoseEnding(input);
  const held = input.heldBy && HOLDERS_EXPLAIN.includes(diagnosis.cause) ? holdersSentence(input.heldBy) : undefined;
  if (held) diagnosis.evidence.push(held);
  if (input.stoppedBy !== undefined) {
    if (input.slurm && input.stoppedBy === 'SIGTERM') {
      diagnosis.evidence.unshift(
        `inside Slurm job ${input.slurm.jobId}, a SIGTERM comes from Slurm: scancel, the time limit, or OverMemoryKill ` +
          `once the step's summed RSS passes ${input.slurm.request ?? 'its request'}; ` +
          `\`clip-mem slurm explain ${input.slurm.jobId}\` says which`,
      );
    }
    diagnosis.evidence.unshift(`stopped by ${input.stoppedBy} to clip-mem: killed with its process group`);
  } else if (input.timeoutMs !== undefined) {
    diagnosis.evidence.unshift(`killed with its process group after the ${input.timeoutMs / 1000} s timeout`);
  }
  return diagnosis;
}

type Victim = NonNullable<DiagnosisInput['oomKilled']>[number];

function victimName(v: Victim): string {
  return `pid ${v.pid} (${v.name})`;
}

/** "; its RSS was 56 MiB when killed" for what the kernel logged. */
function victimRss(victims: Victim[]): string {
  const known = victims.filter((v) => v.rss !== null);
  if (!known.length) return '';
  if (victims.length === 1) return `; its RSS was ${formatBytes(known[0]!.rss!)} when killed`;
  return `; RSS when killed: ${known.map((v) => `pid ${v.pid} ${formatBytes(v.rss!)}`).join(', ')}`;
}

/** "pid 12 (python3) was killed by the kernel OOM killer in cgroup X; its RSS was ..." as far as the evidence names it. */
function othersKilled(others: Victim[], input: DiagnosisInput, where: string): string {
  if (others.length) {
    const verb = others.length === 1 ? 'was' : 'were';
    return `${others.map(victimName).join(', ')} ${verb} killed by the kernel OOM killer ${where}${victimRss(others)}`;
  }
  const unclean = input.endedUnclean ?? [];
  const guess = unclean.length
    ? `, possibly ${unclean.map((d) => `pid ${d.pid} (${d.exe})`).join(' or ')} (its record ends without a clean exit)`
    : '';
  const why = input.kernelLog ? ` (not named: ${input.kernelLog})` : '';
  return `another process in its group${guess} was killed by the kernel OOM killer ${where}${why}`;
}

/**
 * What PyTorch and Python print when a write into shared memory failed: a DataLoader worker killed by
 * SIGBUS (its guess: "out of shared memory"), or the file for a tensor refused (ENOSPC).
 */
const SHARED_MEMORY_FAILED =
  /insufficient shared memory|out of shared memory|unable to (?:write to|allocate shared memory\(shm\) for) file <?\/torch_|No space left on device.*\/dev\/shm|\/dev\/shm.*No space left on device/;

/** The free room left in /dev/shm at its fullest for it to count as full: one 1 MiB write, or 2% of it. */
function sharedMemoryFull(shm: SharedMemoryWatch): boolean {
  return shm.size - shm.peakUsed <= Math.max(2 ** 20, 0.02 * shm.size);
}

/**
 * A command that failed as a write into shared memory failed (its output says so): the shared memory file
 * system filling up is the cause when its use was seen at full during the run, `unknown` otherwise.
 */
function sharedMemoryEnding(input: DiagnosisInput): Diagnosis | undefined {
  const { output, exit } = input;
  const match = output ? SHARED_MEMORY_FAILED.exec(output) : null;
  const shm = input.sharedMemory;
  // Killed by SIGBUS itself, saying nothing: shared memory only when it was seen full (a truncated file
  // mapping or a hardware fault raise SIGBUS too).
  if (!match && !(exit.signal === 'SIGBUS' && shm && sharedMemoryFull(shm))) return undefined;
  const line = match && output ? outputLine(output, match.index) : undefined;
  const lead = line
    ? `${endingOf(exit)} after a write into shared memory failed, as its output says: "${line}"`
    : 'killed by SIGBUS, as a process writing into a shared mapping is when the file system behind it is full';
  if (!shm)
    return {
      cause: 'unknown',
      evidence: [
        lead,
        'missing: the size and use of the shared memory file system: /dev/shm is not a tmpfs of its own here',
      ],
    };
  const figures =
    `/dev/shm, the shared memory file system (a tmpfs), holds ${formatBytes(shm.size)}; its use peaked at ` +
    `${formatBytes(shm.peakUsed)} during the run (read every ${shm.readEveryMs} ms; ${formatBytes(shm.usedAtStart)} at the start)`;
  if (sharedMemoryFull(shm))
    return {
      cause: 'shared-memory',
      evidence: [
        lead,
        `${figures}: full`,
        'a write into shared memory past what that file system holds kills the writer with SIGBUS, or is refused (ENOSPC)',
      ],
    };
  return {
    cause: 'unknown',
    evidence: [
      lead,
      `${figures}, short of full`,
      "missing: /dev/shm's use at the moment the write failed, which may fall between two reads; watch `df /dev/shm` while the job runs",
    ],
  };
}

/** The first memory cgroup made outside clip-mem that counted an OOM kill during the run (its own group first). */
export function groupThatCountedKills(groups: readonly LimitedGroupKills[] | undefined): LimitedGroupKills | undefined {
  return groups?.find((group) => (group.oomKills ?? 0) > 0);
}

/** A shell or wrapper passing on its command's SIGKILL: its ending follows from the kill. */
const PASSED_ON_KILL =
  'the command exited with code 137 (128 + SIGKILL), as a shell or wrapper does when the process it waits for is killed';

/** Where the kernel log says a victim was killed: "in cgroup /x (a memory cgroup this run did not make)". */
function victimsPlace(victim: Victim, slurm: DiagnosisInput['slurm']): string {
  if (!victim.cgroupLimit || victim.cgroup === '') return 'with the host out of memory (no cgroup limit)';
  if (slurm?.cgroup && victim.cgroup.startsWith(slurm.cgroup)) return `in the cgroup of ${slurmJobName(slurm)}`;
  return `in cgroup ${victim.cgroup} (a memory cgroup this run did not make)`;
}

/**
 * What a program prints when a process it started died by SIGKILL, and the pids it names: PyTorch's
 * DataLoader and torchrun name them; concurrent.futures, joblib's loky and subprocess do not.
 */
const WORKER_KILLED: { pattern: RegExp; pids?: (match: RegExpExecArray) => number[] }[] = [
  {
    pattern: /DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) is killed by signal: Killed/,
    pids: (match) => match[1]!.split(/[, ]+/).filter(Boolean).map(Number),
  },
  { pattern: /Signal 9 \(SIGKILL\) received by PID (\d+)/, pids: (match) => [Number(match[1])] },
  { pattern: /A process in the process pool was terminated abruptly/ },
  { pattern: /The exit codes of the workers are \{[^}]*SIGKILL/ },
  { pattern: /died with <Signals\.SIGKILL: 9>/ },
];

/**
 * The line of the output that says a process the command started died by SIGKILL; a line naming pids
 * counts only when one is a process the kernel log says its OOM killer killed (unless the log's pids are
 * another PID namespace's). Undefined when the output says no such thing.
 */
function workerKilledSign(output: string | undefined, others: Victim[]): string | undefined {
  if (!output) return undefined;
  const comparable = others.length > 0 && others.every((v) => v.main !== null);
  for (const { pattern, pids } of WORKER_KILLED) {
    const match = pattern.exec(output);
    if (!match) continue;
    if (pids && comparable && !pids(match).some((pid) => others.some((v) => v.pid === pid))) continue;
    return outputLine(output, match.index);
  }
  return undefined;
}

/** What a program prints when memory was refused to it: Python's MemoryError, strerror(ENOMEM), C++'s bad_alloc. */
const REFUSAL_SAID = /^MemoryError\b|Cannot allocate memory|\[Errno 12\]|std::bad_alloc/m;

/**
 * The program says memory was refused, and no tracked call in the run was: a check inside the program, or
 * a call the tracker does not hook, refused it; which, and whether for memory, is not known.
 */
function refusalWithoutRecord(input: DiagnosisInput): Diagnosis | undefined {
  const match = input.output ? REFUSAL_SAID.exec(input.output) : null;
  if (!match || !input.output) return undefined;
  if (input.failures.length || input.descendantFailures?.length) return undefined;
  return {
    cause: 'unknown',
    evidence: [
      `${endingOf(input.exit)}; its output says memory was refused ("${outputLine(input.output, match.index)}"), but no tracked call was`,
      'a refusal the tracker does not see: a size check inside the program (Python raises MemoryError for a ' +
        'request larger than it can index, e.g. [0] * 2**62, without asking for memory), or a call it does not hook ' +
        '(a raw system call, shmget, mlock, io_uring)',
      'missing: the refused call, its size and what refused it; the stack of the message (a Python traceback) says ' +
        'which code asked',
    ],
  };
}

/**
 * Killed by a signal from another process, no kernel OOM kill of it counted, while a user-space OOM killer
 * runs here: it kills by SIGTERM or SIGKILL when memory runs low, and the kernel's counters never see it.
 */
function userspaceKill(input: DiagnosisInput, ourKill: boolean): Diagnosis | undefined {
  const { exit } = input;
  const killers = input.userspaceOomKillers ?? [];
  if (ourKill || !killedOrTerminated(exit) || !killers.length) return undefined;
  const names = killers.map((k) => `${k.name} (pid ${k.pid})`).join(', ');
  const evidence = [
    `${endingOf(exit)}: a signal from another process, and the kernel counted no OOM kill of it; why is not known`,
    `${names} runs here: a user-space OOM killer, which kills by SIGTERM or SIGKILL when memory runs low, unseen by the kernel's OOM counters and log`,
    `missing: who sent the signal; ${killers[0]!.name}'s own log says whether it did (journalctl -u ${killers[0]!.name})`,
  ];
  const last = lastState(input.last);
  if (last) evidence.push(last);
  return { cause: 'unknown', evidence };
}

/** The whole line of the output around a position, trimmed. */
function outputLine(output: string, index: number): string {
  const end = output.indexOf('\n', index);
  return output.slice(output.lastIndexOf('\n', index) + 1, end < 0 ? undefined : end).trim();
}

function endingOf(exit: DiagnosisInput['exit']): string {
  return exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

type SlurmFacts = NonNullable<DiagnosisInput['slurm']>;

/** "Slurm job 12 (step 0), --mem=300M". */
export function slurmJobName(slurm: { jobId: string; stepId: string | null; request: string | null }): string {
  const step = slurm.stepId !== null ? ` (step ${slurm.stepId})` : '';
  return `Slurm job ${slurm.jobId}${step}, ${slurm.request ?? 'memory request not known'}`;
}

/** The arithmetic of a kill by the job's cgroup: the limit the request set and how close the step came to it. */
function slurmLimitEvidence(slurm: SlurmFacts): string[] {
  const evidence: string[] = [];
  if (slurm.limit !== null) {
    const where = slurm.cgroup ? `the job's cgroup ${slurm.cgroup} holds it to` : 'the request allows';
    evidence.push(`${where} ${formatBytes(slurm.limit)} (${slurm.limit} B) of RSS + page cache`);
  }
  if (slurm.peak !== null && slurm.limit !== null) {
    // The kernel reclaims and kills a few pages short of the limit.
    const short = slurm.limit - slurm.peak;
    const relation =
      short <= 0 ? 'at the limit' : short < 2 ** 20 ? `at the limit (within ${formatBytes(short)})` : 'below the limit';
    evidence.push(
      `the step's memory peaked at ${formatBytes(slurm.peak)} (${slurm.peak} B), ${relation} ` +
        `(memory.max_usage_in_bytes; every process of the step counts, clip-mem's own included)`,
    );
  }
  if (slurm.request === null && slurm.requestUnknown)
    evidence.push(`the request is not known: ${slurm.requestUnknown}`);
  return evidence;
}

/** What srun or slurmstepd said of an ending Slurm enforced, when the traced command is srun itself. */
function slurmOutputSign(output: string): Diagnosis | undefined {
  const oom = /Detected (\d+) oom-kill event\(s\) in StepId=(\d+)\.(\w+)/.exec(output);
  if (oom) {
    return {
      cause: 'cgroup-oom-kill',
      evidence: [
        `slurmstepd reports ${oom[1]} OOM kill(s) in Slurm job ${oom[2]} (step ${oom[3]}) ("Detected ${oom[1]} oom-kill ` +
          `event(s) in StepId=${oom[2]}.${oom[3]}"): the job's cgroup killed it at its --mem`,
      ],
    };
  }
  const over = /StepId=(\d+)\.(\w+) exceeded memory limit \((\d+) > (\d+)\), being killed/.exec(output);
  if (over) {
    const used = Number(over[3]);
    const limit = Number(over[4]);
    return {
      cause: 'cgroup-oom-kill',
      evidence: [
        `Slurm killed job ${over[1]} (step ${over[2]}) for exceeding its memory limit: ${formatBytes(used)} (${used} B) > ` +
          `${formatBytes(limit)} (${limit} B) ("exceeded memory limit (${used} > ${limit}), being killed")`,
        "Slurm's OverMemoryKill enforcement (JobAcctGatherParams=OverMemoryKill): no cgroup, the step's summed RSS " +
          'is polled and the step killed once over --mem, so it can overshoot the request before the kill',
      ],
    };
  }
  return undefined;
}

function diagnoseEnding(input: DiagnosisInput): Diagnosis {
  const { exit, limits, slurm } = input;
  const evidence: string[] = [];
  const killed = exit.signal === 'SIGKILL' || exit.code === 137;
  const last = lastState(input.last);
  // A kill clip-mem sent (timeout, or its own SIGINT/SIGTERM/SIGHUP) is not the kernel's.
  const ourKill = input.timeoutMs !== undefined || input.stoppedBy !== undefined;
  const victims = input.oomKilled ?? [];
  const mainVictim = victims.find((v) => v.main === true);
  const others = victims.filter((v) => v.main !== true);
  /** What happened to other processes of the run meanwhile, said after the main process's own ending. */
  const meanwhile: string[] = [];
  // Where the kernel log cannot be read, a kill counted by a cgroup someone else made (Slurm's has its own words).
  const outsideKill =
    victims.length === 0 && input.kernelLog !== undefined && !slurm
      ? groupThatCountedKills(input.memoryCgroups)
      : undefined;

  if (input.cgroup && (input.cgroup.oomKills ?? 0) > 0) {
    const kills = input.cgroup.oomKills ?? 0;
    const limit = input.cgroup.limit !== null ? ` at limit ${formatBytes(input.cgroup.limit)}` : '';
    const where = `in cgroup ${input.cgroup.path ?? ''}${limit}`.replace('  ', ' ');
    const peak = input.cgroup.peak
      ? `the cgroup's memory peaked at ${formatBytes(input.cgroup.peak)} (RSS + page cache)`
      : undefined;
    // The main process itself: the kernel log names it, or it died by SIGKILL that was not ours and the
    // log (unread, or naming fewer kills than the cgroup counted) does not put the kill elsewhere.
    const mainKilled = mainVictim !== undefined || (exit.signal === 'SIGKILL' && !ourKill && victims.length < kills);
    if (mainKilled) {
      evidence.push(`killed by the kernel OOM killer ${where}`);
      if (mainVictim) evidence.push(`the kernel log names it: ${victimName(mainVictim)}${victimRss([mainVictim])}`);
      else if (input.kernelLog) evidence.push(`which process was killed is not confirmed: ${input.kernelLog}`);
      if (peak) evidence.push(peak);
      if (last) evidence.push(last);
      if (others.length) evidence.push(`meanwhile ${othersKilled(others, input, where)}`);
      return { cause: 'cgroup-oom-kill', evidence };
    }
    if (exit.code === 137 && !ourKill) {
      // A shell (or a wrapper) reports its command's SIGKILL as 128 + 9: its ending follows from the kill.
      evidence.push(othersKilled(others, input, where), PASSED_ON_KILL);
      if (peak) evidence.push(peak);
      return { cause: 'cgroup-oom-kill', evidence };
    }
    meanwhile.push(`meanwhile ${othersKilled(others, input, where)}`);
    if (peak) meanwhile.push(peak);
  } else if (
    mainVictim &&
    !ourKill &&
    slurm &&
    mainVictim.cgroupLimit &&
    slurm.cgroup &&
    mainVictim.cgroup.startsWith(slurm.cgroup)
  ) {
    // Killed at the Slurm job's cgroup limit: Slurm enforcing the job's --mem.
    evidence.push(`killed by the kernel OOM killer in the cgroup of ${slurmJobName(slurm)}`);
    evidence.push(...slurmLimitEvidence(slurm));
    evidence.push(`the kernel log names it: ${victimName(mainVictim)}${victimRss([mainVictim])}`);
    if (last) evidence.push(last);
    return { cause: 'cgroup-oom-kill', evidence };
  } else if (mainVictim && !ourKill) {
    // Killed by the OOM killer outside any cgroup of this run: a cgroup above it (a scheduler's, a
    // container's) or the whole host, as the kernel logged it.
    const inGroup = mainVictim.cgroupLimit && mainVictim.cgroup !== '';
    evidence.push(
      inGroup
        ? `killed by the kernel OOM killer in cgroup ${mainVictim.cgroup} (a memory cgroup this run did not make)`
        : 'killed by the kernel OOM killer: the host ran out of memory (no cgroup limit)',
    );
    evidence.push(`the kernel log names it: ${victimName(mainVictim)}${victimRss([mainVictim])}`);
    if (last) evidence.push(last);
    return { cause: inGroup ? 'cgroup-oom-kill' : 'host-oom-kill', evidence };
  } else if (outsideKill) {
    // The kernel log cannot be read (an unprivileged container), but the container's own cgroup counted a
    // kill during the run: the same word as a cgroup of ours counting one.
    const group = outsideKill;
    const where =
      `in the memory cgroup ${group.path} (made outside clip-mem, limit ${formatBytes(group.limit)}), which counted ` +
      `${group.oomKills} OOM kill(s) during the run (memory.oom_control or memory.events)`;
    if (!ourKill && exit.signal === 'SIGKILL') {
      evidence.push(`killed by SIGKILL ${where}`, `which process was killed is not confirmed: ${input.kernelLog}`);
      if (last) evidence.push(last);
      return { cause: 'cgroup-oom-kill', evidence };
    }
    const someone = `a process was killed by the kernel OOM killer ${where}; which one is not known (${input.kernelLog})`;
    if (!ourKill && exit.code === 137) return { cause: 'cgroup-oom-kill', evidence: [someone, PASSED_ON_KILL] };
    meanwhile.push(`meanwhile ${someone}`);
  } else if (others.length && !mainVictim) {
    // The kernel log names a kill of another process of the run, in a cgroup someone else made (a
    // container's, a Slurm job's) or with the host out of memory: the same as a kill in a cgroup of ours.
    const where = victimsPlace(others[0]!, slurm);
    if (exit.code === 137 && !ourKill) {
      return {
        cause: others[0]!.cgroupLimit ? 'cgroup-oom-kill' : 'host-oom-kill',
        evidence: [othersKilled(others, input, where), PASSED_ON_KILL],
      };
    }
    meanwhile.push(`meanwhile ${othersKilled(others, input, where)}`);
  }
  if (killed && !ourKill && slurm && (slurm.oomKills ?? 0) > 0 && victims.length === 0) {
    // The kernel log is not read (or does not name it), but the job's cgroup counted the kill: /proc/vmstat
    // counts cgroup kills too, so this is Slurm's --mem, not the host running out of memory.
    evidence.push(
      `killed by SIGKILL while the cgroup of ${slurmJobName(slurm)} counted ${slurm.oomKills} OOM kill(s) (memory.oom_control)`,
    );
    evidence.push(...slurmLimitEvidence(slurm));
    if (input.kernelLog) evidence.push(`which process was killed is not confirmed: ${input.kernelLog}`);
    if (last) evidence.push(last);
    return { cause: 'cgroup-oom-kill', evidence };
  }
  const slurmSaid = input.output && !ourKill ? slurmOutputSign(input.output) : undefined;
  if (slurmSaid) return slurmSaid;
  // The host-wide counter counts every OOM kill on the machine, in any cgroup, of any process: alone it is
  // never proof that this one was killed (a kill clip-mem sent at the timeout is not the kernel's either).
  if (killed && !ourKill && (input.hostOomKills ?? 0) > 0) {
    const userspace = userspaceKill(input, ourKill);
    if (userspace) return userspace;
    const counted = `/proc/vmstat counted ${input.hostOomKills} OOM kill(s) on this host during the run`;
    const meanwhileOthers = others.length ? [`meanwhile ${othersKilled(others, input, '')}`.trimEnd()] : [];
    if (input.kernelLog === undefined && victims.every((v) => v.main !== null)) {
      // The kernel log names each process its OOM killer kills, and names none of this one.
      evidence.push(
        `${endingOf(exit)}, but not by the OOM killer: the kernel log names no OOM kill of it, so another process sent the signal (${counted}: of other processes)`,
        ...meanwhileOthers,
      );
      if (last) evidence.push(last);
      return { cause: 'not-memory', evidence };
    }
    evidence.push(
      `${endingOf(exit)}, possibly by the host's OOM killer: ${counted}, but ` +
        (input.kernelLog
          ? `the kernel log cannot say whose (${input.kernelLog})`
          : "the kernel log's pids cannot be compared with this run's (another PID namespace)"),
      ...meanwhileOthers,
      'missing: the kernel log (/dev/kmsg, readable as root or with CAP_SYSLOG) naming the processes the OOM killer killed',
    );
    if (last) evidence.push(last);
    return { cause: 'unknown', evidence };
  }

  if (
    input.notTracked &&
    exit.signal === 'SIGSEGV' &&
    limits.as !== undefined &&
    input.imageBytes !== undefined &&
    limits.as < input.imageBytes
  ) {
    // The kernel checks RLIMIT_AS while exec maps the new image; past the point of no return it can only
    // kill it, with SIGSEGV, before anything (the tracker included) runs.
    return {
      cause: 'address-space',
      evidence: [
        `killed by SIGSEGV as it started: RLIMIT_AS ${formatBytes(limits.as)} is below the ` +
          `${formatBytes(input.imageBytes)} that exec maps for the program and its dynamic loader, so the new ` +
          'image could not even be mapped',
        input.notTracked,
        ...meanwhile,
      ],
    };
  }

  // The loader's complaint about clip-mem's own tracker is about tracing, not about the program.
  const output = input.output?.replace(/^.*from LD_PRELOAD cannot be preloaded.*$/gm, '');
  let found: Diagnosis | undefined;
  for (const sign of outputSigns) {
    if (output && sign.pattern.test(output) && (sign.when?.(limits) ?? true)) {
      found = { cause: sign.cause, evidence: [sign.say(limits, output)] };
      break;
    }
  }
  const real = input.failures.filter((f) => !f.injected);
  // The first failure a memory limit explains; a refusal for another reason (an mprotect EACCES, an mmap
  // EEXIST of MAP_FIXED_NOREPLACE) is the cause only when no failure was for lack of memory.
  const explanations = real
    .map((failure) => explainFailure(failure, limits, input.output, input.tasks))
    .filter((e): e is Diagnosis => e !== undefined);
  const explained = explanations.find((e) => e.cause !== 'not-memory') ?? explanations[0];
  if (found?.cause === 'gpu-memory' && explained?.cause !== 'gpu-memory') {
    // The framework's message without a recorded device failure (PyTorch refuses past its own memory
    // fraction without calling CUDA): its figures are the evidence.
    const fromOutput = gpuFromOutput(input.output);
    if (fromOutput) found = { cause: 'gpu-memory', ...fromOutput };
  }
  if (explained) {
    // A recorded device failure carries the device's arithmetic and reads the framework's message itself.
    if (!found || (explained.cause === 'gpu-memory' && found.cause === 'gpu-memory')) found = explained;
    else if (found.cause === explained.cause) found.evidence.push(...explained.evidence);
    else if (found.cause === 'js-heap' && explained.cause !== 'not-memory') {
      // V8 also aborts with "JavaScript heap out of memory" when the OS refuses one of its own
      // allocations: a limit that explains the refusal is the cause, V8's abort its consequence.
      found = {
        cause: explained.cause,
        evidence: [
          ...explained.evidence,
          `V8 then aborted ("JavaScript heap out of memory") because that allocation was refused`,
        ],
      };
    }
  }
  const injected = input.failures.length - real.length;
  const survived = exit.code === 0 && exit.signal === null;
  if (!found && !survived && exit.signal === null) {
    const started = startedProcessFailure(input);
    if (started) {
      started.evidence.push(...meanwhile);
      return started;
    }
  }
  const recovered = survived && real.length > 0 ? `recovered: ${real.length} allocation(s) failed, exit 0` : undefined;
  // A refusal no limit explains leaves the cause open: "not memory" would speak for a refusal of memory.
  const unexplained = survived || killed ? [] : unexplainedRefusals(input);
  if (unexplained.length && (!found || found.cause === 'not-memory')) {
    return {
      cause: 'unknown',
      evidence: [
        `${endingOf(exit)}; why is not known: an allocation was refused as if memory ran out, and no limit clip-mem reads explains it`,
        ...unexplained.map(
          ({ who, failure }) => `${who}${describeRequest(failure)} failed with ${errnoName(failure.errno)}`,
        ),
        ...new Set(unexplained.map(({ failure }) => otherRefusers(failure))),
        ...(found ? found.evidence : []),
        'missing: what refused it: at each failure clip-mem reads RLIMIT_AS, RLIMIT_DATA, vm.max_map_count and the ' +
          "commit limit, and none was reached; what else refuses memory shows in the kernel's own accounting " +
          '(/proc/meminfo, the cgroup files) at that moment',
        ...meanwhile,
      ],
    };
  }
  if (found) {
    if (recovered) found.evidence.push(recovered);
    else if (real.length > 1) found.evidence.push(`${real.length} allocations failed in all`);
    if (injected) found.evidence.push(`${injected} failure(s) were injected by CLIPMEM_FAIL`);
    found.evidence.push(...meanwhile);
    return found;
  }
  if (injected) evidence.push(`${injected} failure(s) were injected by CLIPMEM_FAIL (fault injection, not a limit)`);
  for (const failure of real) {
    evidence.push(
      `${describeRequest(failure)} failed with ${errnoName(failure.errno)}, and no known limit explains it`,
    );
  }
  if (limits.data !== undefined && input.filePeak && input.filePeak > 0) {
    evidence.push(
      `file mappings peaked at ${formatBytes(input.filePeak)}; read-only file mappings are not data, so ` +
        `RLIMIT_DATA ${formatBytes(limits.data)} does not count them (RLIMIT_AS would)`,
    );
  }
  if (input.lostTrack) evidence.push(input.lostTrack);
  if (input.notTracked) {
    // Without a record, "no allocation failed" is not known: say what is missing, never none or not-memory.
    evidence.push(input.notTracked);
    evidence.unshift(
      survived
        ? 'exited with code 0, but whether any allocation failed is not known'
        : `${endingOf(exit)}${killed && !ourKill ? ' (no OOM killer counted a kill)' : ''}; why is not known`,
    );
    evidence.push(
      'missing: the allocation record (which allocation failed, its size, errno and the limit it hit); ' +
        'to get it, trace a dynamically linked, non-setuid program with TMPDIR writable and not full',
    );
    evidence.push(...meanwhile);
    if (last && killed) evidence.push(last);
    return { cause: 'unknown', evidence };
  }
  if (input.lostTrack && !survived) {
    // What ran after the exec is not in the record: "no allocation failed" would speak for a program never seen.
    evidence.unshift(
      `${endingOf(exit)}; why is not known: the program it exec'd was not tracked, and no allocation failed before`,
    );
    evidence.push(
      "missing: the allocations of the program it exec'd (which failed, its size, errno and the limit it hit); " +
        'to get them, trace that program itself, dynamically linked, with LD_PRELOAD kept',
    );
    evidence.push(...meanwhile);
    return { cause: 'unknown', evidence };
  }
  if (survived) {
    // After a lost track, only what ran before the exec is known not to have failed.
    const noFailure = input.lostTrack
      ? '; no allocation failed before the exec (what ran after it is not tracked)'
      : '; no allocation failed';
    evidence.unshift('exited with code 0' + (input.failures.length ? '' : noFailure));
    if (recovered) evidence.push(recovered);
    evidence.push(...meanwhile);
    return { cause: 'none', evidence };
  }
  const sharedMemory = ourKill ? undefined : sharedMemoryEnding(input);
  if (sharedMemory) return sharedMemory;
  const workerKilled = meanwhile.length && !ourKill ? workerKilledSign(input.output, others) : undefined;
  if (workerKilled) {
    // The command says itself that it failed because a process it started died by SIGKILL, and the kernel
    // (its log, or the run's cgroup's count) says the OOM killer killed one of the run's processes.
    return {
      cause: others.length && !others[0]!.cgroupLimit ? 'host-oom-kill' : 'cgroup-oom-kill',
      evidence: [
        `${endingOf(exit)} because a process it started was killed, as its output says: "${workerKilled}"`,
        ...meanwhile.map((line) => line.replace(/^meanwhile /, '')),
      ],
    };
  }
  if (meanwhile.length) {
    // Another process of the group was OOM-killed and this one ended otherwise: whether its ending follows
    // from that kill is more than the evidence shows.
    // The kill in the first line: a caller that shows one line (fit's table of runs) still shows it.
    evidence.unshift(
      `${endingOf(exit)}, and another process in its cgroup was OOM-killed during the run; no allocation of its own failed for lack of memory`,
    );
    evidence.push(...meanwhile);
    evidence.push(
      `whether the command ${ourKill ? 'hung' : `${endingOf(exit)}`} because of that kill is not known: ` +
        'its own output and exit code do not say',
    );
    if (last && killed) evidence.push(last);
    return { cause: 'unknown', evidence };
  }
  const unseen = [
    ...(input.untrackedStarted ?? []).map((p) => `pid ${p.pid} (${p.exe}) ran untracked`),
    ...(input.endedUnclean ?? []).map(
      (p) =>
        `the record of pid ${p.pid} (${p.exe}) ends without a clean exit (killed, or it exec'd an untracked program)`,
    ),
  ];
  if (!killed && unseen.length) {
    // "No allocation failed" holds for what was tracked only: the exit code may come from what was not.
    evidence.unshift(
      `${endingOf(exit)}; no tracked process had an allocation refused, but not all that ran was tracked; why is not known`,
      ...unseen,
    );
    evidence.push(
      'missing: the allocations of the processes not tracked (static binaries, setuid programs, LD_PRELOAD cleared); ' +
        'to get them, trace those programs themselves, dynamically linked, with LD_PRELOAD kept',
    );
    return { cause: 'unknown', evidence };
  }
  const refusalSaid = killed ? undefined : refusalWithoutRecord(input);
  if (refusalSaid) return refusalSaid;
  const userspace = userspaceKill(input, ourKill);
  if (userspace) return userspace;
  evidence.unshift(
    killed
      ? `${endingOf(exit)}, but no OOM killer counted a kill (not an out-of-memory kill)`
      : `${endingOf(exit)}; no allocation failed for lack of memory`,
  );
  if (last && killed) evidence.push(last);
  // A process started without a tracked call (Python's subprocess uses vfork) is refused in silence.
  const refusedTasks = taskRefusals(input.tasks);
  if (refusedTasks) evidence.push(refusedTasks);
  return { cause: 'not-memory', evidence };
}
