// Why a GPU allocation failed: the device's arithmetic at the failure (used of total + requested; this
// process and the others), and which of four things left too little room: this process's own use, other
// processes on the device, fragmentation in the framework's caching allocator (PyTorch's message shows
// memory reserved but unallocated), or a limit the framework set itself (PyTorch's per-process memory
// fraction). The framework's own out-of-memory message, when the output has one, is read as evidence.
// Pure, like the rest of diagnose.
import { CUDA_OUT_OF_MEMORY, cudaErrorName, type CudaApi } from '../core/cuda-error';
import { formatBytes, parseBytes } from '../core/units';

/** What the record holds of a failed GPU allocation (a RecordGpuFailure fits; null: unknown). */
export interface GpuFacts {
  api: CudaApi;
  status: number;
  device: number | null;
  totalBytes: number | null;
  freeBytes: number | null;
  processBytes: number | null;
  trackedBytes: number;
  otherProcesses: { pid: number; bytes: number | null; name: string }[];
}

export type GpuCulprit = 'own-use' | 'other-processes' | 'fragmentation' | 'framework-limit';

/** PyTorch's "CUDA out of memory. Tried to allocate ..." message, as far as it gives figures (bytes). */
export interface FrameworkOom {
  framework: 'pytorch';
  triedBytes: number;
  device: number | null;
  capacityBytes: number | null;
  freeBytes: number | null;
  /** "this process has X memory in use" (PyTorch >= 2.1, from NVML). */
  processBytes: number | null;
  /** Other processes PyTorch named ("Process 1234 has X memory in use"). */
  otherProcesses: { pid: number; bytes: number }[];
  allocatedBytes: number | null;
  reservedUnallocatedBytes: number | null;
  /** Set when a per-process memory fraction limits the caching allocator ("X allowed"). */
  allowedBytes: number | null;
}

/** The figures behind a gpu-memory diagnosis, for reports and fixes. */
export interface GpuDiagnosis {
  device: number | null;
  totalBytes: number | null;
  /** total - free at the failure. */
  usedBytes: number | null;
  requestedBytes: number;
  /** This process's bytes on the device (NVML, else what the tracker counted). */
  processBytes: number | null;
  /** used - this process: other processes and the driver's own reservations. */
  otherBytes: number | null;
  /** Other processes on the device, largest first. */
  otherProcesses: { pid: number; name: string; bytes: number | null }[];
  culprit: GpuCulprit;
  framework: FrameworkOom | null;
}

const size = /(\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB|TiB)/;
const sizeText = size.source;

function bytesOf(text: string | undefined): number | null {
  if (text === undefined) return null;
  const match = size.exec(text);
  return match ? parseBytes(`${match[1]} ${match[2] === 'bytes' ? 'B' : match[2]}`, 'PyTorch size', { min: 0 }) : null;
}

