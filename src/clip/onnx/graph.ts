// An ONNX graph builder with static shapes: every op helper checks its operands and computes the
// output shape, so graphs are validated while they are built and the reverse-mode pass (grad.ts) can
// emit exact reductions for broadcasts. Shapes are plain numbers: clip-mem builds one graph per batch
// size and sequence length.
//
// API:
//   new Graph(name)
//   g.input(name, type, shape) / g.output(value, name?)      graph inputs and outputs
//   g.constant(data, shape) / g.int64s(values, shape?)       small inline initializers
//   g.external(name, type, shape, {location, offset, length}) an initializer that stays in a file
//   op helpers: gemm, matmul, add, sub, mul, div, neg, reshape, transpose, layerNorm, softmax,
//     logSoftmax, sigmoid, exp, eyeLike, sqrt, reduceSum, reduceMean, gather, concat, split, expand, slice, pad,
//     oneHot, argMax, cast, dequantize
//   g.toModel(opset = 17): Uint8Array                          serialized ModelProto
import { AttributeValue, ElemType, encodeModel, NodeSpec, TensorSpec } from './proto';
import { numel } from '../dtype';

export { ElemType };

export interface Value {
  /** Mutable so that a finished value can take a public name (graph outputs) without an Identity node. */
  name: string;
  readonly type: ElemType;
  readonly shape: readonly number[];
}

export interface Node {
  readonly op: string;
  readonly inputs: ReadonlyArray<Value | undefined>;
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, AttributeValue>>;
}

const int = (value: number): AttributeValue => ({ kind: 'int', value });
const ints = (value: readonly number[]): AttributeValue => ({ kind: 'ints', value });
const float = (value: number): AttributeValue => ({ kind: 'float', value });

export { numel };
export const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);
const describe = (v: Value): string => `${v.name}[${v.shape.join(',')}]`;

