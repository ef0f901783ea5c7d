// The record's blocks are reserved when it is created: a full filesystem makes tracking fail loudly at
// start, never the tracked program die of SIGBUS when the tracker first writes a page of its record.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { preloadLibrary } from '../src/track/binaries';
import { scratchDir } from './helpers/scratch';

test('a record directory on a full tmpfs: the program runs untracked and stderr says why', (t) => {
  const mountPoint = scratchDir('clipmem-full-');
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint], { encoding: 'utf8' });
  if (mount.status !== 0) {
    fs.rmdirSync(mountPoint);
    t.fail(`this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN): mount said ${mount.stderr.trim()}`);
    return;
  }
  t.teardown(() => {
    spawnSync('umount', [mountPoint]);
    fs.rmdirSync(mountPoint);
  });
  const recordDir = path.join(mountPoint, 'records');
  fs.mkdirSync(recordDir, { mode: 0o700 });
  // Fill the filesystem: the writes stop with ENOSPC.
  const filler = fs.openSync(path.join(mountPoint, 'filler'), 'w');
  const block = Buffer.alloc(64 * 1024);
  t.throws(
    () => {
      for (;;) fs.writeSync(filler, block);
    },
    { code: 'ENOSPC' },
  );
  fs.closeSync(filler);

  const run = spawnSync('/bin/sh', ['-c', 'echo still running'], {
    env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: recordDir },
    encoding: 'utf8',
  });
  t.is(run.signal, null, run.stderr);
  t.is(run.status, 0, run.stderr);
  t.is(run.stdout, 'still running\n');
  t.regex(run.stderr, /clip-mem tracker \(pid \d+\): cannot size the record .*\.rec: No space left on device/);
});
