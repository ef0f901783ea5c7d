// The allocation record written by the interposer (native/record/record.h), read through the addon:
// live while the process runs, or after it ended (the file survives a SIGKILL).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAddon } from '../core/native';

/**
 * A hooked function, as the record names it. The list itself is native/record/hooks.h: at run time take it
 * from trackedFunctions(); this union must name the same functions (native/test/hook_list_test.cc fails
 * the native tests on a drift).
 */
export type TrackedFn =
  | 'malloc'
  | 'calloc'
  | 'realloc'
  | 'reallocarray'
  | 'free'
  | 'posix_memalign'
  | 'aligned_alloc'
  | 'memalign'
  | 'valloc'
  | 'pvalloc'
  | 'mmap'
  | 'mmap64'
  | 'munmap'
  | 'mremap'
  | 'pthread_create'
  | 'mprotect'
  | 'fork';

/**
 * A GPU allocation function the tracker interposes (CUDA runtime and driver), as a failure's `fn` names
 * it. The list is native/record/device_hooks.h (at run time: deviceFunctions() of the addon); the native tests
 * check that this union names the same functions.
 */
export type DeviceFn =
  | 'cudaMalloc'
  | 'cudaMallocManaged'
  | 'cudaMallocAsync'
  | 'cudaMallocHost'
  | 'cudaHostAlloc'
  | 'cudaFree'
  | 'cudaFreeAsync'
  | 'cudaFreeHost'
  | 'cuMemAlloc_v2'
  | 'cuMemAllocManaged'
  | 'cuMemAllocAsync'
  | 'cuMemAllocFromPoolAsync'
  | 'cuMemAllocHost_v2'
  | 'cuMemCreate'
  | 'cuMemAddressReserve'
  | 'cuMemFree_v2'
  | 'cuMemFreeAsync'
  | 'cuMemFreeHost'
  | 'cuMemRelease'
  | 'cuGetProcAddress'
  | 'cuGetProcAddress_v2';

/** Another process holding memory on the device at a GPU failure (NVML). */
export interface RecordGpuProcess {
  pid: number;
  /** null: NVML could not attribute its memory. */
  bytes: number | null;
  name: string;
}

/** A failed GPU allocation's own fields: the device's state at that moment. Unknown figures are null. */
export interface RecordGpuFailure {
  /** Whose status `status` is: the runtime's cudaError_t or the driver's CUresult. */
  api: 'runtime' | 'driver';
  status: number;
  /** CUDA ordinal of the current context. */
  device: number | null;
  /** cuMemGetInfo through the real driver, in the failing thread's context. */
  totalBytes: number | null;
  freeBytes: number | null;
  /** NVML: this process's bytes on the device (null where NVML could not say, e.g. in a pid namespace). */
  processBytes: number | null;
  /** The tracker's own count of this process's live allocations on the device. */
  trackedBytes: number;
  otherProcessCount: number;
  /** Other processes on the device, largest first (up to 4). */
  otherProcesses: RecordGpuProcess[];
}

/** GPU memory the process allocated on one device (CUDA ordinal). */
export interface RecordDevice {
  ordinal: number;
  live: number;
  peak: number;
  allocations: number;
  frees: number;
  failures: number;
  largest: number;
  totalBytes: number | null;
}

export interface RecordFrame {
  address: string;
  /** Loaded object holding the address, and the address relative to its load base (for addr2line). */
  module?: string;
  offset?: string;
  /** Nearest exported symbol (dladdr in the traced process), demangled. */
  symbol?: string;
}

