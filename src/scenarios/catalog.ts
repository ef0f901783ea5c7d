// The scenarios' names, one-line summaries and sizes, without their implementations: the command line
// lists them in --help without loading tfjs, onnxruntime or sharp (the child loads the one it runs).

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
}

/** In the order `clip-mem run` runs them (cheap checks first, as in the seed report). */
export const SCENARIO_CATALOG: readonly CatalogEntry[] = [
  {
    name: 'basic-ops',
    summary: `tensor creation (zeros, ones, seeded normal ${BASIC_OPS_N}x${BASIC_OPS_N}) and a ${BASIC_OPS_N}x${BASIC_OPS_N} matmul`,
    usesCheckpoint: false,
  },
  {
    name: 'small-mlp',
    summary: `MLP ${MLP_WIDTHS.join('-')}, batch ${MLP_BATCH}, forward and backward`,
    usesCheckpoint: false,
  },
  {
    name: 'clip-processor',
    summary: `image processor (${SAMPLE_IMAGE.width}x${SAMPLE_IMAGE.height} JPEGs: decode, bicubic resize, crop, normalise) and tokenizer on --batch inputs`,
    usesCheckpoint: false,
  },
  {
    name: 'clip-load',
    summary: 'load the safetensors checkpoint by mmap (zero-copy views over a read-only file mapping)',
    usesCheckpoint: true,
  },
  {
    name: 'clip-load-copy',
    summary: 'load the checkpoint by copy: allocate each tensor and read it (no mmap)',
    usesCheckpoint: true,
  },
  {
    name: 'clip-forward',
    summary: 'image and text towers + contrastive loss, --batch (default 2), no gradients',
    usesCheckpoint: true,
  },
  {
    name: 'clip-train',
    summary: 'one training step, --batch (default 2): loss, gradients of every parameter, AdamW update',
    usesCheckpoint: true,
  },
  {
    name: 'large-batch',
    summary: 'image and text towers + loss at --large-batch (default 32), no gradients',
    usesCheckpoint: true,
  },
];

export const SCENARIO_NAMES = SCENARIO_CATALOG.map((s) => s.name);

export function catalogEntry(name: string): CatalogEntry {
  const entry = SCENARIO_CATALOG.find((s) => s.name === name);
  if (!entry) throw new Error(`unknown scenario "${name}": choose from ${SCENARIO_NAMES.join(', ')}`);
  return entry;
}
