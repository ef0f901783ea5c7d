// safetensors: validated header reading and the two load paths of the seed story.
//   mmap: the file mapped read-only through the addon (native/addon/mapping.cc); tensors are zero-copy
//         views of the mapping (a tensor whose offset is misaligned for its dtype is copied).
//   copy: every tensor allocated on the JS heap and read into with fs.readSync: the path where a
//         101,187,584-byte allocation (vit-b-32's token embedding) fails under an address-space limit.
//         Each buffer stays that one allocation; its pages are readied before the read fills it (huge
//         pages where the kernel offers them, populated in one call: native/addon/prefault.cc), which
//         makes the load faster than a plain read of the file into one fresh buffer (scripts/bench-load.ts).
// A malformed file never crashes, hangs or allocates more than the file's header allows: the 8-byte
// header length is bounded (MAX_HEADER_BYTES and the file size) before anything is allocated, and every
// error is a SafetensorsError naming the file, the tensor and the field.
//
// API:
//   MAX_HEADER_BYTES                            100,000,000 (the limit of the reference Rust implementation)
//   class SafetensorsError { file, tensor?, field }
//   class TensorAllocationError { file, tensor, bytes, code: 'ENOMEM' }   the copy path could not allocate
//   interface SafetensorsEntry extends TensorSpec { begin, end }          offsets inside the data section
//   interface SafetensorsHeader { file, fileSize, headerLength, dataOffset, entries (by offset), metadata }
//   headerLengthFromPrefix(prefix, fileSize, file): number
//   parseSafetensorsHeader(json: Uint8Array, fileSize, file): SafetensorsHeader
//   readSafetensorsHeader(file): SafetensorsHeader
//   loadSafetensors(file, { mode = 'mmap' | 'copy', onTensor? }): LoadedCheckpoint
//   interface LoadedCheckpoint { file, mode, header, tensors: TensorMap, copiedForAlignment, close() }
// Each tensor load first calls the tracker's setPhase(<tensor name>) (src/track/phase.ts), so a failure
// recorded by `clip-mem trace` names the tensor being loaded.
//   encodeSafetensorsHeader(specs, metadata): Uint8Array   prefix + JSON header padded with spaces to a
//                                                multiple of 8; specs in file order, offsets contiguous
//   serializeSafetensors(tensors, metadata): Buffer          a whole small file in memory (tests, fixtures)
//   writeSafetensorsFile(file, specs, chunksOf, onProgress)  streams a file: specs in file order, each
//                                                tensor's bytes from chunksOf(spec); temp file + rename
//   interface WriteProgress { bytesWritten, totalBytes, tensor }
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAddon } from '../core/native';
import { setPhase } from '../core/phase';
import type { TensorSpec } from './config';
import { DTYPE_BYTES, isDType, typedArrayFor } from './dtype';
import type { Tensor, TensorMap } from './tensor';
import { makeDirectory, writeError } from '../core/files';

export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    readonly tensor: string | undefined,
    readonly field: string,
    detail: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor ${JSON.stringify(tensor)}: ` : ''}${field}: ${detail}`);
    this.name = 'SafetensorsError';
  }
}

export class TensorAllocationError extends Error {
  readonly code = 'ENOMEM';
  constructor(
    readonly file: string,
    readonly tensor: string,
    readonly bytes: number,
    cause: unknown,
  ) {
    super(
      `cannot allocate ${bytes} bytes for tensor ${JSON.stringify(tensor)} of ${file} (copy load): ` +
        `${(cause as Error)?.message ?? String(cause)}. The process is short of memory or address space ` +
        '(see `clip-mem native-probe`); loading by mmap needs no such allocation.',
      { cause },
    );
    this.name = 'TensorAllocationError';
  }
}

export interface SafetensorsEntry extends TensorSpec {
  /** Byte offsets inside the data section (which starts at header.dataOffset in the file). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** The JSON header's length, from the 8-byte little-endian prefix. */
  headerLength: number;
  /** Where the data section starts: 8 + headerLength. */
  dataOffset: number;
  /** Sorted by offset: the order of the data in the file. */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
}

