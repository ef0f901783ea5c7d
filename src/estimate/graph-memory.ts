// Activation memory from the graphs clip-mem really runs: the onnxruntime inference graph
// (src/clip/onnx/runtime.ts), replayed through onnxruntime's planner and arena (onnxruntime-arena.ts), and
// the three training graphs (src/clip/onnx/train.ts), built for the model's shapes and batch, then
// executed on paper in node order: each node's outputs are allocated when it runs, every tensor is freed
// after its last consumer, shape-only ops (Reshape) share their input's buffer, graph outputs live until
// the run returns, and freed memory goes straight back (the training sessions run without onnxruntime's
// arena). Both are exact in bytes for our graphs; what the allocators add on top, calibration measures.
import type { ClipConfig, WeightFormat } from '../clip/config';
import { clipLayout, fileOrder } from '../clip/config';
import { inferenceGraph } from '../clip/onnx/runtime';
import { buildTrainingModels, DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';
import type { Graph, Value } from '../clip/onnx/graph';
import type { SafetensorsHeader } from '../clip/safetensors';
import { ALIASING_OPS, arenaRun, valueBytes, type ArenaRun } from './onnxruntime-arena';

export interface GraphMemory {
  /** Largest sum of live intermediate tensors (outputs included while they are alive). */
  peakBytes: number;
  /** Largest sum of live tensors that are not graph outputs (what the run frees before it returns). */
  intermediatePeakBytes: number;
  /** The op at which the peak is reached and the node's index, for explanations. */
  peakAt: { index: number; op: string };
  /** The graph's outputs (onnxruntime-node copies each into a JS buffer when the run returns). */
  outputBytes: number;
  /** Inline constants (masks, scalars, shape operands): held for the session's life. */
  constantBytes: number;
}

/** Walks the graph in node order, each tensor freed after its last use (see the file comment). */
export function plannedPeak(g: Graph): GraphMemory {
  const inputs = new Set(g.inputs);
  const outputs = new Set(g.outputs);
  // A buffer is identified by the value that allocated it; aliases map to their source buffer.
  const bufferOf = new Map<Value, Value>();
  const lastUse = new Map<Value, number>();
  const ownBuffer = (v: Value) => bufferOf.get(v) ?? v;
  g.nodes.forEach((node, index) => {
    if (ALIASING_OPS.has(node.op) && node.inputs[0]) {
      bufferOf.set(node.outputs[0], ownBuffer(node.inputs[0]));
    }
    for (const input of node.inputs) if (input) lastUse.set(ownBuffer(input), index);
    for (const output of node.outputs) {
      const buffer = ownBuffer(output);
      if (!lastUse.has(buffer) || lastUse.get(buffer)! < index) lastUse.set(buffer, index);
    }
  });
  for (const output of outputs) lastUse.set(ownBuffer(output), Infinity);
  const freeAt = new Map<number, Value[]>();
  for (const [buffer, index] of lastUse) {
    if (index === Infinity || inputs.has(buffer) || g.isConstant(buffer)) continue;
    freeAt.set(index, [...(freeAt.get(index) ?? []), buffer]);
  }
  let live = 0;
  let liveOutputs = 0;
  let peakBytes = 0;
  let intermediatePeakBytes = 0;
  let peakAt = { index: -1, op: '' };
  g.nodes.forEach((node, index) => {
    for (const output of node.outputs) {
      if (ownBuffer(output) !== output) continue;
      const bytes = valueBytes(output);
      live += bytes;
      if (outputs.has(output)) liveOutputs += bytes;
    }
    if (live > peakBytes) {
      peakBytes = live;
      peakAt = { index, op: node.op };
    }
    intermediatePeakBytes = Math.max(intermediatePeakBytes, live - liveOutputs);
    for (const buffer of freeAt.get(index) ?? []) live -= valueBytes(buffer);
  });
  return { peakBytes, intermediatePeakBytes, peakAt, outputBytes: bytesOf(outputs), constantBytes: constantBytes(g) };
}

const bytesOf = (values: Iterable<Value>): number => [...values].reduce((sum, v) => sum + valueBytes(v), 0);

function constantBytes(g: Graph): number {
  let bytes = 0;
  for (const [value, init] of g.initializers) if (init.raw) bytes += valueBytes(value);
  return bytes;
}

/** A header with the layout of the checkpoint this config and format would have (no file is read). */
export function layoutHeader(config: ClipConfig, format: WeightFormat): SafetensorsHeader {
  let begin = 0;
  const entries = fileOrder(clipLayout(config, format)).map((spec) => {
    const entry = { ...spec, begin, end: begin + spec.bytes };
    begin = entry.end;
    return entry;
  });
  return {
    file: `${config.name}-${format}.safetensors`,
    fileSize: begin,
    headerLength: 0,
    dataOffset: 8,
    entries,
    metadata: {},
  };
}

/** Building and walking a vit-b-32 training step's graphs takes a fraction of a second: fit asks often. */
const walks = new Map<string, unknown>();
function remembered<T>(key: string, walk: () => T): T {
  if (!walks.has(key)) walks.set(key, walk());
  return walks.get(key) as T;
}
const shapesKey = (config: ClipConfig) => JSON.stringify({ ...config, name: '' });

export interface ForwardMemory extends ArenaRun {
  /** The tensors the caller hands onnxruntime (float32 pixels, int64 token ids). */
  inputBytes: number;
  /** The run's outputs, which onnxruntime-node copies into JS buffers when it returns (logits: batch x batch). */
  outputBytes: number;
  /** Inline constants (masks, scalars, shape operands): held for the session's life. */
  constantBytes: number;
}

/** The inference graph `clip-mem run clip-forward` runs (both towers, logits, loss) at this batch. */
export function forwardGraphMemory(config: ClipConfig, format: WeightFormat, batch: number): ForwardMemory {
  return remembered(`forward ${shapesKey(config)} ${format} ${batch}`, () => {
    const g = inferenceGraph(layoutHeader(config, format), config, 'both', batch, config.text.maxPositionEmbeddings);
    return {
      ...arenaRun(g),
      inputBytes: bytesOf(g.inputs),
      outputBytes: bytesOf(g.outputs),
      constantBytes: constantBytes(g),
    };
  });
}

export interface TrainingGraphsMemory {
  head: GraphMemory;
  /** Each tower's backward graphs (one per segment of layers), in the order the trainer runs them. */
  text: GraphMemory[];
  vision: GraphMemory[];
}

/** The graphs of a training step (head, then each tower's backward segments) as train.ts builds them. */
export function trainingGraphMemory(
  config: ClipConfig,
  batch: number,
  segments = DEFAULT_TRAINING_SEGMENTS,
): TrainingGraphsMemory {
  return remembered(`train ${shapesKey(config)} ${batch} ${segments}`, () => {
    const shapes = new Map(
      clipLayout(config, 'fp32')
        .filter((s) => s.dtype === 'F32')
        .map((s) => [s.name, s.shape] as const),
    );
    const models = buildTrainingModels(config, shapes, batch, config.text.maxPositionEmbeddings, segments);
    const tower = (name: string) =>
      models.backward.filter((m) => m.name.startsWith(`${name} `)).map((m) => plannedPeak(m.graph));
    const memory = { head: plannedPeak(models.head.graph), text: tower('text'), vision: tower('vision') };
    if (!memory.text.length || !memory.vision.length) {
      throw new Error(
        `the training graphs of each tower were not found (backward graphs: ${models.backward.map((m) => m.name).join(', ')}; has src/clip/onnx/train.ts renamed them?)`,
      );
    }
    return memory;
  });
}