/** The last PyTorch CUDA out-of-memory message in the output (1.x and 2.x wordings), or null. */
export function readFrameworkOom(output: string | undefined): FrameworkOom | null {
  if (!output) return null;
  const at = output.lastIndexOf('CUDA out of memory. Tried to allocate');
  if (at < 0) return null;
  // The message is one long line, but a terminal may have wrapped it: read up to the next blank line.
  const end = output.indexOf('\n\n', at);
  const text = output.slice(at, end < 0 ? undefined : end).replace(/\s+/g, ' ');
  const tried = bytesOf(new RegExp(`Tried to allocate ${sizeText}`).exec(text)?.[0]);
  if (tried === null) return null;
  const v2 = new RegExp(`GPU (\\d+) has a total capacity of (${sizeText}) of which (${sizeText}) is free`).exec(text);
  const v1 = new RegExp(
    `\\(GPU (\\d+); (${sizeText}) total capacity; (${sizeText}) already allocated; (${sizeText}) free; ` +
      `(?:(${sizeText}) allowed; )?(${sizeText}) reserved in total by PyTorch\\)`,
  ).exec(text);
  const split = new RegExp(
    `Of the allocated memory (${sizeText}) is allocated by PyTorch, (?:with (${sizeText}) allowed; )?and ` +
      `(${sizeText}) is reserved by PyTorch but unallocated`,
  ).exec(text);
  const own = new RegExp(`this process has (${sizeText}) memory in use`).exec(text);
  const others = [...text.matchAll(new RegExp(`Process (\\d+) has (${sizeText}) memory in use`, 'g'))].map((m) => ({
    pid: Number(m[1]),
    bytes: bytesOf(m[2])!,
  }));
  if (v1) {
    // Groups: 1 the GPU, then each size's own group (with two inside it): 2, 5, 8, 11 (allowed), 14.
    const allocated = bytesOf(v1[5])!;
    const reserved = bytesOf(v1[14])!;
    return {
      framework: 'pytorch',
      triedBytes: tried,
      device: Number(v1[1]),
      capacityBytes: bytesOf(v1[2]),
      freeBytes: bytesOf(v1[8]),
      processBytes: null,
      otherProcesses: others,
      allocatedBytes: allocated,
      reservedUnallocatedBytes: Math.max(0, reserved - allocated),
      allowedBytes: v1[11] !== undefined ? bytesOf(v1[11]) : null,
    };
  }
  return {
    framework: 'pytorch',
    triedBytes: tried,
    device: v2 ? Number(v2[1]) : null,
    capacityBytes: v2 ? bytesOf(v2[2]) : null,
    freeBytes: v2 ? bytesOf(v2[5]) : null,
    processBytes: own ? bytesOf(own[1]) : null,
    otherProcesses: others,
    allocatedBytes: split ? bytesOf(split[1]) : null,
    reservedUnallocatedBytes: split ? bytesOf(split[7]) : null,
    allowedBytes: split?.[4] !== undefined ? bytesOf(split[4]) : null,
  };
}

function culpritOf(g: Omit<GpuDiagnosis, 'culprit'>): GpuCulprit {
  const oom = g.framework;
  if (oom?.allowedBytes != null) return 'framework-limit';
  if (oom?.reservedUnallocatedBytes != null && oom.reservedUnallocatedBytes >= g.requestedBytes) return 'fragmentation';
  const named = g.otherProcesses.reduce((sum, p) => sum + (p.bytes ?? 0), 0);
  const free = g.totalBytes !== null && g.usedBytes !== null ? g.totalBytes - g.usedBytes : null;
  if (named > 0 && free !== null && free + named >= g.requestedBytes) return 'other-processes';
  return 'own-use';
}

const gpuName = (device: number | null) => (device === null ? 'the GPU' : `GPU ${device}`);
const processName = (p: { pid: number; name: string; bytes: number | null }) =>
  `pid ${p.pid}${p.name ? ` (${p.name})` : ''} ${p.bytes === null ? 'size unknown' : formatBytes(p.bytes)}`;

/** The evidence sentences for a gpu-memory diagnosis. */
function gpuEvidence(g: GpuDiagnosis, request: string, tracked: boolean): string[] {
  const gpu = gpuName(g.device);
  const evidence: string[] = [];
  if (g.totalBytes !== null && g.usedBytes !== null) {
    const own =
      g.processBytes === null
        ? ''
        : `; this process ${formatBytes(g.processBytes)}${tracked ? ' (its allocations the tracker counted)' : ''}` +
          (g.otherBytes !== null ? `, others ${formatBytes(g.otherBytes)}` : '');
    evidence.push(
      `${gpu}: ${formatBytes(g.usedBytes)} used of ${formatBytes(g.totalBytes)} + ${formatBytes(g.requestedBytes)} ` +
        `requested = ${formatBytes(g.usedBytes + g.requestedBytes)} (${request})${own}`,
    );
  } else {
    evidence.push(`${request}; the device's memory could not be read at that moment`);
  }
  if (g.otherProcesses.length)
    evidence.push(`other processes on ${gpu}: ${g.otherProcesses.map(processName).join(', ')}`);
  const oom = g.framework;
  if (oom) {
    const parts = [`"Tried to allocate ${formatBytes(oom.triedBytes)}"`];
    if (oom.allocatedBytes !== null) parts.push(`${formatBytes(oom.allocatedBytes)} allocated by PyTorch`);
    if (oom.reservedUnallocatedBytes !== null)
      parts.push(`${formatBytes(oom.reservedUnallocatedBytes)} reserved by PyTorch but unallocated`);
    if (oom.allowedBytes !== null) parts.push(`${formatBytes(oom.allowedBytes)} allowed`);
    evidence.push(`PyTorch's message: ${parts.join(', ')}`);
  }
  const shortfall =
    g.totalBytes !== null && g.usedBytes !== null ? g.usedBytes + g.requestedBytes - g.totalBytes : null;
  switch (g.culprit) {
    case 'framework-limit':
      evidence.push(
        `a limit PyTorch set itself, not the device: its per-process memory fraction allows ` +
          `${formatBytes(oom!.allowedBytes!)} (torch.cuda.set_per_process_memory_fraction)`,
      );
      break;
    case 'fragmentation':
      evidence.push(
        `fragmentation in PyTorch's caching allocator: ${formatBytes(oom!.reservedUnallocatedBytes!)} reserved but ` +
          `unallocated is more than the ${formatBytes(g.requestedBytes)} requested, in blocks too small for it`,
      );
      break;
    case 'other-processes':
      evidence.push(
        `other processes hold ${formatBytes(g.otherProcesses.reduce((sum, p) => sum + (p.bytes ?? 0), 0))} of ${gpu}: ` +
          `without them the request would fit`,
      );
      break;
    case 'own-use':
      evidence.push(
        `this process's own use: ${gpu} ${shortfall !== null && shortfall > 0 ? `lacks ${formatBytes(shortfall)} for the request` : 'has no room for the request'}` +
          (g.otherProcesses.length ? ', and freeing the other processes would not be enough' : ''),
      );
      break;
  }
  return evidence;
}

