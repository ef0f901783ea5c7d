import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findHfSnapshot, hfHubCacheDir, loadClipCheckpoint, resolveClipModel } from '../src/clip/checkpoint';
import { loadSafetensors, serializeSafetensors } from '../src/clip/safetensors';
import { referenceDir } from './helpers/paths';
import { scratchDir } from './helpers/scratch';

const tmp = scratchDir('clip-checkpoint-');

function modelDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(referenceDir, f), path.join(dir, f));
  return dir;
}

/** A snapshot as huggingface_hub lays it out: files are symlinks into ../../blobs/<hash>. */
function hubSnapshot(repo: string, revision: string): string {
  const dir = path.join(repo, 'snapshots', revision);
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) {
    const blob = path.join(repo, 'blobs', `${revision}-${f}`);
    fs.copyFileSync(path.join(referenceDir, f), blob);
    fs.symlinkSync(path.relative(dir, blob), path.join(dir, f));
  }
  return dir;
}

test('hub cache dir honours HF_HUB_CACHE, then HF_HOME, then XDG_CACHE_HOME, then ~/.cache', (t) => {
  t.is(hfHubCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }), '/a');
  t.is(hfHubCacheDir({ HF_HOME: '/b' }), '/b/hub');
  t.is(hfHubCacheDir({ XDG_CACHE_HOME: '/c' }), '/c/huggingface/hub');
  t.is(hfHubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
});

test('a hub snapshot is found through refs/main and loaded with its tokenizer files', (t) => {
  const repo = path.join(tmp, 'hf', 'hub', 'models--openai--clip-vit-base-patch32');
  hubSnapshot(repo, 'old');
  const snapshot = hubSnapshot(repo, 'c0ffee');
  fs.writeFileSync(path.join(snapshot, 'vocab.json'), '{}');
  fs.writeFileSync(path.join(snapshot, 'merges.txt'), '#version: 0.2\n');
  fs.mkdirSync(path.join(repo, 'refs'));
  fs.writeFileSync(path.join(repo, 'refs', 'main'), 'c0ffee\n');
  const env = { HF_HOME: path.join(tmp, 'hf') };
  t.is(findHfSnapshot(undefined, env), snapshot);
  const loaded = loadClipCheckpoint('openai/clip-vit-base-patch32', { env, mode: 'mmap' });
  t.is(loaded.model.kind, 'hub');
  t.is(loaded.model.config.text.vocabSize, 100);
  t.is(loaded.model.tokenizer?.vocabJson, path.join(snapshot, 'vocab.json'));
  t.is(loaded.tensors.size, 80);
  loaded.close();
  t.throws(() => resolveClipModel('openai/clip-vit-large-patch14', { env }), {
    message: /not in the local Hugging Face cache \(looked in .*models--openai--clip-vit-large-patch14\/snapshots/,
  });
});

test('a model directory and a file inside it load; a wrong checkpoint names the tensor', (t) => {
  const dir = modelDir(path.join(tmp, 'user-model'));
  const byDir = loadClipCheckpoint(dir, { mode: 'copy' });
  t.is(byDir.model.kind, 'directory');
  t.is(byDir.tensors.size, 80);
  t.is(loadClipCheckpoint(path.join(dir, 'model.safetensors')).model.weightsFile, path.join(dir, 'model.safetensors'));

  const broken = modelDir(path.join(tmp, 'broken'));
  const tensors = [...loadSafetensors(path.join(dir, 'model.safetensors'), { mode: 'copy' }).tensors.values()];
  fs.writeFileSync(
    path.join(broken, 'model.safetensors'),
    serializeSafetensors(tensors.filter((x) => x.name !== 'visual_projection.weight')),
  );
  t.throws(() => loadClipCheckpoint(broken), {
    message: `${broken}/model.safetensors: tensor "visual_projection.weight": entry: missing: ${broken}/config.json needs F32 [16,32]. Is this a CLIPModel checkpoint for that config?`,
  });
  fs.rmSync(path.join(broken, 'model.safetensors'));
  t.throws(() => loadClipCheckpoint(broken), {
    message: `${broken} has neither model.safetensors nor pytorch_model.bin`,
  });
  fs.writeFileSync(path.join(broken, 'model.safetensors.index.json'), '{}');
  t.throws(() => loadClipCheckpoint(broken), {
    message: /holds a sharded checkpoint \(model.safetensors.index.json\), which clip-mem does not read/,
  });
  fs.writeFileSync(path.join(broken, 'pytorch_model.bin'), '');
  t.throws(() => loadClipCheckpoint(broken), { message: /pytorch_model.bin: is not a zip archive/ });
  t.throws(() => resolveClipModel('no-such-thing'), { message: /is not a CLIP preset/ });
});

test('a preset resolves to its synthetic checkpoint in the cache', (t) => {
  const model = resolveClipModel('tiny', { cacheDir: path.join(tmp, 'cache'), format: 'fp16' });
  t.is(model.kind, 'preset');
  t.regex(model.description, /synthetic tiny fp16, seed 0/);
  t.true(fs.existsSync(model.weightsFile));
});
