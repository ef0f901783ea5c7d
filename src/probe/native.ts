// The slice of the C++ addon the probe uses (native/addon/probe_limits.cc, probe_allocator.cc, gpu.cc).
import { loadAddon } from '../core/native';
import type { Limit } from '../core/field';

export interface SoftHard {
  soft: Limit;
  hard: Limit;
}

export const RESOURCE_LIMITS = ['as', 'data', 'rss', 'stack', 'memlock', 'nproc'] as const;
export type ResourceLimitName = (typeof RESOURCE_LIMITS)[number];
export type ResourceLimits = Record<ResourceLimitName, SoftHard>;

/** glibc's mallinfo2(): bytes the C heap holds from the kernel and how much of it is in use. */
export interface Mallinfo {
  /** Main arena bytes obtained with brk. */
  arena: number;
  /** Bytes in blocks served directly by mmap. */
  hblkhd: number;
  /** Number of such blocks. */
  hblks: number;
  /** Bytes allocated (in use). */
  uordblks: number;
  /** Bytes free but held by malloc. */
  fordblks: number;
  /** Bytes at the top of the heap that free could give back. */
  keepcost: number;
}

/** One binary search: the largest size that succeeded now, and how the next size up failed. */
export interface AllocationSearch {
  largest: number;
  /** Smallest size that failed (0 when even the 128 TiB upper bound succeeded). */
  failedAt: number;
  /** errno name of that failure, e.g. "ENOMEM". */
  errno?: string;
  /** strerror text of that failure. */
  error?: string;
}

export interface AllocatorProbe {
  /** Largest block malloc returns (then frees). */
  malloc: AllocationSearch;
  /** Largest anonymous read-write private mapping. */
  readWriteMapping: AllocationSearch;
  /** Largest PROT_NONE reservation: the largest contiguous free address range this process may map. */
  reservation: AllocationSearch;
  /** All address space still reservable, reserving the largest block repeatedly (then releasing all). */
  reservable: { total: number; blocks: number; errno?: string; error?: string };
  pageSize: number;
}

export interface NvmlProcess {
  pid: number;
  name: string;
  /** Absent when NVML cannot attribute the memory (e.g. processes in other containers). */
  used?: number;
}

export interface NvmlDevice {
  index: number;
  name: string;
  total?: number;
  used?: number;
  free?: number;
  memoryError?: string;
  processes?: NvmlProcess[];
  processesError?: string;
}

export interface NvmlReport {
  library: string;
  /** Set when NVML could not be used: why. */
  unavailable?: string;
  driverVersion?: string;
  devices?: NvmlDevice[];
}

export interface CudaDevice {
  ordinal: number;
  name: string;
  /** cuMemGetInfo in this process's primary context. */
  free?: number;
  total?: number;
  error?: string;
}

export interface CudaReport {
  library: string;
  unavailable?: string;
  /** cuDriverGetVersion, e.g. 12040 for 12.4. */
  driverVersion?: number;
  devices?: CudaDevice[];
}

export interface GpuReport {
  nvml: NvmlReport;
  cuda: CudaReport;
}

interface ProbeAddon {
  readResourceLimits(): ResourceLimits;
  readMallinfo(): Mallinfo;
  probeAllocator(): AllocatorProbe;
  probeGpu(nvmlLibrary: string, cudaLibrary: string): GpuReport;
}

export function probeAddon(): ProbeAddon {
  return loadAddon<ProbeAddon>();
}
