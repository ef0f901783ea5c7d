// Reverse-mode differentiation over a Graph: each op type the CLIP graph uses has a rule that emits
// the ONNX nodes of its vector-Jacobian product into the same graph, so one onnxruntime session runs
// the forward pass, the loss and every parameter gradient.
//
// API:
//   gradients(graph, loss, wrt): Map<Value, Value>   d loss / d w for each w in wrt (scalar loss)
import { Graph, Node, Value, numel, sameShape } from './graph';

type Rule = (g: Graph, node: Node, dy: Value, needs: (i: number) => boolean) => Array<Value | undefined>;

/** Sums `dy` down to `shape` (the reverse of numpy broadcasting). */
function unbroadcast(g: Graph, dy: Value, shape: readonly number[]): Value {
  if (sameShape(dy.shape, shape)) return dy;
  const lead = dy.shape.length - shape.length;
  const axes: number[] = [];
  dy.shape.forEach((d, i) => {
    if (i < lead || (shape[i - lead] === 1 && d !== 1)) axes.push(i);
  });
  const summed = axes.length ? g.reduceSum(dy, axes, true) : dy;
  return g.reshape(summed, shape);
}

function attr(node: Node, name: string): number;
function attr(node: Node, name: string, list: true): readonly number[];
function attr(node: Node, name: string, list?: true): number | readonly number[] {
  const a = node.attrs[name];
  if (list ? a?.kind !== 'ints' : a?.kind !== 'int') throw new Error(`${node.op}: attribute ${name} missing`);
  return a.value as number | readonly number[];
}

const swapLast = (r: number): number[] => [...Array(r - 2).keys(), r - 1, r - 2];

