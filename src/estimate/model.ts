// The per-phase memory model of clip-mem's own CLIP runtime (onnxruntime-node inference, the onnx training
// path with AdamW in JS). Every term is computed from the model's tensor layout and the graphs we run
// (graph-memory.ts); the runtime baseline (Node, onnxruntime, thread pools, code pages) is measured
// (baseline.ts) and calibration (calibration.ts) adds what the terms miss (allocator slack, per-sample
// runtime buffers). RSS and address space (VmSize, what RLIMIT_AS counts) are predicted separately.
import { clipLayout, layoutTotals, type ClipConfig, type WeightFormat } from '../clip/config';
import { forwardGraphMemory, trainingGraphMemory, type GraphMemory } from './graph-memory';

export const PHASES = ['load', 'forward', 'train'] as const;
export type Phase = (typeof PHASES)[number];
export const OPTIMIZERS = ['adamw', 'sgd'] as const;
export type Optimizer = (typeof OPTIMIZERS)[number];

/** The kernel maps this much around each faulting page of a file mapping (fault_around_bytes). */
export const FAULT_AROUND_BYTES = 64 * 1024;

export interface Component {
  /** weights, gradients, optimizer states, activations, runtime baseline, calibration. */
  name: string;
  rss: number;
  vmSize: number;
  /** How the figure is made, in a few words. */
  basis: string;
}

export interface ModelTerms {
  phase: Phase;
  batch: number;
  /** The terms above the runtime baseline, in bytes. */
  components: Component[];
  /** The part of `activations` that grows with the batch (for calibration's slope). */
  activationBytes: number;
}

function weightBytes(config: ClipConfig, format: WeightFormat): { total: number; tokenTable: number; tokenRow: number } {
  const specs = clipLayout(config, format);
  const table = specs.find((s) => s.name === 'text_model.embeddings.token_embedding.weight')!;
  return { total: layoutTotals(specs).totalBytes, tokenTable: table.bytes, tokenRow: table.bytes / table.shape[0] };
}

/** float32 parameters of the trainer (every F32 tensor of the fp32 layout: position_ids are not trained). */
export function trainableBytes(config: ClipConfig): number {
  return layoutTotals(clipLayout(config, 'fp32')).bytesByDtype.F32 ?? 0;
}

/**
 * load: the checkpoint read by copy (every byte anonymous) is the peak; by mmap nothing is resident
 * until used and the whole file is address space.
 */
function loadTerms(config: ClipConfig, format: WeightFormat): ModelTerms {
  const w = weightBytes(config, format);
  return {
    phase: 'load',
    batch: 0,
    components: [{ name: 'weights', rss: w.total, vmSize: w.total, basis: `${format} checkpoint read by copy (by mmap: 0 resident, ${w.total} B of address space)` }],
    activationBytes: 0,
  };
}

/**
 * forward: onnxruntime maps the checkpoint and reads every weight once (file-backed pages), except the
 * token table, of which only the looked-up rows are touched (each fault maps the 64 KiB around it);
 * it also allocates the weights' size from its allocator without touching it (address space only).
 */
function forwardTerms(config: ClipConfig, format: WeightFormat, batch: number, graph: GraphMemory): ModelTerms {
  const w = weightBytes(config, format);
  const lookups = batch * config.text.maxPositionEmbeddings;
  const touchedTable = Math.min(w.tokenTable, lookups * Math.max(FAULT_AROUND_BYTES, w.tokenRow));
  const resident = w.total - w.tokenTable + touchedTable;
  return {
    phase: 'forward',
    batch,
    components: [
      {
        name: 'weights',
        rss: resident,
        vmSize: 2 * w.total,
        basis: `file-backed: all but the token table + ${lookups} looked-up rows x 64 KiB; address space: the mapping + onnxruntime's untouched copy`,
      },
      {
        name: 'activations',
        rss: graph.plannedBytes + graph.constantBytes,
        vmSize: graph.plannedBytes + graph.constantBytes,
        basis: `inference graph: onnxruntime's planned buffers (exact-size reuse; ${graph.peakBytes} B live at most)`,
      },
    ],
    activationBytes: graph.plannedBytes,
  };
}

/**
 * train: float32 parameters (fp16 checkpoints are widened), one reused gradient buffer for the larger
 * tower, AdamW's two moments (allocated at the first update, after the text tower), and the largest of the
 * three graph runs; a tower run's peak holds its gradients in onnxruntime's buffers (copied out when it
 * returns) beside its activations.
 */
function trainTerms(config: ClipConfig, batch: number, optimizer: Optimizer): ModelTerms {
  const graphs = trainingGraphMemory(config, batch);
  const params = trainableBytes(config);
  const pool = Math.max(graphs.text.outputBytes, graphs.vision.outputBytes);
  const moments = optimizer === 'adamw' ? 2 * params : 0;
  // The runs in step order: head and text before the first AdamW update, vision after it.
  const runs = [
    { name: 'head', graph: graphs.head, beside: 0 },
    { name: 'text tower', graph: graphs.text, beside: 0 },
    { name: 'vision tower', graph: graphs.vision, beside: moments },
  ];
  const binding = runs.reduce((a, b) => (b.graph.peakBytes + b.beside > a.graph.peakBytes + a.beside ? b : a));
  const g = binding.graph;
  const gradientsInGraph = Math.min(g.outputBytes, g.peakBytes);
  const activations = g.peakBytes - gradientsInGraph + g.constantBytes;
  const optimizerHeld = binding.beside;
  const both = (rss: number) => ({ rss, vmSize: rss });
  return {
    phase: 'train',
    batch,
    components: [
      { name: 'weights', ...both(params), basis: 'float32 parameters, read by copy' },
      { name: 'gradients', ...both(pool + gradientsInGraph), basis: `one tower's buffer (${pool} B) + onnxruntime's output copy in the ${binding.name} run` },
      {
        name: 'optimizer states',
        ...both(optimizerHeld),
        basis: optimizer === 'adamw' ? (optimizerHeld ? "AdamW's two float32 moments" : `AdamW's moments come after the ${binding.name} run, which binds`) : 'plain SGD keeps no state',
      },
      { name: 'activations', ...both(activations), basis: `${binding.name} graph walk, peak at ${g.peakAt.op} (node ${g.peakAt.index})` },
    ],
    activationBytes: g.peakBytes - gradientsInGraph,
  };
}

/** The shape terms of one phase (everything above the runtime baseline). */
export function modelTerms(config: ClipConfig, format: WeightFormat, phase: Phase, batch: number, optimizer: Optimizer = 'adamw'): ModelTerms {
  if (phase === 'load') return loadTerms(config, format);
  if (phase === 'forward') return forwardTerms(config, format, batch, forwardGraphMemory(config, format, batch));
  if (format === 'int8') throw new Error('training needs fp32 or fp16 weights (the trainer refuses int8 weight-only checkpoints)');
  return trainTerms(config, batch, optimizer);
}

export const sumRss = (components: readonly Component[]): number => components.reduce((s, c) => s + c.rss, 0);
export const sumVmSize = (components: readonly Component[]): number => components.reduce((s, c) => s + c.vmSize, 0);
