// pytorch_model.bin: a state dict saved by torch.save (PyTorch >= 1.6: a zip holding data.pkl, a pickle
// whose tensors point at storages stored as separate, uncompressed zip entries data/<key>). Read without
// Python: a small zip central-directory reader and a pickle machine that knows only what a state dict
// needs (OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter, typed storages); anything
// else is an error. Tensors load by mmap (views of the storages inside the zip, which PyTorch aligns to
// 64 bytes) or by copy, like safetensors, and produce the same LoadedCheckpoint.
// Every error is a PytorchCheckpointError naming the file and what is wrong; sizes and offsets are
// checked against the file before anything is allocated.
//
// API:
//   class PytorchCheckpointError { file }
//   readPytorchCheckpoint(file): PytorchCheckpointIndex       { file, fileSize, entries: PytorchEntry[] }
//   loadPytorchCheckpoint(file, { mode, onTensor }): LoadedCheckpoint   (header.metadata.format = 'pytorch-zip';
//       header entries' begin/end are the tensor bytes' offsets in the file, dataOffset 0)
import * as fs from 'node:fs';
import { loadAddon } from '../core/native';
import { setPhase } from '../core/phase';
import type { TensorSpec } from './config';
import { DTYPE_BYTES, numel, typedArrayFor } from './dtype';
import { LoadOptions, LoadedCheckpoint, SafetensorsEntry, TensorAllocationError } from './safetensors';
import type { DType, TensorData, TensorMap } from './tensor';

export class PytorchCheckpointError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'PytorchCheckpointError';
  }
}

export interface PytorchEntry extends TensorSpec {
  /** Absolute offset in the file of the storage's bytes, and of the tensor's first element. */
  storageOffset: number;
  storageBytes: number;
  elementOffset: number;
  stride: number[];
  contiguous: boolean;
}

export interface PytorchCheckpointIndex {
  file: string;
  fileSize: number;
  /** In the state dict's order. */
  entries: PytorchEntry[];
}

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

// ---- zip (central directory only; entries must be stored, as torch.save writes them) ----

interface ZipEntry {
  name: string;
  dataOffset: number;
  size: number;
}

function readAt(fd: number, file: string, position: number, length: number, fileSize: number, what: string): Buffer {
  if (position < 0 || length < 0 || position + length > fileSize) {
    throw new PytorchCheckpointError(
      file,
      `${what}: bytes ${position}..${position + length} lie outside the file (${fileSize} bytes): truncated or corrupt`,
    );
  }
  const out = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, length - done, position + done);
    if (n === 0) throw new PytorchCheckpointError(file, `${what}: the file ended early`);
    done += n;
  }
  return out;
}