/** numpy broadcasting of two shapes. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`cannot broadcast [${a.join(',')}] with [${b.join(',')}]`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<Value, Omit<TensorSpec, 'name' | 'elemType' | 'dims'>>();
  private counter = 0;
  private scalars = new Map<string, Value>();

  constructor(readonly name: string) {}

  private value(type: ElemType, shape: readonly number[], name?: string): Value {
    return { name: name ?? `t${this.counter++}`, type, shape: [...shape] };
  }

  isConstant(v: Value): boolean {
    return this.initializers.has(v);
  }

  /** The values of an inline int64 constant (the shape and axes operands the gradient rules read). */
  initializerInt64s(v: Value): number[] {
    const raw = this.initializers.get(v)?.raw;
    if (!raw || v.type !== ElemType.INT64) throw new Error(`${v.name} is not an inline int64 constant`);
    return Array.from(new BigInt64Array(raw.buffer, raw.byteOffset, raw.byteLength / 8), Number);
  }

  input(name: string, type: ElemType, shape: readonly number[]): Value {
    const v = this.value(type, shape, name);
    this.inputs.push(v);
    return v;
  }

  output(v: Value, name?: string): Value {
    if (name !== undefined) v.name = name;
    this.outputs.push(v);
    return v;
  }

  constant(data: Float32Array | BigInt64Array | Int32Array, shape: readonly number[]): Value {
    const type =
      data instanceof Float32Array ? ElemType.FLOAT : data instanceof BigInt64Array ? ElemType.INT64 : ElemType.INT32;
    if (data.length !== numel(shape)) throw new Error(`constant: ${data.length} values for shape [${shape.join(',')}]`);
    const v = this.value(type, shape);
    this.initializers.set(v, { raw: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() });
    return v;
  }

  /** A float scalar constant (shape []), shared between uses. */
  scalar(x: number): Value {
    const key = String(x);
    let v = this.scalars.get(key);
    if (!v) {
      v = this.constant(new Float32Array([x]), []);
      this.scalars.set(key, v);
    }
    return v;
  }

  int64s(values: readonly number[], shape: readonly number[] = [values.length]): Value {
    return this.constant(
      BigInt64Array.from(values, (x) => BigInt(x)),
      shape,
    );
  }

  external(name: string, type: ElemType, shape: readonly number[], location: TensorSpec['external']): Value {
    const v = this.value(type, shape, name);
    this.initializers.set(v, { external: location });
    return v;
  }

  /** Appends a node; `outputs` gives each output's type and shape. */
  node(
    op: string,
    inputs: ReadonlyArray<Value | undefined>,
    outputs: ReadonlyArray<{ type: ElemType; shape: readonly number[] }>,
    attrs: Record<string, AttributeValue> = {},
  ): Value[] {
    const outs = outputs.map((o) => this.value(o.type, o.shape));
    this.nodes.push({ op, inputs: [...inputs], outputs: outs, attrs });
    return outs;
  }

  private unary(op: string, x: Value, attrs: Record<string, AttributeValue> = {}): Value {
    return this.node(op, [x], [{ type: x.type, shape: x.shape }], attrs)[0];
  }

  private binary(op: string, a: Value, b: Value): Value {
    if (a.type !== b.type) throw new Error(`${op}: ${describe(a)} and ${describe(b)} differ in type`);
    return this.node(op, [a, b], [{ type: a.type, shape: broadcastShapes(a.shape, b.shape) }])[0];
  }

  add(a: Value, b: Value): Value {
    return this.binary('Add', a, b);
  }
  sub(a: Value, b: Value): Value {
    return this.binary('Sub', a, b);
  }
  mul(a: Value, b: Value): Value {
    return this.binary('Mul', a, b);
  }
  div(a: Value, b: Value): Value {
    return this.binary('Div', a, b);
  }
  neg(x: Value): Value {
    return this.unary('Neg', x);
  }
  sigmoid(x: Value): Value {
    return this.unary('Sigmoid', x);
  }
  exp(x: Value): Value {
    return this.unary('Exp', x);
  }
  /** The identity matrix of a 2-D value's shape, made when the graph runs (no [n, n] constant in the model). */
  eyeLike(x: Value): Value {
    if (x.shape.length !== 2) throw new Error(`EyeLike: ${describe(x)} is not 2-D`);
    return this.unary('EyeLike', x);
  }
  sqrt(x: Value): Value {
    return this.unary('Sqrt', x);
  }

  /** Y = op(A) op(B) + C for 2-D A and B (alpha = beta = 1). */
  gemm(a: Value, b: Value, c?: Value, opts: { transA?: boolean; transB?: boolean } = {}): Value {
    if (a.shape.length !== 2 || b.shape.length !== 2)
      throw new Error(`Gemm needs 2-D operands: ${describe(a)}, ${describe(b)}`);
    const [m, k] = opts.transA ? [a.shape[1], a.shape[0]] : a.shape;
    const [k2, n] = opts.transB ? [b.shape[1], b.shape[0]] : b.shape;
    if (k !== k2) throw new Error(`Gemm: inner dimensions differ: ${describe(a)}, ${describe(b)}`);
    if (c) broadcastShapes(c.shape, [m, n]);
    const attrs: Record<string, AttributeValue> = {};
    if (opts.transA) attrs.transA = int(1);
    if (opts.transB) attrs.transB = int(1);
    return this.node('Gemm', c ? [a, b, c] : [a, b], [{ type: a.type, shape: [m, n] }], attrs)[0];
  }

  /** Batched matrix product; both operands have the same rank and batch dimensions. */
  matmul(a: Value, b: Value): Value {
    const r = a.shape.length;
    if (
      r < 2 ||
      b.shape.length !== r ||
      !sameShape(a.shape.slice(0, r - 2), b.shape.slice(0, r - 2)) ||
      a.shape[r - 1] !== b.shape[r - 2]
    ) {
      throw new Error(`MatMul: incompatible ${describe(a)} and ${describe(b)}`);
    }
    return this.node('MatMul', [a, b], [{ type: a.type, shape: [...a.shape.slice(0, r - 1), b.shape[r - 1]] }])[0];
  }

  reshape(x: Value, shape: readonly number[]): Value {
    if (numel(shape) !== numel(x.shape)) throw new Error(`Reshape: ${describe(x)} to [${shape.join(',')}]`);
    if (sameShape(shape, x.shape)) return x;
    return this.node('Reshape', [x, this.int64s(shape)], [{ type: x.type, shape }])[0];
  }

  transpose(x: Value, perm: readonly number[]): Value {
    if (perm.length !== x.shape.length) throw new Error(`Transpose: perm [${perm}] for ${describe(x)}`);
    return this.node('Transpose', [x], [{ type: x.type, shape: perm.map((p) => x.shape[p]) }], { perm: ints(perm) })[0];
  }

  /** LayerNormalization over the last axis of a 2-D input; also returns Mean and InvStdDev ([N, 1]). */
  layerNorm(x: Value, scale: Value, bias: Value, epsilon: number): { y: Value; mean: Value; invStd: Value } {
    if (x.shape.length !== 2) throw new Error(`layerNorm expects a 2-D input, got ${describe(x)}`);
    const stat = { type: x.type, shape: [x.shape[0], 1] };
    const [y, mean, invStd] = this.node(
      'LayerNormalization',
      [x, scale, bias],
      [{ type: x.type, shape: x.shape }, stat, stat],
      {
        axis: int(-1),
        epsilon: float(epsilon),
      },
    );
    return { y, mean, invStd };
  }

  softmax(x: Value, axis: number): Value {
    return this.unary('Softmax', x, { axis: int(axis) });
  }
  logSoftmax(x: Value, axis: number): Value {
    return this.unary('LogSoftmax', x, { axis: int(axis) });
  }

  private reduce(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
    const norm = axes.map((a) => (a < 0 ? a + x.shape.length : a));
    const shape = keepdims
      ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d))
      : x.shape.filter((_, i) => !norm.includes(i));
    const keep = { keepdims: int(keepdims ? 1 : 0) };
    if (op === 'ReduceSum') return this.node(op, [x, this.int64s(norm)], [{ type: x.type, shape }], keep)[0];
    return this.node(op, [x], [{ type: x.type, shape }], { ...keep, axes: ints(norm) })[0]; // opset 17: axes attribute
  }
  reduceSum(x: Value, axes: readonly number[], keepdims: boolean): Value {
    return this.reduce('ReduceSum', x, axes, keepdims);
  }
  reduceMean(x: Value, axes: readonly number[], keepdims: boolean): Value {
    return this.reduce('ReduceMean', x, axes, keepdims);
  }

  /** Rows of a 2-D table: data[indices] with 1-D int64 indices. */
  gather(data: Value, indices: Value): Value {
    if (indices.shape.length !== 1) throw new Error(`gather takes 1-D indices, got ${describe(indices)}`);
    return this.node(
      'Gather',
      [data, indices],
      [{ type: data.type, shape: [indices.shape[0], ...data.shape.slice(1)] }],
      { axis: int(0) },
    )[0];
  }

  concat(xs: readonly Value[], axis: number): Value {
    const shape = [...xs[0].shape];
    shape[axis] = xs.reduce((sum, x) => sum + x.shape[axis], 0);
    return this.node('Concat', xs, [{ type: xs[0].type, shape }], { axis: int(axis) })[0];
  }

  split(x: Value, sizes: readonly number[], axis: number): Value[] {
    const outputs = sizes.map((s) => ({ type: x.type, shape: x.shape.map((d, i) => (i === axis ? s : d)) }));
    return this.node('Split', [x, this.int64s(sizes)], outputs, { axis: int(axis) });
  }

  expand(x: Value, shape: readonly number[]): Value {
    const out = broadcastShapes(x.shape, shape);
    if (sameShape(out, x.shape)) return x;
    return this.node('Expand', [x, this.int64s(shape)], [{ type: x.type, shape: out }])[0];
  }

  /** x[start:end] along one axis. */
  slice(x: Value, axis: number, start: number, end: number): Value {
    if (start === 0 && end === x.shape[axis]) return x;
    const shape = x.shape.map((d, i) => (i === axis ? end - start : d));
    return this.node(
      'Slice',
      [x, this.int64s([start]), this.int64s([end]), this.int64s([axis])],
      [{ type: x.type, shape }],
    )[0];
  }

  /** Zero padding: `pads` as ONNX orders them (all begins, then all ends). */
  pad(x: Value, pads: readonly number[]): Value {
    const r = x.shape.length;
    const shape = x.shape.map((d, i) => d + pads[i] + pads[i + r]);
    return this.node('Pad', [x, this.int64s(pads)], [{ type: x.type, shape }])[0];
  }

  /** Float one-hot rows [K, depth] of 1-D int64 indices. */
  oneHot(indices: Value, depth: number): Value {
    return this.node(
      'OneHot',
      [indices, this.int64s([depth], []), this.constant(new Float32Array([0, 1]), [2])],
      [{ type: ElemType.FLOAT, shape: [...indices.shape, depth] }],
    )[0];
  }

  argMax(x: Value, axis: number): Value {
    return this.node('ArgMax', [x], [{ type: ElemType.INT64, shape: x.shape.filter((_, i) => i !== axis) }], {
      axis: int(axis),
      keepdims: int(0),
    })[0];
  }

  cast(x: Value, to: ElemType): Value {
    if (x.type === to) return x;
    return this.node('Cast', [x], [{ type: to, shape: x.shape }], { to: int(to) })[0];
  }

  /** int8 weight-only: x * scale with one scale per index of `axis`. */
  dequantize(q: Value, scale: Value, axis: number): Value {
    return this.node('DequantizeLinear', [q, scale], [{ type: ElemType.FLOAT, shape: q.shape }], {
      axis: int(axis),
    })[0];
  }

  toModel(opset = 17): Uint8Array {
    const info = (v: Value) => ({ name: v.name, elemType: v.type, shape: v.shape });
    const nodes: NodeSpec[] = this.nodes.map((n, i) => ({
      opType: n.op,
      name: `${n.op}_${i}`,
      inputs: n.inputs.map((v) => v?.name ?? ''),
      outputs: n.outputs.map((v) => v.name),
      attributes: Object.entries(n.attrs),
    }));
    const initializers: TensorSpec[] = [...this.initializers].map(([v, data]) => ({
      name: v.name,
      elemType: v.type,
      dims: v.shape,
      ...data,
    }));
    return encodeModel({
      producerName: 'clip-mem',
      opset,
      graph: { name: this.name, nodes, initializers, inputs: this.inputs.map(info), outputs: this.outputs.map(info) },
    });
  }
}
