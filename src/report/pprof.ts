// The live-heap profile as a pprof heap profile (profile.proto, gzipped): what pprof, speedscope and
// Perfetto read. The protobuf encoding is written here by hand: a profile needs only varints, packed
// varints and length-delimited fields.
import * as zlib from 'node:zlib';
import { headlineMoment, heapProfileOf } from '../track/heap-profile';
import type { AllocationRecord } from '../track/record';
import type { SymbolizedFrame } from '../track/symbolize';

/** Protobuf writer: fields in the order written, nested messages as bytes. */
class Message {
  private parts: Buffer[] = [];

  private static varint(value: bigint): Buffer {
    let v = BigInt.asUintN(64, value); // negative int64: ten bytes, two's complement
    const bytes: number[] = [];
    while (v >= 0x80n) {
      bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(Number(v));
    return Buffer.from(bytes);
  }

  int(field: number, value: number | bigint): this {
    if (value === 0 || value === 0n) return this; // proto3: zero is the default, left out
    this.parts.push(Message.varint(BigInt(field << 3)), Message.varint(BigInt(value)));
    return this;
  }

  bytes(field: number, value: Buffer): this {
    this.parts.push(Message.varint(BigInt((field << 3) | 2)), Message.varint(BigInt(value.length)), value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, Buffer.from(value, 'utf8'));
  }

  message(field: number, value: Message): this {
    return this.bytes(field, value.encode());
  }

  packed(field: number, values: (number | bigint)[]): this {
    return this.bytes(field, Buffer.concat(values.map((v) => Message.varint(BigInt(v)))));
  }

  encode(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** "file.c:42" into its file and line (0: unknown). */
function fileAndLine(location: string | undefined): { file: string; line: number } {
  const match = location ? /^(.*):(\d+)$/.exec(location) : null;
  return match ? { file: match[1]!, line: Number(match[2]) } : { file: location ?? '', line: 0 };
}

/**
 * The pprof heap profile (gzipped profile.proto) of each profiled process at the moment that explains its
 * ending (its first failure, else the kill, else the peak): one sample per call site, value inuse_space
 * in bytes (the same estimates as the report), labelled with the pid. Null when no process was profiled.
 */
export function heapPprof(records: readonly AllocationRecord[]): Buffer | null {
  const strings = [''];
  const stringIndex = new Map<string, number>([['', 0]]);
  const str = (text: string) => {
    let index = stringIndex.get(text);
    if (index === undefined) {
      index = strings.length;
      strings.push(text);
      stringIndex.set(text, index);
    }
    return index;
  };
  const functions = new Map<string, { id: number; name: string; file: string }>();
  const locations = new Map<string, { id: number; address: bigint; functionId: number; line: number }>();
  const locationOf = (pid: number, frame: SymbolizedFrame) => {
    const key = `${pid}:${frame.address}`;
    let location = locations.get(key);
    if (!location) {
      const { file, line } = fileAndLine(frame.location);
      const name = frame.symbol ?? (frame.module ? `${frame.module}+${frame.offset}` : frame.address);
      const functionKey = `${name}\n${file}`;
      let fn = functions.get(functionKey);
      if (!fn) {
        fn = { id: functions.size + 1, name, file };
        functions.set(functionKey, fn);
      }
      location = { id: locations.size + 1, address: BigInt(frame.address), functionId: fn.id, line };
      locations.set(key, location);
    }
    return location.id;
  };
  const profile = new Message();
  let period = 0;
  let found = false;
  const samples: Message[] = [];
  for (const record of records) {
    const heap = heapProfileOf(record);
    const moment = heap && headlineMoment(heap, record.state === 'running');
    if (!heap || !moment) continue;
    found = true;
    period = heap.sampleMean;
    for (const holder of moment.holders) {
      const sample = new Message()
        .packed(
          1,
          holder.stack.map((frame) => locationOf(record.pid, frame)),
        )
        .packed(2, [holder.bytes]);
      sample.message(3, new Message().int(1, str('pid')).int(3, record.pid));
      samples.push(sample);
    }
  }
  if (!found) return null;
  const inuseSpace = new Message().int(1, str('inuse_space')).int(2, str('bytes'));
  profile.message(1, inuseSpace);
  for (const sample of samples) profile.message(2, sample);
  for (const location of locations.values()) {
    profile.message(
      4,
      new Message()
        .int(1, location.id)
        .int(3, location.address)
        .message(4, new Message().int(1, location.functionId).int(2, location.line)),
    );
  }
  for (const fn of functions.values()) {
    profile.message(5, new Message().int(1, fn.id).int(2, str(fn.name)).int(3, str(fn.name)).int(4, str(fn.file)));
  }
  const periodType = new Message().int(1, str('space')).int(2, str('bytes'));
  for (const text of strings) profile.string(6, text);
  profile.message(11, periodType).int(12, period);
  return zlib.gzipSync(profile.encode());
}