function readZipDirectory(fd: number, file: string, fileSize: number): Map<string, ZipEntry> {
  const tailLength = Math.min(fileSize, 65_557);
  const tail = readAt(fd, file, fileSize - tailLength, tailLength, fileSize, 'zip end record');
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    const start = readAt(fd, file, 0, Math.min(fileSize, 2), fileSize, 'magic');
    if (start[0] === 0x80) {
      throw new PytorchCheckpointError(
        file,
        'is in the legacy torch.save format (PyTorch < 1.6), which clip-mem does not read: re-save it with a current PyTorch, or as model.safetensors',
      );
    }
    throw new PytorchCheckpointError(
      file,
      'is not a zip archive (no end-of-central-directory record): not a torch.save file, or truncated',
    );
  }
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  const eocdAbsolute = fileSize - tailLength + eocd;
  if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locator = readAt(fd, file, eocdAbsolute - 20, 20, fileSize, 'zip64 locator');
    if (locator.readUInt32LE(0) !== 0x07064b50)
      throw new PytorchCheckpointError(file, 'zip64 end-of-central-directory locator missing');
    const record = readAt(fd, file, Number(locator.readBigUInt64LE(8)), 56, fileSize, 'zip64 end record');
    if (record.readUInt32LE(0) !== 0x06064b50)
      throw new PytorchCheckpointError(file, 'zip64 end-of-central-directory record missing');
    entries = Number(record.readBigUInt64LE(32));
    cdSize = Number(record.readBigUInt64LE(40));
    cdOffset = Number(record.readBigUInt64LE(48));
  }
  if (cdSize > 64 * 2 ** 20)
    throw new PytorchCheckpointError(file, `zip central directory of ${cdSize} bytes is implausibly large`);
  const cd = readAt(fd, file, cdOffset, cdSize, fileSize, 'zip central directory');
  const out = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < entries; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50)
      throw new PytorchCheckpointError(file, `zip central directory entry ${i} is corrupt`);
    const method = cd.readUInt16LE(p + 10);
    let compressed = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLength = cd.readUInt16LE(p + 28);
    const extraLength = cd.readUInt16LE(p + 30);
    const commentLength = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    if (p + 46 + nameLength + extraLength > cd.length)
      throw new PytorchCheckpointError(file, `zip central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
    // zip64 extra field: the 64-bit values of whichever fields hold 0xffffffff, in this order
    for (let e = p + 46 + nameLength; e + 4 <= p + 46 + nameLength + extraLength;) {
      const id = cd.readUInt16LE(e);
      const length = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        const next = () => {
          if (q + 8 > e + 4 + length)
            throw new PytorchCheckpointError(file, `zip entry ${name}: zip64 extra field too short`);
          const v = Number(cd.readBigUInt64LE(q));
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      e += 4 + length;
    }
    p += 46 + nameLength + extraLength + commentLength;
    if (method !== 0 || compressed !== size) {
      throw new PytorchCheckpointError(
        file,
        `zip entry ${name} is compressed (method ${method}); torch.save stores entries uncompressed: was the file re-zipped?`,
      );
    }
    const local = readAt(fd, file, localOffset, 30, fileSize, `zip entry ${name} local header`);
    if (local.readUInt32LE(0) !== 0x04034b50)
      throw new PytorchCheckpointError(file, `zip entry ${name}: local header signature missing`);
    const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (dataOffset + size > fileSize)
      throw new PytorchCheckpointError(
        file,
        `zip entry ${name}: ${size} bytes at ${dataOffset} run past the end of the file (${fileSize} bytes)`,
      );
    out.set(name, { name, dataOffset, size });
  }
  return out;
}

// ---- pickle (the subset torch.save emits for a state dict) ----

interface PickleGlobal {
  kind: 'global';
  module: string;
  name: string;
}
interface StorageRef {
  kind: 'storage';
  dtype: DType;
  key: string;
  numel: number;
}
interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}
type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | Map<PickleValue, PickleValue>
  | PickleGlobal
  | StorageRef
  | TensorRef
  | { kind: 'object' };

const MARK = Symbol('mark');
const MAX_OPS = 50_000_000;

function isCountList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
}

function unpickle(data: Buffer, file: string): PickleValue {
  const where = (p: number) => `data.pkl at byte ${p}`;
  const stack: (PickleValue | typeof MARK)[] = [];
  const memo = new Map<number, PickleValue>();
  let p = 0;
  const need = (n: number) => {
    if (p + n > data.length) throw new PytorchCheckpointError(file, `${where(p)}: the pickle ends early`);
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), (p += 2), data.readUInt16LE(p - 2));
  const u32 = () => (need(4), (p += 4), data.readUInt32LE(p - 4));
  const bytes = (n: number) => (need(n), (p += n), data.subarray(p - n, p));
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) throw new PytorchCheckpointError(file, `${where(p)}: unterminated line`);
    const text = data.toString('utf8', p, end);
    p = end + 1;
    return text;
  };
  const pop = (): PickleValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw new PytorchCheckpointError(file, `${where(p)}: pickle stack underflow`);
    return v;
  };
  const popMark = (): PickleValue[] => {
    const items: PickleValue[] = [];
    for (;;) {
      const v = stack.pop();
      if (v === undefined) throw new PytorchCheckpointError(file, `${where(p)}: pickle MARK missing`);
      if (v === MARK) return items.reverse();
      items.push(v);
    }
  };
  const top = (): PickleValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw new PytorchCheckpointError(file, `${where(p)}: pickle stack empty`);
    return v;
  };
  const call = (fn: PickleValue, args: PickleValue, at: number): PickleValue => {
    if (!fn || typeof fn !== 'object' || !('kind' in fn) || fn.kind !== 'global' || !Array.isArray(args)) {
      throw new PytorchCheckpointError(file, `${where(at)}: REDUCE of something that is not a known callable`);
    }
    const name = `${fn.module}.${fn.name}`;
    if (name === 'collections.OrderedDict' || name === 'builtins.dict') return new Map();
    if (name === 'torch._utils._rebuild_tensor_v2' || name === 'torch._utils._rebuild_tensor') {
      const [storage, offset, shape, stride] = args;
      if (!storage || typeof storage !== 'object' || !('kind' in storage) || storage.kind !== 'storage')
        throw new PytorchCheckpointError(file, `${where(at)}: ${name} without a storage`);
      if (typeof offset !== 'number' || !isCountList(shape) || !isCountList(stride) || shape.length !== stride.length) {
        throw new PytorchCheckpointError(file, `${where(at)}: ${name} with a bad offset, size or stride`);
      }
      return { kind: 'tensor', storage, offset, shape, stride };
    }
    if (name === 'torch._utils._rebuild_parameter' || name === 'torch._utils._rebuild_parameter_with_state')
      return args[0];
    if (name === 'torch.device' || name === 'collections.defaultdict' || name === 'torch.serialization._get_layout')
      return { kind: 'object' };
    throw new PytorchCheckpointError(
      file,
      `${where(at)}: the pickle calls ${name}, which a state dict of tensors does not need (clip-mem runs no pickled code)`,
    );
  };
  for (let ops = 0; ops < MAX_OPS; ops++) {
    const at = p;
    const op = u8();
    switch (op) {
      case 0x80:
        u8();
        break; // PROTO
      case 0x95:
        bytes(8);
        break; // FRAME
      case 0x2e:
        return pop(); // STOP
      case 0x28:
        stack.push(MARK);
        break; // MARK
      case 0x7d:
        stack.push(new Map());
        break; // EMPTY_DICT
      case 0x5d:
        stack.push([]);
        break; // EMPTY_LIST
      case 0x29:
        stack.push([]);
        break; // EMPTY_TUPLE
      case 0x74:
        stack.push(popMark());
        break; // TUPLE
      case 0x85:
        stack.push([pop()]);
        break; // TUPLE1
      case 0x86: {
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      } // TUPLE2
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      } // TUPLE3
      case 0x4e:
        stack.push(null);
        break; // NONE
      case 0x88:
        stack.push(true);
        break; // NEWTRUE
      case 0x89:
        stack.push(false);
        break; // NEWFALSE
      case 0x4b:
        stack.push(u8());
        break; // BININT1
      case 0x4d:
        stack.push(u16());
        break; // BININT2
      case 0x4a:
        stack.push(bytes(4).readInt32LE(0));
        break; // BININT
      case 0x8a: {
        // LONG1
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47:
        stack.push(bytes(8).readDoubleBE(0));
        break; // BINFLOAT
      case 0x58: {
        const n = u32();
        stack.push(bytes(n).toString('utf8'));
        break;
      } // BINUNICODE
      case 0x8c: {
        const n = u8();
        stack.push(bytes(n).toString('utf8'));
        break;
      } // SHORT_BINUNICODE
      case 0x55: {
        const n = u8();
        stack.push(bytes(n).toString('latin1'));
        break;
      } // SHORT_BINSTRING
      case 0x54: {
        const n = u32();
        stack.push(bytes(n).toString('latin1'));
        break;
      } // BINSTRING
      case 0x43: {
        const n = u8();
        stack.push(new Uint8Array(bytes(n)));
        break;
      } // SHORT_BINBYTES
      case 0x42: {
        const n = u32();
        stack.push(new Uint8Array(bytes(n)));
        break;
      } // BINBYTES
      case 0x63: {
        const module = line();
        const name = line();
        stack.push({ kind: 'global', module, name });
        break;
      } // GLOBAL
      case 0x93: {
        const name = pop();
        const module = pop();
        stack.push({ kind: 'global', module: String(module), name: String(name) });
        break;
      } // STACK_GLOBAL
      case 0x71:
        memo.set(u8(), top());
        break; // BINPUT
      case 0x72:
        memo.set(u32(), top());
        break; // LONG_BINPUT
      case 0x94:
        memo.set(memo.size, top());
        break; // MEMOIZE
      case 0x68:
      case 0x6a: {
        // BINGET, LONG_BINGET
        const key = op === 0x68 ? u8() : u32();
        if (!memo.has(key)) throw new PytorchCheckpointError(file, `${where(at)}: memo ${key} was never stored`);
        stack.push(memo.get(key)!);
        break;
      }
      case 0x51: {
        // BINPERSID: ('storage', StorageType, key, location, numel)
        const id = pop();
        if (!Array.isArray(id) || id[0] !== 'storage' || id.length < 5)
          throw new PytorchCheckpointError(file, `${where(at)}: unknown persistent id ${JSON.stringify(id)}`);
        const [, type, key, , numel] = id;
        const typeName =
          type && typeof type === 'object' && 'kind' in type && type.kind === 'global' ? type.name : String(type);
        const dtype = STORAGE_DTYPES[typeName];
        if (!dtype)
          throw new PytorchCheckpointError(
            file,
            `${where(at)}: storage type ${typeName} is not one clip-mem reads (${Object.keys(STORAGE_DTYPES).join(', ')})`,
          );
        if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0)
          throw new PytorchCheckpointError(
            file,
            `${where(at)}: storage ${String(key)} has a bad size ${String(numel)}`,
          );
        stack.push({ kind: 'storage', dtype, key: String(key), numel });
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        stack.push(call(fn, args, at));
        break;
      } // REDUCE
      case 0x81: {
        const args = pop();
        const cls = pop();
        stack.push(call(cls, args, at));
        break;
      } // NEWOBJ
      case 0x62:
        pop();
        break; // BUILD: state of an OrderedDict (_metadata) or a parameter: not needed
      case 0x73: {
        // SETITEM
        const value = pop();
        const key = pop();
        const dict = top();
        if (!(dict instanceof Map)) throw new PytorchCheckpointError(file, `${where(at)}: SETITEM on a non-dict`);
        dict.set(key, value);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        const dict = top();
        if (!(dict instanceof Map) || items.length % 2)
          throw new PytorchCheckpointError(file, `${where(at)}: SETITEMS on a non-dict`);
        for (let i = 0; i < items.length; i += 2) dict.set(items[i], items[i + 1]);
        break;
      }
      case 0x61: {
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) throw new PytorchCheckpointError(file, `${where(at)}: APPEND on a non-list`);
        list.push(v);
        break;
      }
      case 0x65: {
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) throw new PytorchCheckpointError(file, `${where(at)}: APPENDS on a non-list`);
        list.push(...items);
        break;
      }
      default:
        throw new PytorchCheckpointError(
          file,
          `${where(at)}: pickle opcode 0x${op.toString(16)} is not one a state dict needs`,
        );
    }
  }
  throw new PytorchCheckpointError(file, `data.pkl: more than ${MAX_OPS} pickle operations`);
}

// ---- index and load ----

function isTensorRef(value: PickleValue): value is TensorRef {
  return !!value && typeof value === 'object' && 'kind' in value && value.kind === 'tensor';
}

function readIndex(fd: number, file: string): PytorchCheckpointIndex {
  const fileSize = fs.fstatSync(fd).size;
  const zip = readZipDirectory(fd, file, fileSize);
  const pkl = [...zip.values()].find((e) => e.name.endsWith('/data.pkl') || e.name === 'data.pkl');
  if (!pkl) throw new PytorchCheckpointError(file, 'the zip has no data.pkl: not a torch.save file');
  if (pkl.size > 256 * 2 ** 20)
    throw new PytorchCheckpointError(file, `data.pkl is ${pkl.size} bytes, too large for a state dict`);
  const prefix = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
  const root = unpickle(readAt(fd, file, pkl.dataOffset, pkl.size, fileSize, 'data.pkl'), file);
  if (!(root instanceof Map))
    throw new PytorchCheckpointError(
      file,
      'data.pkl does not hold a dict: not a state dict (save model.state_dict(), not the model)',
    );
  const entries: PytorchEntry[] = [];
  for (const [key, value] of root) {
    const name = String(key);
    if (!isTensorRef(value))
      throw new PytorchCheckpointError(file, `state dict entry ${JSON.stringify(name)} is not a tensor`);
    const { storage, offset, shape, stride } = value;
    const entry = zip.get(`${prefix}data/${storage.key}`);
    if (!entry)
      throw new PytorchCheckpointError(
        file,
        `tensor ${JSON.stringify(name)}: storage data/${storage.key} is missing from the zip`,
      );
    const size = DTYPE_BYTES[storage.dtype];
    if (storage.numel * size > entry.size) {
      throw new PytorchCheckpointError(
        file,
        `tensor ${JSON.stringify(name)}: storage data/${storage.key} holds ${entry.size} bytes, less than ${storage.numel} x ${storage.dtype}`,
      );
    }
    const count = numel(shape);
    let extent = count ? offset + 1 : offset;
    if (count) for (let d = 0; d < shape.length; d++) extent += (shape[d] - 1) * stride[d];
    if (!Number.isSafeInteger(extent) || extent > storage.numel) {
      throw new PytorchCheckpointError(
        file,
        `tensor ${JSON.stringify(name)}: shape ${JSON.stringify(shape)} stride ${JSON.stringify(stride)} at offset ${offset} reaches past its storage of ${storage.numel} elements`,
      );
    }
    let expected = 1;
    let contiguous = true;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (shape[d] !== 1 && stride[d] !== expected) contiguous = false;
      expected *= shape[d];
    }
    if (count * size > storage.numel * size) {
      // a broadcast view (stride 0): materializing it could take far more memory than the file holds
      throw new PytorchCheckpointError(
        file,
        `tensor ${JSON.stringify(name)}: a view of ${count} elements over a storage of ${storage.numel} (stride ${JSON.stringify(stride)}); save it with .contiguous() first`,
      );
    }
    entries.push({
      name,
      dtype: storage.dtype,
      shape,
      bytes: count * size,
      storageOffset: entry.dataOffset,
      storageBytes: storage.numel * size,
      elementOffset: offset,
      stride,
      contiguous,
    });
  }
  return { file, fileSize, entries };
}

export function readPytorchCheckpoint(file: string): PytorchCheckpointIndex {
  const fd = fs.openSync(file, 'r');
  try {
    return readIndex(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}

/** The elements of a strided tensor, gathered in row-major order. */
function gather(storage: TensorData, entry: PytorchEntry, out: TensorData): void {
  const { shape, stride, elementOffset } = entry;
  const index = new Array(shape.length).fill(0);
  const total = out.length;
  for (let i = 0; i < total; i++) {
    let source = elementOffset;
    for (let d = 0; d < shape.length; d++) source += index[d] * stride[d];
    (out as unknown as { [k: number]: number | bigint })[i] = storage[source];
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
}

interface MappingAddon {
  mapFile(path: string): ArrayBuffer;
  unmapFile(buffer: ArrayBuffer): boolean;
}

export function loadPytorchCheckpoint(file: string, options: LoadOptions = {}): LoadedCheckpoint {
  const mode = options.mode ?? 'mmap';
  const fd = fs.openSync(file, 'r');
  let mapping: ArrayBuffer | undefined;
  const addon = mode === 'mmap' ? loadAddon<MappingAddon>() : undefined;
  try {
    const index = readIndex(fd, file);
    if (addon) mapping = addon.mapFile(file);
    const tensors: TensorMap = new Map();
    const copiedForAlignment: string[] = [];
    const headerEntries: SafetensorsEntry[] = [];
    index.entries.forEach((entry, i) => {
      setPhase(entry.name);
      const size = DTYPE_BYTES[entry.dtype];
      const numel = entry.bytes / size;
      const start = entry.storageOffset + entry.elementOffset * size;
      let data: TensorData;
      if (mapping && entry.contiguous && start % size === 0) {
        data = typedArrayFor(entry.dtype, mapping, start, numel);
      } else {
        let buffer: ArrayBuffer;
        try {
          buffer = new ArrayBuffer(entry.bytes);
        } catch (error) {
          throw new TensorAllocationError(file, entry.name, entry.bytes, error);
        }
        data = typedArrayFor(entry.dtype, buffer, 0, numel);
        if (entry.contiguous) {
          const target = new Uint8Array(buffer);
          if (mapping) target.set(new Uint8Array(mapping, start, entry.bytes));
          else target.set(readAt(fd, file, start, entry.bytes, index.fileSize, `tensor ${entry.name}`));
          if (mapping) copiedForAlignment.push(entry.name);
        } else {
          const storageBytes = mapping
            ? new Uint8Array(mapping, entry.storageOffset, entry.storageBytes).slice()
            : readAt(fd, file, entry.storageOffset, entry.storageBytes, index.fileSize, `tensor ${entry.name}`);
          gather(
            typedArrayFor(
              entry.dtype,
              storageBytes.buffer.slice(storageBytes.byteOffset, storageBytes.byteOffset + storageBytes.byteLength),
              0,
              entry.storageBytes / size,
            ),
            entry,
            data,
          );
        }
      }
      tensors.set(entry.name, { name: entry.name, dtype: entry.dtype, shape: entry.shape, data });
      const headerEntry = {
        name: entry.name,
        dtype: entry.dtype,
        shape: entry.shape,
        bytes: entry.bytes,
        begin: start,
        end: start + entry.bytes,
      };
      headerEntries.push(headerEntry);
      options.onTensor?.(headerEntry, i, index.entries.length);
    });
    const header = {
      file,
      fileSize: index.fileSize,
      headerLength: 0,
      dataOffset: 0,
      entries: headerEntries,
      metadata: { format: 'pytorch-zip' },
    };
    const mapped = mapping;
    return { file, mode, header, tensors, copiedForAlignment, close: () => void (mapped && addon!.unmapFile(mapped)) };
  } catch (error) {
    if (mapping) addon!.unmapFile(mapping);
    throw error;
  } finally {
    fs.closeSync(fd);
  }
}