/** One failed allocation, exactly as asked. Byte figures are -1 where /proc could not be read. */
export interface RecordFailure {
  sequence: number;
  fn: TrackedFn | DeviceFn;
  /** Requested bytes (calloc/reallocarray: nmemb*size, low 64 bits if sizeOverflow; mremap: new size; mprotect: length). */
  size: number;
  sizeOverflow: boolean;
  /** Made to fail by CLIPMEM_FAIL fault injection, not by the system. */
  injected: boolean;
  nmemb: number;
  elemSize: number;
  alignment: number;
  oldSize: number;
  /** mmap/mremap: hint or old address; mprotect: start of the range. */
  address: string;
  /** mmap, mprotect. */
  prot: number;
  /** mmap/mremap flags; mprotect: the mapping's MAP_SHARED or MAP_PRIVATE (| MAP_ANONYMOUS), from /proc/self/maps. */
  flags: number;
  fd: number;
  /** mmap: the file of fd; mprotect: the file mapped at the address ('' for anonymous memory). */
  fdPath: string;
  offset: number;
  errno: number;
  vmSize: number;
  vmData: number;
  rss: number;
  mapCount: number;
  maxMapCount: number;
  commitLimit: number;
  committedAs: number;
  memTotal: number;
  overcommitMemory: number;
  tid: number;
  timeNs: number;
  heapCurrent: number;
  anonMapped: number;
  fileMapped: number;
  phase: string;
  stack: RecordFrame[];
  /** Set for a GPU allocation (fn a DeviceFn; errno is then 0), else null. */
  gpu: RecordGpuFailure | null;
  /** The failing thread's Python stack, read from CPython's structures at the failure; null: not CPython. */
  python: PythonStack | null;
}

/** A Python frame: the line executing in the function (qualified name from 3.11). */
export interface PythonFrame {
  file: string;
  /** -1 where the line table has none for the instruction. */
  line: number;
  function: string;
}

export interface PythonStack {
  /** "3.11" */
  version: string;
  /**
   * captured: the frames of the failing thread (none: it ran no Python code); no-thread: the thread has no
   * Python thread state (a thread Python did not start); unreadable: a read of the interpreter's memory
   * failed (the frames before it are kept).
   */
  status: 'captured' | 'no-thread' | 'unreadable' | 'none';
  /** Frames left out between the innermost 16 and the outermost 8 of a deeper stack (0: none). */
  omitted: number;
  /** Index in `frames` before which those were (16), or null when none were left out. */
  omittedAfter: number | null;
  /** Innermost first: the innermost 16, then the outermost 8 (where the program's own lines usually are). */
  frames: PythonFrame[];
}

export interface RecordSample {
  /** 1-based sample number (samples being written while the record was read are left out). */
  sequence: number;
  timeNs: number;
  heap: number;
  anon: number;
  file: number;
  reserved: number;
  vmSize: number;
  rss: number;
  phaseIndex: number;
  /** GPU bytes the process held, all devices together. */
  gpu: number;
}

export interface RecordPhase {
  index: number;
  timeNs: number;
  label: string;
  heap: number;
  anon: number;
  file: number;
}

export interface RecordCounters {
  heapCurrent: number;
  heapPeak: number;
  anonMapped: number;
  anonPeak: number;
  fileMapped: number;
  filePeak: number;
  /** PROT_NONE mappings (address space reserved, not committed). */
  reservedMapped: number;
  reservedPeak: number;
  /** munmap of ranges the tracker never saw mapped (mapped before it started, or inside libc). */
  unmappedUnknown: number;
  /** VmPeak / VmHWM from /proc at exit, or the largest sample if the process was killed. */
  vmPeak: number;
  rssPeak: number;
}

export interface AllocationRecord {
  path: string;
  pid: number;
  /** Set for a forked child: the pid it was forked from. */
  parentPid: number;
  /** 0 for a process's first program, +1 for each exec. */
  execGeneration: number;
  /** 'running' also for a process that was killed before its exit handlers ran. */
  state: 'running' | 'exited';
  startNs: number;
  endNs: number;
  /** What exit() or _exit() was given (& 0xff); null when neither ran (killed, exec'd, or still running). */
  exitCode: number | null;
  /** -1: unlimited. */
  rlimitAs: number;
  rlimitData: number;
  /** RLIMIT_AS and RLIMIT_DATA at the latest failure (-1: unlimited, or no failure yet): a program may lower its own. */
  failureRlimitAs: number;
  failureRlimitData: number;
  exe: string;
  counters: RecordCounters;
  calls: Record<TrackedFn, number>;
  /** Bucket b counts requests of 2^(b-1) < size <= 2^b bytes (bucket 0: 0 or 1 byte). */
  histogram: number[];
  threads: number;
  injectedFaults: number;
  failuresTotal: number;
  /** The latest failures (up to 256) in order. */
  failures: RecordFailure[];
  samplesTotal: number;
  timeline: RecordSample[];
  phasesTotal: number;
  currentPhase: number;
  phases: RecordPhase[];
  /** GPU memory per device the process allocated on or failed on. */
  devices: RecordDevice[];
  /** Page-locked host memory (cudaMallocHost, cudaHostAlloc, cuMemAllocHost). */
  pinnedCurrent: number;
  pinnedPeak: number;
  /** Device calls not counted: frees of unseen addresses, a full table, ordinals past 15. */
  deviceUntracked: number;
  heapProfile: RecordHeapProfile;
}

