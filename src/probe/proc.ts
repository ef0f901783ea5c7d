// Readers for the kernel's view of this process and the host: /proc/self/status, /proc/self/maps,
// /proc/meminfo, the overcommit and map-count sysctls, transparent hugepages. Each value that cannot be
// read is "unknown: <why>"; the parsers are exported for other modules reading other pids' files.
import * as fs from 'node:fs';
import { loadAddon } from '../core/native';
import { Field, isUnknown, parseCount, parseField, readText, unknown } from '../core/field';

/** "Key:  value kB" lines (/proc/<pid>/status, /proc/meminfo) into bytes (kB -> bytes) or plain counts. */
export function parseKbLines(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^([\w()]+):\s+(\d+)(\s+kB)?\s*$/.exec(line);
    if (match) values.set(match[1]!, Number(match[2]) * (match[3] ? 1024 : 1));
  }
  return values;
}

function pick(values: Field<Map<string, number>>, file: string, key: string): Field<number> {
  if (isUnknown(values)) return values;
  return values.get(key) ?? unknown(`${file} has no ${key}`);
}

export interface ProcessStatus {
  /** Address space mapped (what RLIMIT_AS counts). */
  vmSize: Field<number>;
  vmPeak: Field<number>;
  /** Resident set (what cgroups and the OOM killer mostly see). */
  vmRss: Field<number>;
  vmHwm: Field<number>;
  /** Private writable memory (what RLIMIT_DATA counts since Linux 4.7). */
  vmData: Field<number>;
  vmStk: Field<number>;
  threads: Field<number>;
}

/** /proc/<pid>/status, or another file in its format. */
export function readProcessStatus(file = '/proc/self/status'): ProcessStatus {
  const values = parseField(readText(file), file, parseKbLines);
  return {
    vmSize: pick(values, file, 'VmSize'),
    vmPeak: pick(values, file, 'VmPeak'),
    vmRss: pick(values, file, 'VmRSS'),
    vmHwm: pick(values, file, 'VmHWM'),
    vmData: pick(values, file, 'VmData'),
    vmStk: pick(values, file, 'VmStk'),
    threads: pick(values, file, 'Threads'),
  };
}

/** Number of mappings (lines of /proc/<pid>/maps), to compare with vm.max_map_count. */
export function countMappings(file = '/proc/self/maps'): Field<number> {
  return parseField(readText(file), file, (text) => text.split('\n').filter((line) => line.length > 0).length);
}

export interface HostMemory {
  memTotal: Field<number>;
  memAvailable: Field<number>;
  swapTotal: Field<number>;
  swapFree: Field<number>;
  /** Most that may be committed when overcommit_memory is 2. */
  commitLimit: Field<number>;
  committedAs: Field<number>;
  /** 0: heuristic, 1: always, 2: never (strict accounting against CommitLimit). */
  overcommitMemory: Field<number>;
  overcommitRatio: Field<number>;
  overcommitKbytes: Field<number>;
  maxMapCount: Field<number>;
  /** The selected mode of /sys/kernel/mm/transparent_hugepage/enabled: always, madvise or never. */
  transparentHugepage: Field<string>;
}

function readNumberFile(file: string): Field<number> {
  return parseField(readText(file), file, parseCount);
}

/** The bracketed choice in a sysfs selector such as "always [madvise] never". */
export function selectedChoice(text: string): string | undefined {
  return /\[([^\]]+)\]/.exec(text)?.[1];
}

export interface HostSources {
  meminfo?: string;
  sysctlDirectory?: string;
  transparentHugepage?: string;
}

export function readHostMemory(sources: HostSources = {}): HostMemory {
  const meminfoFile = sources.meminfo ?? '/proc/meminfo';
  const sysctl = sources.sysctlDirectory ?? '/proc/sys/vm';
  const thpFile = sources.transparentHugepage ?? '/sys/kernel/mm/transparent_hugepage/enabled';
  const meminfo = parseField(readText(meminfoFile), meminfoFile, parseKbLines);
  return {
    memTotal: pick(meminfo, meminfoFile, 'MemTotal'),
    memAvailable: pick(meminfo, meminfoFile, 'MemAvailable'),
    swapTotal: pick(meminfo, meminfoFile, 'SwapTotal'),
    swapFree: pick(meminfo, meminfoFile, 'SwapFree'),
    commitLimit: pick(meminfo, meminfoFile, 'CommitLimit'),
    committedAs: pick(meminfo, meminfoFile, 'Committed_AS'),
    overcommitMemory: readNumberFile(`${sysctl}/overcommit_memory`),
    overcommitRatio: readNumberFile(`${sysctl}/overcommit_ratio`),
    overcommitKbytes: readNumberFile(`${sysctl}/overcommit_kbytes`),
    maxMapCount: readNumberFile(`${sysctl}/max_map_count`),
    transparentHugepage: parseField(readText(thpFile), thpFile, selectedChoice),
  };
}

/** How many bytes of a file are in the page cache now (mincore); null when the file cannot be read. */
export function pageCacheBytes(file: string): number | null {
  try {
    return loadAddon<{ residentBytes(path: string): number }>().residentBytes(file);
  } catch {
    return null;
  }
}

/** /dev/shm watched through a run: its size, its use at the start, the most seen in use, how often it was read. */
export interface SharedMemoryWatch {
  size: number;
  usedAtStart: number;
  peakUsed: number;
  readEveryMs: number;
}

/** /dev/shm's size and the bytes in use, as read once. */
export interface SharedMemoryUse {
  size: number;
  used: number;
}

/** /dev/shm, where POSIX shared memory lives (shm_open; PyTorch's DataLoader hands tensors through it). */
export const SHARED_MEMORY_DIR = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;

/**
 * The size and use of the shared memory file system, in bytes: a tmpfs whose size a container sets
 * (Docker's default is 64 MiB); null when /dev/shm is missing or not a tmpfs of its own.
 */
export function readSharedMemory(directory = SHARED_MEMORY_DIR): SharedMemoryUse | null {
  try {
    const stats = fs.statfsSync(directory);
    if (stats.type !== TMPFS_MAGIC) return null;
    return { size: stats.blocks * stats.bsize, used: (stats.blocks - stats.bfree) * stats.bsize };
  } catch {
    return null;
  }
}

/**
 * Daemons that kill processes from user space when memory runs low, by SIGKILL or SIGTERM, without the
 * kernel's OOM counters or log seeing it; their names as /proc/PID/comm gives them (15 characters at most).
 */
const USERSPACE_OOM_KILLERS = ['earlyoom', 'systemd-oomd', 'oomd', 'nohang', 'low-memory-moni'];

/** A user-space OOM killer found running. */
export interface OomKillerProcess {
  pid: number;
  name: string;
}

/** The user-space OOM killers running now (where this process can see them: not across a PID namespace). */
export function userspaceOomKillers(proc = '/proc'): OomKillerProcess[] {
  const found: OomKillerProcess[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync(proc).filter((name) => /^\d+$/.test(name));
  } catch {
    return found;
  }
  for (const pid of entries) {
    try {
      const name = fs.readFileSync(`${proc}/${pid}/comm`, 'utf8').trim();
      if (USERSPACE_OOM_KILLERS.includes(name)) found.push({ pid: Number(pid), name });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}
