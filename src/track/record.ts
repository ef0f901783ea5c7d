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
  | 'mprotect';

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
  fn: TrackedFn;
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
  /** -1: unlimited. */
  rlimitAs: number;
  rlimitData: number;
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
  trackedFunctions(): TrackedFn[];
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
