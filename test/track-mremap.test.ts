// mremap(MREMAP_DONTUNMAP) moves the pages but leaves the old range mapped: the tracker counts both.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { preloadLibrary } from '../src/track/binaries';
import { listRecords, readRecord } from '../src/track/record';

const root = path.resolve(__dirname, '..', '..');
const program = path.join(root, 'build', 'test-programs', 'alloc_program');

test('a 1 MiB mapping moved with MREMAP_DONTUNMAP leaves 2 MiB mapped, and the tracker counts 2 MiB', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipmem-mremap-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const run = spawnSync(program, ['dontunmap'], {
    env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir },
    encoding: 'utf8',
  });
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /^mremap ok$/m);
  const records = listRecords(dir);
  t.is(records.length, 1);
  const record = readRecord(records[0]!.file);
  t.is(record.calls.mremap, 1);
  t.is(record.counters.anonMapped, 2 * 2 ** 20);
  t.is(record.counters.unmappedUnknown, 0);
});
