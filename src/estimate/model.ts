// The per-phase memory model of clip-mem's own CLIP runtime (onnxruntime-node inference, the onnx training
// path with AdamW in JS). Every term is computed from the model's tensor layout and the graphs we run
// (graph-memory.ts); the runtime baseline (Node, onnxruntime, thread pools, code pages) is measured
// (baseline.ts) and calibration (calibration.ts) adds what the terms miss (allocator slack, per-sample
// runtime buffers). RSS and address space (VmSize, what RLIMIT_AS counts) are predicted separately.
import { clipLayout, layoutTotals, type ClipConfig, type WeightFormat } from '../clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';
import { PHASES, type Phase } from '../scenarios/catalog';
import { syntheticIds } from '../scenarios/inputs';
import { forwardGraphMemory, trainingGraphMemory, type ForwardMemory, type GraphMemory } from './graph-memory';

export { PHASES, type Phase };

/** The estimate cannot stand behind a figure for this request (a configuration it does not model, a store it cannot read). */
export class EstimateUnavailable extends Error {
  override name = 'EstimateUnavailable';
}

/** The phases a dtype can run (int8 weight-only checkpoints do not train), or the one asked for. */
export function phasesOf(dtype: WeightFormat, only?: Phase): readonly Phase[] {
  return only ? [only] : dtype === 'int8' ? ['load', 'forward'] : PHASES;
}

/**
 * How far the terms' growth with the batch may be off beyond the calibrated batches, per phase (holdout,
 * issue 17): a training step grew within 3% of its terms from batch 4 to 16 and 32 (vit-b-32 fp32 and
 * fp16, two runs; 31% less while AdamW's moments were filled during the step, before they were populated
 * at its start); a forward pass, whose activations replay onnxruntime's arena (forwardTerms), 1-9% more
 * than its terms on every preset and dtype up to batch 128, 12% once (vit-l-14 fp16, batch 2 to 8: 16 MiB).
 * The load does not grow with the batch.
 */
export const GROWTH_MISS: Record<Phase, number> = { load: 0, forward: 0.1, train: 0.2 };

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
}

function weightBytes(
  config: ClipConfig,
  format: WeightFormat,
): { total: number; tokenTable: number; tokenRow: number } {
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
    components: [
      {
        name: 'weights',
        rss: w.total,
        vmSize: w.total,
        basis: `${format} checkpoint read by copy (by mmap: 0 resident, ${w.total} B of address space)`,
      },
    ],
  };
}

/**
 * The token table's pages a forward pass faults in: each distinct window of `window` bytes (64 KiB: the
 * kernel's fault-around) holding a row that the ids `clip-mem run` feeds (scenarios/inputs.ts) look up, at
 * most the whole table.
 */
function touchedTokenTable(
  config: ClipConfig,
  batch: number,
  tokenRow: number,
  tokenTable: number,
  window: number,
): number {
  const size = Math.max(window, tokenRow);
  const windows = new Set(Array.from(syntheticIds(config, batch), (id) => Math.floor((id * tokenRow) / size)));
  return Math.min(tokenTable, windows.size * size);
}

/**
 * Since Linux 6.16 ext4, like xfs and btrfs before it, keeps file data in large folios (up to 2 MiB) when it
 * is read in big pieces, and a fault maps the whole folio: a looked-up row then brings in up to 2 MiB of the
 * table, not 64 KiB. Which one a run gets depends on how the checkpoint came into the page cache (vit-b-32
 * fp32 at batch 8: 549 MiB of file pages after onnxruntime faulted it in, 600 MiB after a `cat` of the file).
 */
export const LARGEST_FOLIO_BYTES = 2 * 2 ** 20;

/**
 * forward: onnxruntime maps the checkpoint and reads every weight once (file-backed pages), except the
 * token table, of which only the looked-up rows are touched (each fault maps the 64 KiB around it).
 * The mapping is all the address space the weights take: the sessions run without onnxruntime's memory
 * pattern, which reserved the weights' size once more, untouched (vit-b-32 fp32: 577 MiB of VmSize).
 * Activations: the run replayed through onnxruntime's planner and arena (onnxruntime-arena.ts): the pages
 * of the arena's regions its tensors were written to (RSS) and the regions themselves (address space).
 * Inputs and outputs: the pixels and token ids the caller hands over, held through the run, and the
 * outputs copied back into JS buffers while the arena still holds its pages.
 */
