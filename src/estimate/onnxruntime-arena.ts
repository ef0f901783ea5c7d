// What an onnxruntime inference run allocates on the CPU, replayed from the graph clip-mem builds: the
// order onnxruntime's executor runs the nodes in, the buffer its allocation planner gives each tensor,
// and the arena (a best-fit allocator with coalescing, "BFC") those buffers come from. Checked against
// onnxruntime 1.30's own profiling (enableProfiling: mem_bytes_requested_in_use, mem_in_use_peak,
// mem_arena_held) on every preset and dtype: equal to within the few hundred bytes of scalars it holds
// besides (test/estimate-arena.test.ts). The rules are onnxruntime's (core/graph/graph_viewer.cc,
// core/framework/allocation_planner.cc, core/framework/bfc_arena.cc), as far as clip-mem's graphs need:
// - order: a depth-first walk back from the nodes nobody consumes, each node after its inputs, a node's
//   producers visited from the highest node index down (Graph::ReverseDFSFrom with NodeCompare);
// - fusion: x * Sigmoid(x * c) runs as one QuickGelu node (the optimizer's QuickGeluFusion), so its two
//   intermediates are never allocated; the fused node takes an index after every original one;
// - planner: Reshape-like ops share their input's buffer; Softmax writes over its input when that input
//   is used by nothing later and has its shape; else a freed buffer of the same element size and shape
//   (most recently freed first) serves the tensor; else a new buffer. A buffer is released after its
//   last use. Graph outputs, and outputs no node reads (LayerNormalization's mean and deviation), are
//   held until the run returns;
// - arena: requests round up to 256 B; free chunks live in bins by size (256 B << k); the smallest chunk
//   that fits is taken (lowest address among equals) and split when it is at least twice the request or
//   128 MiB larger; freed chunks merge with free neighbours. When nothing fits, a region is added: 1 MiB
//   first, each next one twice the last (up to 1 GiB), or the request's next power of two.
import { ElemType, numel, sameShape, type Graph, type Node, type Value } from '../clip/onnx/graph';

const ELEMENT_BYTES: Record<ElemType, number> = {
  [ElemType.FLOAT]: 4,
  [ElemType.UINT8]: 1,
  [ElemType.INT8]: 1,
  [ElemType.INT32]: 4,
  [ElemType.INT64]: 8,
  [ElemType.BOOL]: 1,
  [ElemType.FLOAT16]: 2,
};

export const valueBytes = (v: Value): number => numel(v.shape) * ELEMENT_BYTES[v.type];

/** Ops whose output is a view of their input's buffer in onnxruntime. */
export const ALIASING_OPS = new Set(['Reshape', 'Squeeze', 'Unsqueeze', 'Flatten']);
/** Ops onnxruntime may run in place over their first input (the planner's MayInplace, for clip-mem's graphs). */
const IN_PLACE_OPS = new Set(['Softmax']);

export interface ArenaRun {
  /** The most bytes of tensors held at once (profiling's mem_bytes_requested_in_use). */
  requestedPeakBytes: number;
  /** The most bytes of the arena's chunks in use at once (requests rounded, chunks left whole). */
  inUsePeakBytes: number;
  /** The regions the arena reserved: address space. */
  reservedBytes: number;
  /** The bytes of the regions' 4 KiB pages the run wrote to: what it adds to RSS. */
  touchedBytes: number;
}

/** One buffer the planner asks the arena for: allocated before node `from` runs, released after node `until`. */
interface Allocation {
  bytes: number;
  from: number;
  until: number;
}

/** The graph's nodes with x * Sigmoid(x * c) as one QuickGelu node, and each node's index for ordering. */
function fuseQuickGelu(g: Graph): { nodes: Node[]; indexOf: Map<Node, number> } {
  const consumers = new Map<Value, number>();
  const producer = new Map<Value, Node>();
  for (const n of g.nodes) {
    for (const x of n.inputs) if (x) consumers.set(x, (consumers.get(x) ?? 0) + 1);
    for (const o of n.outputs) producer.set(o, n);
  }
  const graphOutputs = new Set(g.outputs);
  const intermediate = (v: Value) => consumers.get(v) === 1 && !graphOutputs.has(v);
  const dropped = new Set<Node>();
  const fusedNode = new Map<Node, Node>();
  for (const n of g.nodes) {
    if (n.op !== 'Mul') continue;
    for (const [a, b] of [
      [0, 1],
      [1, 0],
    ]) {
      const sigmoid = n.inputs[b] && producer.get(n.inputs[b]);
      const scaled = sigmoid?.op === 'Sigmoid' && sigmoid.inputs[0] ? producer.get(sigmoid.inputs[0]) : undefined;
      const x = n.inputs[a];
      if (!sigmoid || !scaled || scaled.op !== 'Mul' || !x || !scaled.inputs.includes(x)) continue;
      if (!intermediate(sigmoid.outputs[0]) || !intermediate(scaled.outputs[0])) continue;
      dropped.add(scaled).add(sigmoid);
      fusedNode.set(n, { op: 'QuickGelu', inputs: [x], outputs: n.outputs, attrs: {} });
      break;
    }
  }
  const indexOf = new Map<Node, number>();
  const nodes: Node[] = [];
  let next = g.nodes.length;
  g.nodes.forEach((n, index) => {
    if (dropped.has(n)) return;
    const fused = fusedNode.get(n);
    indexOf.set(fused ?? n, fused ? next++ : index);
    nodes.push(fused ?? n);
  });
  return { nodes, indexOf };
}

