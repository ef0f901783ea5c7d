// clip-mem's model children run with glibc.malloc.hugetlb=1 (src/core/huge-pages.ts): the environment it
// builds, that a real process then holds its large blocks in transparent huge pages (and none without),
// that the training step computes the same bits either way, and that a bad CLIPMEM_HUGE_PAGES exits 2.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HUGE_PAGES_ENV, hugePageMallocEnv } from '../src/core/huge-pages';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');
const onnx = path.resolve(__dirname, '..', 'src', 'clip', 'onnx');
const inputs = path.resolve(__dirname, '..', 'src', 'scenarios', 'inputs');
const MiB = 1024 * 1024;

/** Whether the kernel gives transparent huge pages to regions that ask (mode madvise or always). */
const thpMode = (() => {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'never';
  } catch {
    return 'never';
  }
})();

test('the tunable is added to GLIBC_TUNABLES, after the user own, unless switched off or already chosen', (t) => {
  t.is(hugePageMallocEnv({}).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
  t.is(
    hugePageMallocEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES,
    'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1',
  );
  t.is(hugePageMallocEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  t.is(hugePageMallocEnv({ [HUGE_PAGES_ENV]: 'off' }).GLIBC_TUNABLES, undefined);
  t.is(hugePageMallocEnv({ [HUGE_PAGES_ENV]: 'on', PATH: '/bin' }).PATH, '/bin');
  t.throws(() => hugePageMallocEnv({ [HUGE_PAGES_ENV]: 'yes' }), {
    message: 'CLIPMEM_HUGE_PAGES=yes: expected on or off',
  });
});

/** AnonHugePages (bytes) of a node child that allocates and touches 64 MiB. */
function anonHugePages(env: NodeJS.ProcessEnv): number {
  const script =
    'const a = new Uint8Array(64 << 20); for (let i = 0; i < a.length; i += 4096) a[i] = 1;' +
    "process.stdout.write(/AnonHugePages:\\s*(\\d+)/.exec(require('fs').readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]);";
  const out = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(out.stderr);
  return Number(out.stdout) * 1024;
}

(thpMode === 'never' ? test.skip : test)(
  "a child with the tunable holds a 64 MiB block in huge pages; with CLIPMEM_HUGE_PAGES=off it holds none (THP 'madvise' mode)",
  (t) => {
    // The block's own 2 MiB-aligned pages: all of 64 MiB but the partial pages at its two ends.
    t.true(anonHugePages(hugePageMallocEnv({ ...process.env, [HUGE_PAGES_ENV]: 'on' })) >= 60 * MiB);
    if (thpMode === 'madvise') t.is(anonHugePages({ ...process.env, [HUGE_PAGES_ENV]: 'off' }), 0);
  },
);

test('the training step computes the same loss and parameters, bit for bit, with and without huge pages', (t) => {
  // Two AdamW steps on the tiny model, each run in a fresh process: losses and a checksum of every parameter.
  const script = `
    const { createOnnxTrainer } = require(${JSON.stringify(onnx)});
    const { syntheticIds, syntheticPixels } = require(${JSON.stringify(inputs)});
    const crypto = require('crypto');
    (async () => {
      const trainer = await createOnnxTrainer('tiny', { batch: 2, threads: 1 });
      const pixels = syntheticPixels(trainer.config, 2);
      const ids = syntheticIds(trainer.config, 2);
      const losses = [await trainer.step(pixels, ids), await trainer.step(pixels, ids)];
      const hash = crypto.createHash('sha256');
      for (const [name, p] of trainer.params) hash.update(name).update(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
      process.stdout.write(JSON.stringify({ losses, params: hash.digest('hex') }));
      await trainer.close();
    })();`;
  const run = (env: NodeJS.ProcessEnv) => {
    const out = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
    t.is(out.status, 0, out.stderr);
    return JSON.parse(out.stdout) as { losses: number[]; params: string };
  };
  const off = run({ ...process.env, [HUGE_PAGES_ENV]: 'off' });
  const on = run(hugePageMallocEnv({ ...process.env, [HUGE_PAGES_ENV]: 'on' }));
  t.deepEqual(on, off);
  t.not(off.losses[1], off.losses[0]); // the first step moved the parameters
});

test('a CLIPMEM_HUGE_PAGES that is neither on nor off is a usage error (exit 2) before any child runs', (t) => {
  const out = spawnSync(process.execPath, [bin, 'run', 'basic-ops'], {
    env: { ...process.env, [HUGE_PAGES_ENV]: 'maybe' },
    encoding: 'utf8',
  });
  t.is(out.status, 2);
  t.regex(out.stderr, /CLIPMEM_HUGE_PAGES=maybe: expected on or off/);
  t.notRegex(out.stdout, /basic-ops/);
});