function forwardTerms(config: ClipConfig, format: WeightFormat, batch: number, run: ForwardMemory): ModelTerms {
  const w = weightBytes(config, format);
  const touchedTable = touchedTokenTable(config, batch, w.tokenRow, w.tokenTable, FAULT_AROUND_BYTES);
  // One folio more than the rows' own: the table need not start on a folio's boundary.
  const inFolios = Math.min(
    w.tokenTable,
    touchedTokenTable(config, batch, w.tokenRow, w.tokenTable, LARGEST_FOLIO_BYTES) + LARGEST_FOLIO_BYTES,
  );
  const folios = Math.max(0, Math.round((inFolios - touchedTable) / 2));
  const resident = w.total - w.tokenTable + touchedTable;
  return {
    phase: 'forward',
    batch,
    components: [
      {
        name: 'weights',
        rss: resident,
        vmSize: w.total,
        basis: `file-backed: all but the token table + the ${touchedTable / Math.max(FAULT_AROUND_BYTES, w.tokenRow)} 64 KiB windows its looked-up rows fall in; address space: the mapping`,
      },
      {
        name: 'folios',
        rss: folios,
        vmSize: 0,
        basis: `the page cache may map the table in folios of up to 2 MiB: up to ${inFolios} B of it resident instead of ${touchedTable} B, half of the difference here (the band holds the other half)`,
      },
      {
        name: 'activations',
        rss: run.touchedBytes + run.constantBytes,
        vmSize: run.reservedBytes + run.constantBytes,
        basis: `onnxruntime's arena, the run replayed: ${run.requestedPeakBytes} B of tensors at most at once in ${run.inUsePeakBytes} B of chunks; ${run.touchedBytes} B of its regions' pages written, ${run.reservedBytes} B of regions (address space); + ${run.constantBytes} B of constants`,
      },
      {
        name: 'inputs and outputs',
        rss: run.inputBytes + run.outputBytes,
        vmSize: run.inputBytes + run.outputBytes,
        basis: `the float32 pixels and int64 token ids handed to onnxruntime (${run.inputBytes} B), and the outputs it copies back (${run.outputBytes} B: embeddings, batch x batch logits, loss)`,
      },
    ],
  };
}

/**
 * train: float32 parameters (fp16 checkpoints are widened), one reused gradient buffer for the largest
 * backward graph, AdamW's two moments, and the graph runs (head, then each tower's segments). The
 * training sessions run without onnxruntime's arena: a run's tensors go back to malloc, which keeps the
 * heap they grew. A tower's segments have the same shapes and reuse it; the other tower's do not, nor do
 * AdamW's moments (allocated at once). So the head adds its peak of live tensors, and each tower its
 * largest run's intermediates at most beside that run's gradient outputs (onnxruntime copies them into the
 * JS buffer, then frees them), which come while the intermediates are live and outlive them.
 */
function trainTerms(config: ClipConfig, batch: number, optimizer: Optimizer, segments: number): ModelTerms {
  const graphs = trainingGraphMemory(config, batch, segments);
  const params = trainableBytes(config);
  const backward = [...graphs.text, ...graphs.vision];
  const pool = Math.max(...backward.map((g) => g.outputBytes));
  // A backward run's gradient outputs come while its intermediates are live and outlive them: malloc's heap
  // holds both (vit-l-14, whose 6 vision layers per segment give 292 MiB of outputs at batch 1, measured
  // 10-16% above the live peak alone).
  const heapOf = (g: GraphMemory) => g.intermediatePeakBytes + g.outputBytes;
  const largest = [graphs.text, graphs.vision].map((runs) => runs.reduce((a, b) => (heapOf(b) > heapOf(a) ? b : a)));
  const outputs = largest.reduce((sum, g) => sum + g.outputBytes, 0);
  // What the heap holds beyond the gradient outputs (counted under gradients)
  const activations =
    graphs.head.peakBytes +
    graphs.head.constantBytes +
    largest.reduce((sum, g) => sum + g.intermediatePeakBytes + g.constantBytes, 0);
  const both = (rss: number) => ({ rss, vmSize: rss });
  const perTower = segments === 1 ? 'both towers' : `each tower's largest of ${segments} segments`;
  return {
    phase: 'train',
    batch,
    components: [
      { name: 'weights', ...both(params), basis: 'float32 parameters, read by copy' },
      {
        name: 'gradients',
        ...both(pool + outputs),
        basis: `the JS buffer of the largest backward graph (${pool} B) + onnxruntime's output buffers of ${perTower} (copied, freed, kept by malloc)`,
      },
      {
        name: 'optimizer states',
        ...both(optimizer === 'adamw' ? 2 * params : 0),
        basis: optimizer === 'adamw' ? "AdamW's two float32 moments" : 'plain SGD keeps no state',
      },
      {
        name: 'activations',
        ...both(activations),
        basis: `graph walks: the head's live tensors at most + the intermediates at most beside the gradient outputs of ${perTower} (malloc keeps both)`,
      },
    ],
  };
}

/** The shape terms of one phase (everything above the runtime baseline). */
export function modelTerms(
  config: ClipConfig,
  format: WeightFormat,
  phase: Phase,
  batch: number,
  optimizer: Optimizer = 'adamw',
  segments = DEFAULT_TRAINING_SEGMENTS,
): ModelTerms {
  if (phase === 'load') return loadTerms(config, format);
  if (phase === 'forward') return forwardTerms(config, format, batch, forwardGraphMemory(config, format, batch));
  if (format === 'int8')
    throw new EstimateUnavailable(
      'training needs fp32 or fp16 weights (the trainer refuses int8 weight-only checkpoints)',
    );
  return trainTerms(config, batch, optimizer, segments);
}

export const sumRss = (components: readonly Component[]): number => components.reduce((s, c) => s + c.rss, 0);
export const sumVmSize = (components: readonly Component[]): number => components.reduce((s, c) => s + c.vmSize, 0);