const rules: Record<string, Rule> = {
  Add: (g, n, dy, needs) => [
    needs(0) ? unbroadcast(g, dy, n.inputs[0]!.shape) : undefined,
    needs(1) ? unbroadcast(g, dy, n.inputs[1]!.shape) : undefined,
  ],
  Sub: (g, n, dy, needs) => [
    needs(0) ? unbroadcast(g, dy, n.inputs[0]!.shape) : undefined,
    needs(1) ? unbroadcast(g, g.neg(dy), n.inputs[1]!.shape) : undefined,
  ],
  Mul: (g, n, dy, needs) => {
    const [a, b] = n.inputs as Value[];
    return [
      needs(0) ? unbroadcast(g, g.mul(dy, b), a.shape) : undefined,
      needs(1) ? unbroadcast(g, g.mul(dy, a), b.shape) : undefined,
    ];
  },
  Div: (g, n, dy, needs) => {
    const [a, b] = n.inputs as Value[];
    const y = n.outputs[0];
    return [
      needs(0) ? unbroadcast(g, g.div(dy, b), a.shape) : undefined,
      needs(1) ? unbroadcast(g, g.neg(g.div(g.mul(dy, y), b)), b.shape) : undefined, // d(a/b)/db = -y/b
    ];
  },
  Neg: (g, _n, dy) => [g.neg(dy)],
  Sigmoid: (g, n, dy) => {
    const y = n.outputs[0];
    return [g.mul(dy, g.mul(y, g.sub(g.scalar(1), y)))];
  },
  Exp: (g, n, dy) => [g.mul(dy, n.outputs[0])],
  Sqrt: (g, n, dy) => [g.div(g.mul(dy, g.scalar(0.5)), n.outputs[0])],
  Gemm: (g, n, dy, needs) => {
    const [a, b, c] = n.inputs as Value[];
    if (n.attrs.transA) throw new Error('gradient of Gemm with transA is not implemented');
    const transB = Boolean(n.attrs.transB);
    return [
      needs(0) ? g.gemm(dy, b, undefined, { transB: !transB }) : undefined,
      needs(1)
        ? transB
          ? g.gemm(dy, a, undefined, { transA: true })
          : g.gemm(a, dy, undefined, { transA: true })
        : undefined,
      c && needs(2) ? unbroadcast(g, dy, c.shape) : undefined,
    ];
  },
  MatMul: (g, n, dy, needs) => {
    const [a, b] = n.inputs as Value[];
    const r = a.shape.length;
    return [
      needs(0) ? g.matmul(dy, g.transpose(b, swapLast(r))) : undefined,
      needs(1) ? g.matmul(g.transpose(a, swapLast(r)), dy) : undefined,
    ];
  },
  Reshape: (g, n, dy) => [g.reshape(dy, n.inputs[0]!.shape)],
  Transpose: (g, n, dy) => {
    const perm = attr(n, 'perm', true);
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [g.transpose(dy, inverse)];
  },
  LayerNormalization: (g, n, dy, needs) => {
    const [x, gamma] = n.inputs as Value[];
    const [, mean, invStd] = n.outputs;
    const xhat = g.mul(g.sub(x, mean), invStd);
    const dgamma = needs(1) ? g.reduceSum(g.mul(dy, xhat), [0], false) : undefined;
    const dbeta = needs(2) ? g.reduceSum(dy, [0], false) : undefined;
    let dx: Value | undefined;
    if (needs(0)) {
      const d = g.mul(dy, gamma);
      const centred = g.sub(d, g.reduceMean(d, [-1], true));
      dx = g.mul(invStd, g.sub(centred, g.mul(xhat, g.reduceMean(g.mul(d, xhat), [-1], true))));
    }
    return [dx, dgamma, dbeta];
  },
  Softmax: (g, n, dy) => {
    const y = n.outputs[0];
    const axis = attr(n, 'axis');
    return [g.mul(y, g.sub(dy, g.reduceSum(g.mul(dy, y), [axis], true)))];
  },
  LogSoftmax: (g, n, dy) => {
    const y = n.outputs[0];
    const axis = attr(n, 'axis');
    return [g.sub(dy, g.mul(g.exp(y), g.reduceSum(dy, [axis], true)))];
  },
  ReduceSum: (g, n, dy) => {
    const x = n.inputs[0]!;
    const keep = attr(n, 'keepdims') === 1;
    const axes = Array.from(g.initializerInt64s(n.inputs[1]!));
    const kept = keep
      ? dy
      : g.reshape(
          dy,
          x.shape.map((d, i) => (axes.includes(i) ? 1 : d)),
        );
    return [g.expand(kept, x.shape)];
  },
  Gather: (g, n, dy, needs) => {
    const [data, indices] = n.inputs as Value[];
    if (!needs(0)) return [];
    // scatter-add of the rows as one product: onehot(indices)^T [R, K] x dy [K, D]
    const rows = g.oneHot(indices, data.shape[0]);
    const flat = g.reshape(dy, [indices.shape[0], numel(data.shape.slice(1))]);
    return [g.reshape(g.gemm(rows, flat, undefined, { transA: true }), data.shape)];
  },
  Concat: (g, n, dy) => {
    const axis = attr(n, 'axis');
    const inputs = n.inputs as Value[];
    return g.split(
      dy,
      inputs.map((x) => x.shape[axis]),
      axis,
    );
  },
  Expand: (g, n, dy) => [unbroadcast(g, dy, n.inputs[0]!.shape)],
  // Reads only its input's shape.
  EyeLike: () => [],
  Slice: (g, n, dy) => {
    const x = n.inputs[0]!;
    const [start] = g.initializerInt64s(n.inputs[1]!);
    const [axis] = g.initializerInt64s(n.inputs[3]!);
    const r = x.shape.length;
    const pads = new Array<number>(2 * r).fill(0);
    pads[axis] = start;
    pads[axis + r] = x.shape[axis] - dy.shape[axis] - start;
    return [g.pad(dy, pads)];
  },
};

export function gradients(g: Graph, loss: Value, wrt: readonly Value[]): Map<Value, Value> {
  if (loss.shape.length !== 0) throw new Error(`gradients: the loss must be a scalar, got [${loss.shape.join(',')}]`);
  // Which values depend on a parameter (only those carry gradients).
  const varies = new Set<Value>(wrt);
  const forward = [...g.nodes];
  for (const node of forward) {
    if (node.inputs.some((v) => v && varies.has(v))) node.outputs.forEach((v) => varies.add(v));
  }
  const grads = new Map<Value, Value>([[loss, g.scalar(1)]]);
  const accumulate = (v: Value, dv: Value): void => {
    const prior = grads.get(v);
    grads.set(v, prior ? g.add(prior, dv) : dv);
  };
  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i];
    const dy = grads.get(node.outputs[0]);
    if (!dy || !node.inputs.some((v) => v && varies.has(v))) continue;
    const rule = rules[node.op];
    if (!rule) throw new Error(`gradients: no rule for ${node.op} (output ${node.outputs[0].name})`);
    const needs = (k: number): boolean => Boolean(node.inputs[k] && varies.has(node.inputs[k]!));
    rule(g, node, dy, needs).forEach((dx, k) => {
      if (dx && needs(k)) accumulate(node.inputs[k]!, dx);
    });
  }
  const result = new Map<Value, Value>();
  for (const w of wrt) {
    const dw = grads.get(w);
    if (!dw) throw new Error(`gradients: ${w.name} does not reach the loss`);
    result.set(w, dw);
  }
  return result;
}