/** A call site of the sampled live-heap profile (native/preload/heap_profile.h). */
export interface RecordHeapSite {
  /** Index in the record's site table (snapshots name sites by it). */
  index: number;
  /** The hooked function of the sampled calls (malloc, posix_memalign, mmap, ...). */
  fn: TrackedFn;
  /** Estimated live bytes: each sampled block of S bytes counts S/p, p = 1 - exp(-S/sampleMean). */
  liveBytes: number;
  /** Sampled blocks live. */
  liveBlocks: number;
  /** Variance of liveBytes (bytes squared). */
  liveVariance: number;
  /** Estimated bytes ever allocated here. */
  allocBytes: number;
  /** The phase marker in force at its samples (1-based; 0: none): a site is a stack in a phase. */
  phaseIndex: number;
  /** Innermost first, from the caller of the hooked function; empty for the site gathering the rest once the table is full. */
  stack: RecordFrame[];
}

/** The top sites (largest first) at a moment: a new peak of the estimated live total, or a failure. */
export interface RecordHeapSnapshot {
  timeNs: number;
  /** The failure's sequence number (RecordFailure.sequence) for a snapshot at a failure; 0 at a peak. */
  failure: number;
  totalBytes: number;
  heapCurrent: number;
  anonMapped: number;
  phaseIndex: number;
  sites: { site: number; liveBytes: number; liveVariance: number }[];
}

export interface RecordHeapProfile {
  /** Mean bytes between samples (0: no profile). */
  sampleMean: number;
  samplesTotal: number;
  /** Samples not kept (the tracker's table of sampled blocks was full). */
  dropped: number;
  /** Estimated live bytes now (at the end, or at the kill), and its peak. */
  liveBytes: number;
  peakBytes: number;
  /** Every site claimed; their live figures are the current state. */
  sites: RecordHeapSite[];
  /** The latest snapshot at a new peak, or null. */
  peak: RecordHeapSnapshot | null;
  /** Snapshots at the first failures (up to 8), in order. */
  atFailures: RecordHeapSnapshot[];
}

interface RecordAddon {
  readRecord(file: string): AllocationRecord;
  releaseRecordSpace(file: string): number;
  trackedFunctions(): TrackedFn[];
  recordBytes: number;
}

/** The size of one process's record file (native/record/record.h), for messages about room for it. */
export function recordBytes(): number {
  return loadAddon<RecordAddon>().recordBytes;
}

let trackedFunctionList: readonly TrackedFn[] | undefined;

/** The hooked functions in the record's call-table order, from the addon (native/record/hooks.h). */
export function trackedFunctions(): readonly TrackedFn[] {
  trackedFunctionList ??= Object.freeze(loadAddon<RecordAddon>().trackedFunctions());
  return trackedFunctionList;
}

/** Reads one record file (a snapshot: call again to follow a live process). */
export function readRecord(file: string): AllocationRecord {
  return loadAddon<RecordAddon>().readRecord(file);
}

/**
 * Gives back the disk blocks of the parts of a record its process never wrote (they were reserved when the
 * record was made); only for a process that is gone. Returns the file's allocated bytes after.
 */
export function releaseRecordSpace(file: string): number {
  return loadAddon<RecordAddon>().releaseRecordSpace(file);
}

/** The records in a launcher's record directory, by pid then exec generation. */
export function listRecords(dir: string): { pid: number; generation: number; file: string }[] {
  const found: { pid: number; generation: number; file: string }[] = [];
  for (const name of fs.readdirSync(dir)) {
    const match = /^(\d+)\.(\d+)\.rec$/.exec(name);
    if (match) found.push({ pid: Number(match[1]), generation: Number(match[2]), file: path.join(dir, name) });
  }
  return found.sort((a, b) => a.pid - b.pid || a.generation - b.generation);
}

/** The record of the program a pid finally ran (its last exec), or undefined if it never loaded the tracker. */
export function finalRecordOf(dir: string, pid: number): string | undefined {
  return listRecords(dir)
    .filter((entry) => entry.pid === pid)
    .pop()?.file;
}