/** The diagnosis of one failed GPU allocation; not-memory when its status is not out-of-memory. */
export function explainGpuFailure(
  f: { fn: string; size: number; gpu: GpuFacts },
  output?: string,
): { cause: 'gpu-memory' | 'not-memory'; evidence: string[]; gpu?: GpuDiagnosis } {
  const name = cudaErrorName(f.gpu.api, f.gpu.status);
  const request = `${f.fn} of ${f.size} bytes (${formatBytes(f.size)}), ${name}`;
  if (f.gpu.status !== CUDA_OUT_OF_MEMORY)
    return { cause: 'not-memory', evidence: [`${request}: not a shortage of device memory`] };
  const { totalBytes, freeBytes } = f.gpu;
  const usedBytes = totalBytes !== null && freeBytes !== null ? totalBytes - freeBytes : null;
  const tracked = f.gpu.processBytes === null;
  const processBytes = f.gpu.processBytes ?? f.gpu.trackedBytes;
  const oom = readFrameworkOom(output);
  const partial = {
    device: f.gpu.device,
    totalBytes,
    usedBytes,
    requestedBytes: f.size,
    processBytes,
    otherBytes: usedBytes !== null ? Math.max(0, usedBytes - processBytes) : null,
    otherProcesses: f.gpu.otherProcesses,
    framework: oom,
  };
  const gpu: GpuDiagnosis = { ...partial, culprit: culpritOf(partial) };
  return { cause: 'gpu-memory', evidence: gpuEvidence(gpu, request, tracked), gpu };
}

/**
 * A gpu-memory diagnosis from the framework's message alone: no device allocation failed in the record
 * (PyTorch refuses past its memory fraction without calling CUDA, or the program was not tracked).
 */
export function gpuFromOutput(output: string | undefined): { evidence: string[]; gpu: GpuDiagnosis } | null {
  const oom = readFrameworkOom(output);
  if (!oom) return null;
  const usedBytes =
    oom.capacityBytes !== null && oom.freeBytes !== null ? Math.max(0, oom.capacityBytes - oom.freeBytes) : null;
  const partial = {
    device: oom.device,
    totalBytes: oom.capacityBytes,
    usedBytes,
    requestedBytes: oom.triedBytes,
    processBytes: oom.processBytes,
    otherBytes: usedBytes !== null && oom.processBytes !== null ? Math.max(0, usedBytes - oom.processBytes) : null,
    otherProcesses: oom.otherProcesses.map((p) => ({ pid: p.pid, name: '', bytes: p.bytes })),
    framework: oom,
  };
  const gpu: GpuDiagnosis = { ...partial, culprit: culpritOf(partial) };
  return { evidence: gpuEvidence(gpu, `PyTorch's request of ${formatBytes(oom.triedBytes)}`, false), gpu };
}
