// Where a CLIP checkpoint comes from, and loading it: a preset (a synthetic checkpoint in the clip-mem
// cache, written on first use), a user's model directory (config.json + model.safetensors, else
// pytorch_model.bin, as save_pretrained writes them), a weights file inside such a directory, or a
// Hugging Face hub id found in the local hub cache (HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub).
//
// API:
//   DEFAULT_HUB_ID = 'openai/clip-vit-base-patch32'
//   hfHubCacheDir(env = process.env): string
//   findHfSnapshot(repoId = DEFAULT_HUB_ID, env): string | undefined   snapshots/<refs/main>, else newest
//   openModelDirectory(dir): ClipModelSource                             config + weights + tokenizer files
//   resolveClipModel(spec = 'vit-b-32', options): ClipModelSource         preset | directory | file | hub id;
//       with options.format, a user's checkpoint in another format (or a pytorch_model.bin) is converted
//       once into the cache and weightsFile is the conversion (convertedFrom: the original)
//   readCheckpointIndex(file): { file, entries }                         safetensors or pytorch_model.bin
//   checkCheckpointLayout(index, config): void                           throws SafetensorsError on a
//                                     missing tensor or a wrong shape (position_ids may be absent)
//   loadClipCheckpoint(spec, options): LoadedClipCheckpoint              resolve + check + load (mmap|copy)
//   interface ClipModelSource { kind, spec, config, weightsFile, weightsFormat, tokenizer?, description }
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ClipConfig,
  WeightFormat,
  clipLayout,
  isInt8Quantized,
  isPresetName,
  presetConfig,
  readHfConfig,
} from './config';
import { checkpointWeightFormat, ensureConvertedCheckpoint } from './convert';
import { loadPytorchCheckpoint, readPytorchCheckpoint } from './pytorch';
import { LoadOptions, LoadedCheckpoint, SafetensorsError, loadSafetensors, readSafetensorsHeader } from './safetensors';
import type { DType } from './tensor';
import { SyntheticOptions, ensureSyntheticCheckpoint } from './synthetic';

export const DEFAULT_HUB_ID = 'openai/clip-vit-base-patch32';

export interface TokenizerFiles {
  /** tokenizer.json (Hugging Face tokenizers), when present. */
  tokenizerJson?: string;
  vocabJson?: string;
  mergesTxt?: string;
}

export interface ClipModelSource {
  kind: 'preset' | 'directory' | 'hub';
  /** What the user passed. */
  spec: string;
  config: ClipConfig;
  weightsFile: string;
  /** model.safetensors, or a torch.save zip (pytorch_model.bin). */
  weightsFormat: 'safetensors' | 'pytorch';
  /** The user's own weights file when weightsFile is its conversion to the asked format (in the cache). */
  convertedFrom?: string;
  /** Tokenizer files found beside the weights (presets have none: they use a synthetic vocabulary). */
  tokenizer?: TokenizerFiles;
  /** One line for reports: where the weights come from. */
  description: string;
}

export function hfHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** The snapshot directory of a hub model in the local cache: the one refs/main names, else the newest. */
export function findHfSnapshot(
  repoId: string = DEFAULT_HUB_ID,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const repoDir = path.join(hfHubCacheDir(env), `models--${repoId.split('/').join('--')}`);
  const snapshots = path.join(repoDir, 'snapshots');
  if (!fs.existsSync(snapshots)) return undefined;
  try {
    const main = fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8').trim();
    if (main && fs.existsSync(path.join(snapshots, main, 'config.json'))) return path.join(snapshots, main);
  } catch {
    // no refs/main: take the newest snapshot
  }
  const candidates = fs
    .readdirSync(snapshots)
    .map((name) => path.join(snapshots, name))
    .filter((dir) => fs.existsSync(path.join(dir, 'config.json')))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return candidates[0];
}

