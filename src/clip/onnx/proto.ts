// A hand-written protobuf encoder for the few ONNX messages clip-mem writes (onnx.proto, IR version 8).
// The model bytes hold only the graph and small constants: weights stay in the checkpoint file and are
// referenced as external data, so a whole model encodes in well under a megabyte and a full protobuf
// library is not worth the dependency.
//
// API:
//   encodeModel(model: ModelSpec): Uint8Array     serialized onnx.ModelProto
//   ElemType                                       TensorProto.DataType numbers for the types used
//   ModelSpec, GraphSpec, NodeSpec, AttributeValue, TensorSpec, ValueInfoSpec   plain data to encode

/** onnx.TensorProto.DataType. */
export enum ElemType {
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  INT32 = 6,
  INT64 = 7,
  BOOL = 9,
  FLOAT16 = 10,
}

export type Dim = number | string;

export type AttributeValue =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'tensor'; value: TensorSpec };

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attributes?: ReadonlyArray<[string, AttributeValue]>;
}

/** An initializer: inline bytes, or a byte range of an external file (relative path, ONNX's `location`). */
export interface TensorSpec {
  name: string;
  elemType: ElemType;
  dims: readonly number[];
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

export interface ValueInfoSpec {
  name: string;
  elemType: ElemType;
  shape: readonly Dim[];
}

export interface GraphSpec {
  name: string;
  nodes: readonly NodeSpec[];
  initializers: readonly TensorSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
}

export interface ModelSpec {
  graph: GraphSpec;
  /** Default-domain opset version (>= 17). */
  opset: number;
  producerName: string;
}

const IR_VERSION = 8;

/** Accumulates protobuf wire format. Length-delimited fields are encoded into a child writer first. */
class Writer {
  private chunks: Uint8Array[] = [];
  private current = new Uint8Array(256);
  private used = 0;
  length = 0;

  private reserve(n: number): void {
    if (this.used + n <= this.current.length) return;
    this.chunks.push(this.current.subarray(0, this.used));
    this.current = new Uint8Array(Math.max(256, n, this.current.length * 2));
    this.used = 0;
  }

  byte(b: number): void {
    this.reserve(1);
    this.current[this.used++] = b;
    this.length++;
  }

  /** Varint of a non-negative or negative integer (negative as 64-bit two's complement, 10 bytes). */
  varint(value: number): void {
    if (!Number.isSafeInteger(value)) throw new RangeError(`protobuf varint: ${value} is not a safe integer`);
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  bytes(data: Uint8Array): void {
    this.reserve(data.length);
    this.current.set(data, this.used);
    this.used += data.length;
    this.length += data.length;
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of [...this.chunks, this.current.subarray(0, this.used)]) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  // Field helpers.
  int(field: number, value: number): void {
    this.tag(field, 0);
    this.varint(value);
  }
  float(field: number, value: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.bytes(b);
  }
  lengthDelimited(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.bytes(data);
  }
  string(field: number, value: string): void {
    this.lengthDelimited(field, Buffer.from(value, 'utf8'));
  }
  message(field: number, encode: (w: Writer) => void): void {
    const child = new Writer();
    encode(child);
    this.lengthDelimited(field, child.finish());
  }
  packedInts(field: number, values: readonly number[]): void {
    const child = new Writer();
    for (const v of values) child.varint(v);
    this.lengthDelimited(field, child.finish());
  }
  packedFloats(field: number, values: readonly number[]): void {
    const b = new Uint8Array(values.length * 4);
    const view = new DataView(b.buffer);
    values.forEach((v, i) => view.setFloat32(i * 4, v, true));
    this.lengthDelimited(field, b);
  }
}

function writeTensor(w: Writer, t: TensorSpec): void {
  if (t.dims.length) w.packedInts(1, t.dims);
  w.int(2, t.elemType);
  w.string(8, t.name);
  if (t.raw) w.lengthDelimited(9, t.raw);
  if (t.external) {
    const entries: Array<[string, string]> = [
      ['location', t.external.location],
      ['offset', String(t.external.offset)],
      ['length', String(t.external.length)],
    ];
    for (const [key, value] of entries) {
      w.message(13, (e) => {
        e.string(1, key);
        e.string(2, value);
      });
    }
    w.int(14, 1); // data_location = EXTERNAL
  }
}

// AttributeProto.AttributeType
const ATTRIBUTE_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

function writeAttribute(w: Writer, name: string, a: AttributeValue): void {
  w.string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.value);
      break;
    case 'int':
      w.int(3, a.value);
      break;
    case 'string':
      w.string(4, a.value);
      break;
    case 'tensor':
      w.message(5, (t) => writeTensor(t, a.value));
      break;
    case 'floats':
      w.packedFloats(7, a.value);
      break;
    case 'ints':
      w.packedInts(8, a.value);
      break;
  }
  w.int(20, ATTRIBUTE_TYPE[a.kind]);
}

function writeNode(w: Writer, n: NodeSpec): void {
  for (const input of n.inputs) w.string(1, input);
  for (const output of n.outputs) w.string(2, output);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const [name, value] of n.attributes ?? []) w.message(5, (a) => writeAttribute(a, name, value));
  if (n.domain) w.string(7, n.domain);
}

function writeValueInfo(w: Writer, v: ValueInfoSpec): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.shape) {
          shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        }
      });
    }),
  );
}

function writeGraph(w: Writer, g: GraphSpec): void {
  for (const n of g.nodes) w.message(1, (m) => writeNode(m, n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, (m) => writeTensor(m, t));
  for (const v of g.inputs) w.message(11, (m) => writeValueInfo(m, v));
  for (const v of g.outputs) w.message(12, (m) => writeValueInfo(m, v));
}

export function encodeModel(model: ModelSpec): Uint8Array {
  if (model.opset < 17) throw new RangeError(`ONNX opset ${model.opset}: clip-mem writes opset 17 or later`);
  const w = new Writer();
  w.int(1, IR_VERSION);
  w.string(2, model.producerName);
  w.message(7, (g) => writeGraph(g, model.graph));
  w.message(8, (o) => {
    o.string(1, '');
    o.int(2, model.opset);
  });
  return w.finish();
}