/** The header length from the file's first 8 bytes, checked against the limit and the file size. */
export function headerLengthFromPrefix(prefix: Uint8Array, fileSize: number, file: string): number {
  if (prefix.length < 8 || fileSize < 8) throw shortFileError(file, fileSize);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const length = view.getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      file,
      undefined,
      'header length',
      `${length} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file, or a corrupt one`,
    );
  }
  const n = Number(length);
  if (8 + n > fileSize) {
    throw new SafetensorsError(
      file,
      undefined,
      'header length',
      `${n} bytes runs past the end of the file (${fileSize} bytes): the file is truncated or corrupt`,
    );
  }
  if (n < 2) throw new SafetensorsError(file, undefined, 'header length', `${n} bytes cannot hold a JSON object`);
  return n;
}

function shortFileError(file: string, fileSize: number): SafetensorsError {
  return new SafetensorsError(
    file,
    undefined,
    'header length',
    `the file is ${fileSize} bytes, shorter than the 8-byte header length prefix: not a safetensors file, or truncated`,
  );
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Validates the JSON header (its bytes, without the prefix) of a file of `fileSize` bytes. */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerLength = json.length;
  const dataOffset = 8 + headerLength;
  const dataSize = fileSize - dataOffset;
  let text: string;
  try {
    text = utf8.decode(json);
  } catch {
    throw new SafetensorsError(file, undefined, 'header', 'is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(file, undefined, 'header', `is not valid JSON (${(error as Error).message})`);
  }
  if (!isRecord(parsed)) throw new SafetensorsError(file, undefined, 'header', 'is not a JSON object of tensors');

  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (!isRecord(info)) throw new SafetensorsError(file, undefined, '__metadata__', 'must be an object of strings');
      for (const [key, value] of Object.entries(info)) {
        if (typeof value !== 'string')
          throw new SafetensorsError(
            file,
            undefined,
            `__metadata__.${key}`,
            `must be a string, got ${JSON.stringify(value)}`,
          );
        metadata[key] = value;
      }
      continue;
    }
    if (!isRecord(info))
      throw new SafetensorsError(file, name, 'entry', 'must be an object with dtype, shape and data_offsets');
    const { dtype, shape, data_offsets: offsets } = info;
    if (!isDType(dtype)) {
      throw new SafetensorsError(
        file,
        name,
        'dtype',
        `${JSON.stringify(dtype)} is not a known dtype (${Object.keys(DTYPE_BYTES).join(', ')})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new SafetensorsError(
        file,
        name,
        'shape',
        `${JSON.stringify(shape)} is not a list of non-negative integers`,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new SafetensorsError(
        file,
        name,
        'data_offsets',
        `${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    let bytes = DTYPE_BYTES[dtype];
    for (const dim of shape as number[]) {
      bytes *= dim;
      if (!Number.isSafeInteger(bytes))
        throw new SafetensorsError(file, name, 'shape', `${JSON.stringify(shape)} x ${dtype} overflows`);
    }
    if (end - begin !== bytes) {
      throw new SafetensorsError(
        file,
        name,
        'data_offsets',
        `[${begin}, ${end}] spans ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${bytes}`,
      );
    }
    if (end > dataSize) {
      throw new SafetensorsError(
        file,
        name,
        'data_offsets',
        `[${begin}, ${end}] ends past the data section (${dataSize} bytes after the ${dataOffset}-byte header): the file is truncated or the offsets are wrong`,
      );
    }
    entries.push({ name, dtype, shape: shape as number[], bytes, begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const entry of entries) {
    if (entry.begin !== expected) {
      const what = entry.begin < expected ? 'overlaps the previous tensor' : 'leaves a gap after the previous tensor';
      throw new SafetensorsError(
        file,
        entry.name,
        'data_offsets',
        `[${entry.begin}, ${entry.end}] ${what} (expected to begin at ${expected}): offsets must be contiguous from 0`,
      );
    }
    expected = entry.end;
  }
  if (expected !== dataSize) {
    throw new SafetensorsError(
      file,
      undefined,
      'data_offsets',
      `the tensors cover ${expected} bytes but the data section holds ${dataSize}: trailing bytes after the last tensor`,
    );
  }
  return { file, fileSize, headerLength, dataOffset, entries, metadata };
}

function readExactly(fd: number, target: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < target.length) {
    const chunk = Math.min(target.length - done, 1 << 30);
    const n = fs.readSync(fd, target, done, chunk, position + done);
    if (n === 0)
      throw new SafetensorsError(
        file,
        undefined,
        what,
        `the file ended after ${done} of ${target.length} bytes (truncated while reading)`,
      );
    done += n;
  }
}

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = fs.openSync(file, 'r');
  try {
    return readHeaderFromFd(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}

function readHeaderFromFd(fd: number, file: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  const prefix = new Uint8Array(8);
  if (fileSize >= 8) readExactly(fd, prefix, 0, file, 'header length');
  const length = headerLengthFromPrefix(prefix, fileSize, file);
  const json = new Uint8Array(length);
  readExactly(fd, json, 8, file, 'header');
  return parseSafetensorsHeader(json, fileSize, file);
}

export type LoadMode = 'mmap' | 'copy';
export const LOAD_MODES: readonly LoadMode[] = ['mmap', 'copy'];

export interface LoadOptions {
  mode?: LoadMode;
  /** Called after each tensor is loaded (index counts from 0, in file order). */
  onTensor?: (entry: SafetensorsEntry, index: number, count: number) => void;
}

export interface LoadedCheckpoint {
  file: string;
  mode: LoadMode;
  header: SafetensorsHeader;
  /** In file order. */
  tensors: TensorMap;
  /** mmap mode: tensors copied because their offset was misaligned for their dtype. */
  copiedForAlignment: string[];
  /** mmap: unmaps now (views then read as empty); copy: drops nothing (let the map go out of scope). */
  close(): void;
}

interface MappingAddon {
  mapFile(path: string): ArrayBuffer;
  unmapFile(buffer: ArrayBuffer): boolean;
  mappedBytes(): number;
}

/** What prefaultForWrite readied: the bytes advised for huge pages, and the bytes populated (0: refused). */
export interface Prefaulted {
  hugePageBytes: number;
  populatedBytes: number;
}
interface PrefaultAddon {
  prefaultForWrite(buffer: ArrayBuffer): Prefaulted;
}

export function loadSafetensors(file: string, options: LoadOptions = {}): LoadedCheckpoint {
  const mode = options.mode ?? 'mmap';
  return mode === 'mmap' ? loadByMmap(file, options) : loadByCopy(file, options);
}

function loadByMmap(file: string, options: LoadOptions): LoadedCheckpoint {
  const addon = loadAddon<MappingAddon>();
  const fileSize = fs.statSync(file).size;
  if (fileSize < 8) throw shortFileError(file, fileSize); // an empty file cannot even be mapped
  const buffer = addon.mapFile(file);
  try {
    const bytes = new Uint8Array(buffer);
    const length = headerLengthFromPrefix(bytes.subarray(0, 8), bytes.length, file);
    const header = parseSafetensorsHeader(bytes.subarray(8, 8 + length), bytes.length, file);
    const tensors: TensorMap = new Map();
    const copiedForAlignment: string[] = [];
    header.entries.forEach((entry, index) => {
      setPhase(entry.name);
      const offset = header.dataOffset + entry.begin;
      const numel = entry.bytes / DTYPE_BYTES[entry.dtype];
      let data;
      if (offset % DTYPE_BYTES[entry.dtype] === 0) {
        data = typedArrayFor(entry.dtype, buffer, offset, numel);
      } else {
        data = typedArrayFor(entry.dtype, buffer.slice(offset, offset + entry.bytes), 0, numel);
        copiedForAlignment.push(entry.name);
      }
      tensors.set(entry.name, { name: entry.name, dtype: entry.dtype, shape: entry.shape, data } satisfies Tensor);
      options.onTensor?.(entry, index, header.entries.length);
    });
    return { file, mode: 'mmap', header, tensors, copiedForAlignment, close: () => void addon.unmapFile(buffer) };
  } catch (error) {
    addon.unmapFile(buffer);
    throw error;
  }
}

function loadByCopy(file: string, options: LoadOptions): LoadedCheckpoint {
  const addon = loadAddon<PrefaultAddon>();
  const fd = fs.openSync(file, 'r');
  try {
    const header = readHeaderFromFd(fd, file);
    const tensors: TensorMap = new Map();
    header.entries.forEach((entry, index) => {
      setPhase(entry.name);
      let buffer: ArrayBuffer;
      try {
        buffer = new ArrayBuffer(entry.bytes);
      } catch (error) {
        throw new TensorAllocationError(file, entry.name, entry.bytes, error);
      }
      addon.prefaultForWrite(buffer);
      readExactly(fd, new Uint8Array(buffer), header.dataOffset + entry.begin, file, `tensor ${entry.name}`);
      const data = typedArrayFor(entry.dtype, buffer, 0, entry.bytes / DTYPE_BYTES[entry.dtype]);
      tensors.set(entry.name, { name: entry.name, dtype: entry.dtype, shape: entry.shape, data });
      options.onTensor?.(entry, index, header.entries.length);
    });
    return { file, mode: 'copy', header, tensors, copiedForAlignment: [], close: () => undefined };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The 8-byte length prefix and the JSON header for `specs` laid out contiguously in the given order,
 * padded with spaces so the data section starts at a multiple of 8 (as the reference writer does).
 */
export function encodeSafetensorsHeader(
  specs: readonly Pick<TensorSpec, 'name' | 'dtype' | 'shape' | 'bytes'>[],
  metadata: Record<string, string> = { format: 'pt' },
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + s.bytes] };
    offset += s.bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/** A whole safetensors file in memory, tensors in the given order. */
export function serializeSafetensors(
  tensors: readonly Tensor[],
  metadata: Record<string, string> = { format: 'pt' },
): Buffer {
  const specs = tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], bytes: t.data.byteLength }));
  const parts = [
    encodeSafetensorsHeader(specs, metadata),
    ...tensors.map((t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
  ];
  return Buffer.concat(parts);
}

export interface WriteProgress {
  bytesWritten: number;
  totalBytes: number;
  tensor: string;
}

/**
 * Writes a safetensors file tensor by tensor (specs in file order; chunksOf yields each one's bytes,
 * exactly spec.bytes of them) into a temporary file beside `file`, then renames it into place: an
 * interrupted write never leaves a partial file under the final name.
 */
export function writeSafetensorsFile(
  file: string,
  specs: readonly TensorSpec[],
  chunksOf: (spec: TensorSpec) => Iterable<Uint8Array>,
  onProgress?: (progress: WriteProgress) => void,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const header = encodeSafetensorsHeader(specs, metadata);
  const totalBytes = header.length + specs.reduce((sum, s) => sum + s.bytes, 0);
  const temp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  let fd: number;
  try {
    makeDirectory(path.dirname(file));
    fd = fs.openSync(temp, 'w');
  } catch (error) {
    throw writeError(error, file);
  }
  try {
    let bytesWritten = 0;
    const write = (bytes: Uint8Array, tensor: string) => {
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
      bytesWritten += bytes.length;
      onProgress?.({ bytesWritten, totalBytes, tensor });
    };
    write(header, '(header)');
    for (const spec of specs) {
      const before = bytesWritten;
      for (const chunk of chunksOf(spec)) write(chunk, spec.name);
      if (bytesWritten - before !== spec.bytes)
        throw new Error(
          `writing ${file}: tensor ${spec.name} produced ${bytesWritten - before} bytes, expected ${spec.bytes}`,
        );
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(temp, file);
  } catch (error) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(temp, { force: true });
    throw (error as NodeJS.ErrnoException).code ? writeError(error, file) : error;
  }
}
