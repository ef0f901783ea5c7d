// CLIPMEM_FAIL rules the tracker cannot read are named on stderr and ignored, never guessed at.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { preloadLibrary } from '../src/track/binaries';
import { listRecords, readRecord } from '../src/track/record';
import { scratchDir } from './helpers/scratch';

test('rules without digits, nth=0 and negative sizes are rejected, not read as 0 or 2^64-1', (t) => {
  const dir = scratchDir('clipmem-rules-');
  const bad = ['malloc:nth=', 'malloc:above=', 'calloc:nth=0', 'calloc:above=-1', 'mmap:above=1x'];
  const run = spawnSync('/bin/true', [], {
    env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir, CLIPMEM_FAIL: bad.join(',') },
    encoding: 'utf8',
  });
  t.is(run.status, 0, run.stderr);
  const rejected = [...run.stderr.matchAll(/CLIPMEM_FAIL: cannot read rule "([^"]*)"/g)].map((match) => match[1]);
  t.deepEqual(rejected, bad);
  const records = listRecords(dir);
  t.is(records.length, 1);
  t.is(readRecord(records[0]!.file).injectedFaults, 0);
});
