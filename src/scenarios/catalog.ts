// The scenarios' names, one-line summaries, sizes and the facts the rest of clip-mem needs about each (which
// phase of the estimate it is, which option sets its batch, whether its work is loading the weights, which
// runtimes it can use), without their implementations: the command line lists them in --help without
// loading tfjs, onnxruntime or sharp (the child loads the one it runs).

/** The phases `clip-mem estimate` predicts: loading the weights, a forward pass, a training step. */
export const PHASES = ['load', 'forward', 'train'] as const;
export type Phase = (typeof PHASES)[number];

/** auto: onnxruntime for the CLIP model, the best tfjs backend for the tfjs warm-ups; or one tfjs backend. */
export const BACKENDS = ['auto', 'onnxruntime', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type Backend = (typeof BACKENDS)[number];

/** basic-ops: N x N tensors and matmul. */
export const BASIC_OPS_N = 1000;
/** small-mlp: layer widths and batch (the seed's MLP; PyTorch's figures in pytorch-anchor.md). */
export const MLP_WIDTHS = [1000, 512, 256, 10] as const;
export const MLP_BATCH = 64;
/** clip-processor: the camera-sized JPEGs it decodes. */
export const SAMPLE_IMAGE = { width: 640, height: 480 } as const;

export interface CatalogEntry {
  name: string;
  /** One line for --help and the reports. */
  summary: string;
  /** Whether it reads the checkpoint (the parent then makes sure it exists before the child starts). */
  usesCheckpoint: boolean;
  /** Its work is loading the weights, by mmap or by copy: it needs the VmSize it started from + the weights. */
  loads?: 'mmap' | 'copy';
  /** The run option that sets its batch (--batch or --large-batch). */
  batchOption?: 'batch' | 'largeBatch';
  /** The estimate's phase that predicts its memory (at its batch): fixes read the batch that fits from it. */
  estimatedAs?: Phase;
  /** `estimate --calibrate` and `fit --verify` measure this phase by running this scenario. */
  measures?: Phase;
  /** What --backend chooses among for it: tfjs backends, onnxruntime, or nothing (no model runtime). */
  runtimes: 'tfjs' | 'onnxruntime-or-tfjs' | 'none';
  /**
   * Its wall time alone on vit-b-32, 2 cores (docs/benchmarks.md, 3 December 2026): with --jobs above 1
   * the longest start first, so that the short ones fill the other cores instead of waiting behind it.
   */
  typicalSeconds: number;
}

/** In the order `clip-mem run` runs them (cheap checks first, as in the seed report). */
export const SCENARIO_CATALOG: readonly CatalogEntry[] = [
  {
    name: 'basic-ops',
    summary: `tensor creation (zeros, ones, seeded normal ${BASIC_OPS_N}x${BASIC_OPS_N}) and a ${BASIC_OPS_N}x${BASIC_OPS_N} matmul`,
    usesCheckpoint: false,
    runtimes: 'tfjs',
    typicalSeconds: 1.0,
  },
  {
    name: 'small-mlp',
    summary: `MLP ${MLP_WIDTHS.join('-')}, batch ${MLP_BATCH}, forward and backward`,
    usesCheckpoint: false,
    runtimes: 'tfjs',
    typicalSeconds: 0.8,
  },
  {
    name: 'clip-processor',
    summary: `image processor (${SAMPLE_IMAGE.width}x${SAMPLE_IMAGE.height} JPEGs: decode, bicubic resize, crop, normalise) and tokenizer on --batch inputs`,
    usesCheckpoint: false,
    batchOption: 'batch',
    runtimes: 'none',
    typicalSeconds: 0.5,
  },
  {
    name: 'clip-load',
    summary: 'load the safetensors checkpoint by mmap (zero-copy views over a read-only file mapping)',
    usesCheckpoint: true,
    loads: 'mmap',
    runtimes: 'none',
    typicalSeconds: 0.2,
  },
  {
    name: 'clip-load-copy',
    summary: 'load the checkpoint by copy: allocate each tensor and read it (no mmap)',
    usesCheckpoint: true,
    loads: 'copy',
    measures: 'load',
    runtimes: 'none',
    typicalSeconds: 1.9,
  },
  {
    name: 'clip-forward',
    summary: 'image and text towers + contrastive loss, --batch (default 2), no gradients',
    usesCheckpoint: true,
    batchOption: 'batch',
    estimatedAs: 'forward',
    measures: 'forward',
    runtimes: 'onnxruntime-or-tfjs',
    typicalSeconds: 1.0,
  },
  {
    name: 'clip-train',
    summary: 'one training step, --batch (default 2): loss, gradients of every parameter, AdamW update',
    usesCheckpoint: true,
    batchOption: 'batch',
    estimatedAs: 'train',
    measures: 'train',
    runtimes: 'onnxruntime-or-tfjs',
    typicalSeconds: 8.1,
  },
  {
    name: 'large-batch',
    summary: 'image and text towers + loss at --large-batch (default 32), no gradients',
    usesCheckpoint: true,
    batchOption: 'largeBatch',
    estimatedAs: 'forward',
    runtimes: 'onnxruntime-or-tfjs',
    typicalSeconds: 3.4,
  },
];

export const SCENARIO_NAMES = SCENARIO_CATALOG.map((s) => s.name);

export function catalogEntry(name: string): CatalogEntry {
  const entry = SCENARIO_CATALOG.find((s) => s.name === name);
  if (!entry) throw new Error(`unknown scenario "${name}": choose from ${SCENARIO_NAMES.join(', ')}`);
  return entry;
}

/** The scenario that `estimate --calibrate` and `fit --verify` run to measure a phase. */
export function scenarioMeasuring(phase: Phase): CatalogEntry {
  return SCENARIO_CATALOG.find((s) => s.measures === phase)!;
}