/** onnxruntime's default execution order (see the file comment). */
function executionOrder(nodes: Node[], indexOf: Map<Node, number>): Node[] {
  const producer = new Map<Value, Node>();
  for (const n of nodes) for (const o of n.outputs) producer.set(o, n);
  const producersOf = (n: Node) =>
    [...new Set(n.inputs.map((x) => x && producer.get(x)).filter((p): p is Node => !!p))].sort(
      (a, b) => indexOf.get(a)! - indexOf.get(b)!,
    );
  const consumed = new Set(nodes.flatMap(producersOf));
  const stack: [Node, boolean][] = nodes.filter((n) => !consumed.has(n)).map((n) => [n, false]);
  const visited = new Set<Node>();
  const order: Node[] = [];
  while (stack.length) {
    const [n, leaving] = stack.pop()!;
    if (leaving) {
      order.push(n);
      continue;
    }
    if (visited.has(n)) continue;
    visited.add(n);
    stack.push([n, true]);
    for (const p of producersOf(n)) if (!visited.has(p)) stack.push([p, false]);
  }
  return order;
}

/** The allocation planner's buffers over the run, in node order (see the file comment). */
function plannedAllocations(g: Graph, order: Node[]): Allocation[] {
  const graphInputs = new Set(g.inputs);
  const graphOutputs = new Set(g.outputs);
  // Never released during the run: weights, the caller's inputs, the run's outputs.
  const stored = (v: Value) => g.initializers.has(v) || graphInputs.has(v) || graphOutputs.has(v);
  const sameSize = (a: Value, b: Value) =>
    ELEMENT_BYTES[a.type] === ELEMENT_BYTES[b.type] && sameShape(a.shape, b.shape);
  // Each value's uses: its consumers, plus one for being produced (an output nobody reads stays at 1).
  const uses = new Map<Value, number>();
  for (const n of order) {
    for (const x of n.inputs) if (x) uses.set(x, (uses.get(x) ?? 0) + 1);
    for (const o of n.outputs) uses.set(o, (uses.get(o) ?? 0) + 1);
  }
  const bufferOf = new Map<Value, Value>();
  const buffer = (v: Value) => bufferOf.get(v) ?? v;
  const remaining = new Map<Value, number>();
  const allocationOf = new Map<Value, Allocation>();
  const allocations: Allocation[] = [];
  const freelist: Value[] = [];
  const share = (value: Value, owner: Value, at: number) => {
    bufferOf.set(value, owner);
    remaining.set(owner, (remaining.get(owner) ?? 0) + uses.get(value)!);
    const allocation = allocationOf.get(owner);
    if (allocation) allocation.until = Math.max(allocation.until, at);
  };
  order.forEach((n, at) => {
    n.outputs.forEach((o, index) => {
      const input = n.inputs[0];
      if (graphOutputs.has(o)) {
        // a buffer of its own (below), held until the run returns
      } else if (index === 0 && input && ALIASING_OPS.has(n.op)) {
        return share(o, buffer(input), at);
      } else if (
        index === 0 &&
        input &&
        IN_PLACE_OPS.has(n.op) &&
        !stored(buffer(input)) &&
        remaining.get(buffer(input)) === 1 &&
        sameSize(input, o)
      ) {
        return share(o, buffer(input), at);
      } else if (o.shape.length > 0) {
        const free = freelist.findIndex((b) => sameSize(b, o));
        if (free >= 0) return share(o, freelist.splice(free, 1)[0], at);
      }
      remaining.set(o, uses.get(o)!);
      const allocation = { bytes: valueBytes(o), from: at, until: graphOutputs.has(o) ? Infinity : at };
      allocations.push(allocation);
      allocationOf.set(o, allocation);
    });
    const release = (v: Value) => {
      const b = buffer(v);
      if (stored(b)) return;
      const allocation = allocationOf.get(b)!;
      allocation.until = Math.max(allocation.until, at);
      remaining.set(b, remaining.get(b)! - 1);
      if (remaining.get(b) === 0) freelist.unshift(b);
    };
    for (const x of n.inputs) if (x) release(x);
    for (const o of n.outputs) {
      const allocation = allocationOf.get(buffer(o));
      if (uses.get(o) === 1 && allocation) allocation.until = Infinity;
      else release(o);
    }
  });
  return allocations;
}

const ROUNDING = 256;
const FIRST_REGION = 2 ** 20;
const LARGEST_REGION_STEP = 2 ** 30;
const MAX_DEAD_BYTES = 128 * 2 ** 20;
const BINS = 21;
const PAGE = 4096;

