import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { referenceDir, repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { schemaErrors } from './helpers/schema';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const cache = scratchDir('clip-cli-checkpoint-');

function run(...args: string[]) {
  return spawnSync(process.execPath, [bin, 'checkpoint', ...args], {
    encoding: 'utf8',
    env: { ...process.env, CLIP_MEM_CACHE: cache },
  });
}

test('checkpoint tiny writes the synthetic file with progress, then reuses it', (t) => {
  const first = run('tiny');
  t.is(first.status, 0, first.stderr);
  t.regex(first.stderr, /^writing .* \(100%\) visual_projection.weight$/m);
  t.regex(
    first.stdout,
    /clip-tiny-fp32-seed0-v1.safetensors \(synthetic tiny fp32, seed 0\)\n {2}80 tensors, 45,825 parameters, safetensors file 188 KiB \(192244 B\)/,
  );
  const again = run('tiny', '--json', '--layout');
  t.is(again.status, 0, again.stderr);
  t.is(again.stderr, '');
  const json = JSON.parse(again.stdout);
  t.is(schemaErrors('checkpoint', json), '');
  t.like(json, { kind: 'preset', fileBytes: 192244, entries: 80, bytesByDtype: { I64: 264, F32: 183300 } });
  t.deepEqual(json.tensors[0], {
    name: 'text_model.embeddings.position_ids',
    dtype: 'I64',
    shape: [1, 16],
    bytes: 128,
  });
});

test('checkpoint DIR validates a model directory; a bad one is a clear error, exit 1', (t) => {
  const ok = run(referenceDir, '--json');
  t.is(ok.status, 0, ok.stderr);
  t.like(JSON.parse(ok.stdout), { kind: 'directory', entries: 80 });
  const dir = path.join(cache, 'broken');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(referenceDir, 'config.json'), path.join(dir, 'config.json'));
  fs.writeFileSync(
    path.join(dir, 'model.safetensors'),
    fs.readFileSync(path.join(referenceDir, 'model.safetensors')).subarray(0, 5000),
  );
  const bad = run(dir);
  t.is(bad.status, 1);
  t.is(
    bad.stderr,
    `clip-mem: ${dir}/model.safetensors: header length: 8672 bytes runs past the end of the file (5000 bytes): the file is truncated or corrupt\n`,
  );
});

test('a cache that cannot be written is an error naming the file, not a hang (mkdir under /proc)', (t) => {
  const result = spawnSync(process.execPath, [bin, 'checkpoint', 'tiny'], {
    encoding: 'utf8',
    env: { ...process.env, CLIPMEM_CACHE: '/proc/self/clip-mem-cache' },
    timeout: 60_000,
  });
  t.is(result.status, 1);
  t.regex(result.stderr, /cannot write \/proc\/self\/clip-mem-cache\/clip-tiny-fp32-seed0-v1\.safetensors: ENOENT/);
});