/** torch.save files are zips: "PK" at the start. */
function weightsFormatOf(file: string): 'safetensors' | 'pytorch' {
  const fd = fs.openSync(file, 'r');
  try {
    const magic = Buffer.alloc(2);
    fs.readSync(fd, magic, 0, 2, 0);
    return magic.toString('latin1') === 'PK' || file.endsWith('.bin') || file.endsWith('.pt') || file.endsWith('.pth')
      ? 'pytorch'
      : 'safetensors';
  } finally {
    fs.closeSync(fd);
  }
}

/** The tensor list of a checkpoint file, whatever its format. */
export interface CheckpointIndex {
  file: string;
  entries: { name: string; dtype: DType; shape: readonly number[] }[];
}

export function readCheckpointIndex(file: string): CheckpointIndex {
  return weightsFormatOf(file) === 'pytorch' ? readPytorchCheckpoint(file) : readSafetensorsHeader(file);
}

function existing(dir: string, name: string): string | undefined {
  const file = path.join(dir, name);
  return fs.existsSync(file) ? file : undefined;
}

/** A model directory as save_pretrained / the hub cache lays it out. */
export function openModelDirectory(
  dir: string,
  kind: 'directory' | 'hub' = 'directory',
  spec: string = dir,
): ClipModelSource {
  const config = readHfConfig(dir);
  const weightsFile = existing(dir, 'model.safetensors') ?? existing(dir, 'pytorch_model.bin');
  if (!weightsFile) {
    const sharded = existing(dir, 'model.safetensors.index.json') ?? existing(dir, 'pytorch_model.bin.index.json');
    throw new Error(
      sharded
        ? `${dir} holds a sharded checkpoint (${path.basename(sharded)}), which clip-mem does not read: save it as one file (save_pretrained(..., max_shard_size="100GB"))`
        : `${dir} has neither model.safetensors nor pytorch_model.bin`,
    );
  }
  const tokenizer: TokenizerFiles = {
    tokenizerJson: existing(dir, 'tokenizer.json'),
    vocabJson: existing(dir, 'vocab.json'),
    mergesTxt: existing(dir, 'merges.txt'),
  };
  const hasTokenizer = tokenizer.tokenizerJson || (tokenizer.vocabJson && tokenizer.mergesTxt);
  return {
    kind,
    spec,
    config,
    weightsFile,
    weightsFormat: weightsFormatOf(weightsFile),
    tokenizer: hasTokenizer ? tokenizer : undefined,
    description: `${weightsFile} (${kind === 'hub' ? `hub cache, ${spec}` : 'model directory'})`,
  };
}

export interface ResolveOptions extends Omit<SyntheticOptions, 'config'> {
  env?: NodeJS.ProcessEnv;
}

/**
 * A preset name (synthetic checkpoint, written to the cache on first use), a model directory, a
 * model.safetensors inside one, or a hub id ("openai/clip-vit-base-patch32") in the local hub cache.
 */
export function resolveClipModel(spec: string = 'vit-b-32', options: ResolveOptions = {}): ClipModelSource {
  if (isPresetName(spec)) {
    const config = presetConfig(spec);
    const format: WeightFormat = options.format ?? 'fp32';
    const { file } = ensureSyntheticCheckpoint({ ...options, config });
    return {
      kind: 'preset',
      spec,
      config,
      weightsFile: file,
      weightsFormat: 'safetensors',
      description: `${file} (synthetic ${spec} ${format}, seed ${options.seed ?? 0})`,
    };
  }
  return inFormat(resolveUserModel(spec, options), options);
}