interface Chunk {
  address: number;
  size: number;
  used: boolean;
  prev: Chunk | null;
  next: Chunk | null;
}

/** The arena serving `allocations` in order (see the file comment). */
function simulateArena(allocations: readonly Allocation[]): Omit<ArenaRun, 'requestedPeakBytes'> {
  const bin = (size: number) => Math.min(Math.floor(Math.log2(Math.max(size / ROUNDING, 1))), BINS - 1);
  const free = new Set<Chunk>();
  let nextRegionSize = FIRST_REGION;
  let nextAddress = 0;
  let reservedBytes = 0;
  let inUse = 0;
  let inUsePeakBytes = 0;
  const written: [number, number][] = [];
  const addRegion = (rounded: number) => {
    let grown = false;
    while (rounded > nextRegionSize) {
      nextRegionSize *= 2;
      grown = true;
    }
    const size = nextRegionSize;
    if (!grown) nextRegionSize = Math.min(2 * nextRegionSize, LARGEST_REGION_STEP);
    // Regions are separate mappings: a gap keeps their chunks from ever merging.
    free.add({ address: nextAddress, size, used: false, prev: null, next: null });
    nextAddress += size + LARGEST_REGION_STEP;
    reservedBytes += size;
  };
  const bestFit = (rounded: number): Chunk | undefined => {
    for (let b = bin(rounded); b < BINS; b++) {
      let best: Chunk | undefined;
      for (const c of free) {
        if (bin(c.size) !== b || c.size < rounded) continue;
        if (!best || c.size < best.size || (c.size === best.size && c.address < best.address)) best = c;
      }
      if (best) return best;
    }
    return undefined;
  };
  const chunkOf = new Map<number, Chunk>();
  const events = allocations.flatMap((a, id) => [
    { at: a.from, id, allocate: true },
    ...(a.until === Infinity ? [] : [{ at: a.until + 0.5, id, allocate: false }]),
  ]);
  events.sort((x, y) => x.at - y.at || x.id - y.id);
  for (const { id, allocate } of events) {
    if (allocate) {
      const bytes = allocations[id].bytes;
      const rounded = Math.max(ROUNDING, Math.ceil(bytes / ROUNDING) * ROUNDING);
      let c = bestFit(rounded);
      if (!c) {
        addRegion(rounded);
        c = bestFit(rounded)!;
      }
      free.delete(c);
      if (c.size >= 2 * rounded || c.size - rounded >= MAX_DEAD_BYTES) {
        const rest: Chunk = {
          address: c.address + rounded,
          size: c.size - rounded,
          used: false,
          prev: c,
          next: c.next,
        };
        if (c.next) c.next.prev = rest;
        c.next = rest;
        c.size = rounded;
        free.add(rest);
      }
      c.used = true;
      inUse += c.size;
      inUsePeakBytes = Math.max(inUsePeakBytes, inUse);
      chunkOf.set(id, c);
      written.push([c.address, c.address + bytes]);
    } else {
      let c = chunkOf.get(id)!;
      c.used = false;
      inUse -= c.size;
      const merge = (left: Chunk, right: Chunk) => {
        free.delete(right);
        free.delete(left);
        left.size += right.size;
        left.next = right.next;
        if (right.next) right.next.prev = left;
      };
      if (c.next && !c.next.used) merge(c, c.next);
      if (c.prev && !c.prev.used) {
        const left = c.prev;
        merge(left, c);
        c = left;
      }
      free.add(c);
    }
  }
  return { inUsePeakBytes, reservedBytes, touchedBytes: pagesOf(written) };
}

/** The bytes of the distinct 4 KiB pages the ranges cover. */
function pagesOf(ranges: [number, number][]): number {
  const pages = ranges
    .filter(([start, end]) => end > start)
    .map(([start, end]) => [Math.floor(start / PAGE), Math.ceil(end / PAGE)])
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let reach = -1;
  for (const [first, last] of pages) {
    const from = Math.max(first, reach);
    if (last > from) total += last - from;
    reach = Math.max(reach, last);
  }
  return total * PAGE;
}

/** The run's memory in onnxruntime's CPU arena (see the file comment). */
export function arenaRun(g: Graph): ArenaRun {
  const { nodes, indexOf } = fuseQuickGelu(g);
  const allocations = plannedAllocations(g, executionOrder(nodes, indexOf));
  const delta = new Map<number, number>();
  for (const a of allocations) {
    delta.set(a.from, (delta.get(a.from) ?? 0) + a.bytes);
    if (a.until !== Infinity) delta.set(a.until + 1, (delta.get(a.until + 1) ?? 0) - a.bytes);
  }
  let held = 0;
  let requestedPeakBytes = 0;
  for (const at of [...delta.keys()].sort((a, b) => a - b)) {
    held += delta.get(at)!;
    requestedPeakBytes = Math.max(requestedPeakBytes, held);
  }
  return { requestedPeakBytes, ...simulateArena(allocations) };
}