function resolveUserModel(spec: string, options: ResolveOptions): ClipModelSource {
  if (fs.existsSync(spec)) {
    if (fs.statSync(spec).isDirectory()) return openModelDirectory(spec);
    const dir = path.dirname(spec);
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      throw new Error(
        `${spec}: a checkpoint file needs its config.json beside it (${dir}/config.json is missing); pass the model directory`,
      );
    }
    return {
      ...openModelDirectory(dir),
      spec,
      weightsFile: spec,
      weightsFormat: weightsFormatOf(spec),
      description: `${spec} (model file)`,
    };
  }
  if (/^[\w.-]+\/[\w.-]+$/.test(spec)) {
    const snapshot = findHfSnapshot(spec, options.env);
    if (snapshot) return openModelDirectory(snapshot, 'hub', spec);
    throw new Error(
      `${spec} is not in the local Hugging Face cache (looked in ${hfHubCacheDir(options.env)}/models--${spec.replace('/', '--')}/snapshots; ` +
        'set HF_HUB_CACHE or HF_HOME if it lives elsewhere), and clip-mem does not download. Use a preset (vit-b-32, vit-b-16, vit-l-14, tiny) for a synthetic checkpoint with the same layout.',
    );
  }
  throw new Error(
    `"${spec}" is not a CLIP preset (vit-b-32, vit-b-16, vit-l-14, tiny), an existing model directory or file, or a hub id like ${DEFAULT_HUB_ID}`,
  );
}

/**
 * With options.format: the user's weights in that format, as safetensors. A pytorch_model.bin, or a
 * file in another format, is converted once into the clip-mem cache (see convert.ts).
 */
function inFormat(model: ClipModelSource, options: ResolveOptions): ClipModelSource {
  if (!options.format) return model;
  const native =
    model.weightsFormat === 'safetensors'
      ? checkpointWeightFormat(readCheckpointIndex(model.weightsFile).entries)
      : undefined;
  if (native === options.format) return model;
  const { file } = ensureConvertedCheckpoint(model.weightsFile, options.format, {
    cacheDir: options.cacheDir,
    onProgress: options.onProgress,
  });
  return {
    ...model,
    weightsFile: file,
    weightsFormat: 'safetensors',
    convertedFrom: model.weightsFile,
    description: `${file} (${options.format} conversion of ${model.description})`,
  };
}

/**
 * Checks a checkpoint against the layout its config implies, whatever its weight format (fp32, fp16,
 * bf16, int8 weight-only): every parameter present with the config's shape. position_ids may be
 * absent (recent transformers releases do not save them).
 */
export function checkCheckpointLayout(header: CheckpointIndex, config: ClipConfig): void {
  const present = new Map(header.entries.map((e) => [e.name, e]));
  for (const spec of clipLayout(config)) {
    const entry = present.get(spec.name);
    if (!entry) {
      if (spec.name.endsWith('.position_ids')) continue;
      throw new SafetensorsError(
        header.file,
        spec.name,
        'entry',
        `missing: ${config.name} needs ${spec.dtype} ${JSON.stringify(spec.shape)}. Is this a CLIPModel checkpoint for that config?`,
      );
    }
    if (entry.shape.join() !== spec.shape.join()) {
      throw new SafetensorsError(
        header.file,
        spec.name,
        'shape',
        `${JSON.stringify(entry.shape)} but ${config.name} says ${JSON.stringify(spec.shape)}`,
      );
    }
    if (entry.dtype === 'I8' && isInt8Quantized(spec) && !present.has(`${spec.name}.scale`)) {
      throw new SafetensorsError(
        header.file,
        spec.name,
        'entry',
        `an int8 weight without its ${spec.name}.scale tensor`,
      );
    }
  }
}

export interface LoadedClipCheckpoint extends LoadedCheckpoint {
  model: ClipModelSource;
}

/** Resolve `spec` (see resolveClipModel), check its layout against its config, and load it. */
export function loadClipCheckpoint(
  spec: string = 'vit-b-32',
  options: ResolveOptions & LoadOptions = {},
): LoadedClipCheckpoint {
  const model = resolveClipModel(spec, options);
  checkCheckpointLayout(readCheckpointIndex(model.weightsFile), model.config);
  const load = model.weightsFormat === 'pytorch' ? loadPytorchCheckpoint : loadSafetensors;
  return { ...load(model.weightsFile, options), model };
}
