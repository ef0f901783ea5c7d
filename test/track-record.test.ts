// The interposer's record read back through the addon: phases, failures, counters.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { preloadLibrary } from '../src/track/binaries';
import { listRecords, readRecord } from '../src/track/record';
import { setPhase } from '../src/core/phase';
import { scratchDir } from './helpers/scratch';

const root = path.resolve(__dirname, '..', '..');

function trackedNode(script: string, extraEnv: Record<string, string> = {}): string {
  const dir = scratchDir('clipmem-test-');
  execFileSync(process.execPath, ['-e', script], {
    cwd: root,
    env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir, ...extraEnv },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return dir;
}

test('setPhase outside the tracker does nothing', (t) => {
  t.notThrows(() => setPhase('not tracked'));
});

test('an injected calloc failure is recorded byte-exact with errno, phase and stack', (t) => {
  const dir = trackedNode(
    `const { setPhase } = require('./dist/src/core/phase');
     setPhase('load text_model.embeddings.token_embedding.weight');
     try { new Float32Array(101187584 / 4); } catch (e) { process.stdout.write(e.message); }`,
    { CLIPMEM_FAIL: 'calloc:above=100000000' },
  );
  const records = listRecords(dir);
  t.is(records.length, 1);
  const record = readRecord(records[0]!.file);
  t.is(record.state, 'exited');
  t.is(record.pid, records[0]!.pid);
  // V8 retries a failed ArrayBuffer allocation after garbage collection: every try is recorded.
  t.true(record.failuresTotal >= 1);
  t.is(record.failures.length, record.failuresTotal);
  t.true(record.failures.every((f) => f.fn === 'calloc' && f.size === 101187584));
  const failure = record.failures[0]!;
  t.is(failure.fn, 'calloc');
  t.is(failure.size, 101187584);
  t.is(failure.errno, 12);
  t.true(failure.injected);
  t.false(failure.sizeOverflow);
  t.is(failure.phase, 'load text_model.embeddings.token_embedding.weight');
  t.is(failure.stack[0]!.symbol, 'node::NodeArrayBufferAllocator::Allocate(unsigned long)');
  t.true(failure.vmSize > 0);
  t.is(record.phases.length, 1);
  t.is(record.phases[0]!.label, 'load text_model.embeddings.token_embedding.weight');
  t.true(record.calls.malloc > 0);
});

// The fast paths of malloc and free (issue 16) count with countdowns in the thread slot: twice the pairs
// must add exactly the pairs to the calls and the 64-byte bucket, and leave the heap where it was.
test('the 64-byte malloc/free loop on 1 and 2 threads: calls, size bucket and heap exact to the pair', (t) => {
  const program = path.join(root, 'build', 'test-programs', 'alloc_program');
  const loop = (pairs: number, threads: number) => {
    const dir = scratchDir('clipmem-test-');
    execFileSync(program, ['loop', String(pairs), String(threads)], {
      env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir },
      stdio: 'ignore',
    });
    const records = listRecords(dir);
    t.is(records.length, 1);
    return readRecord(records[0]!.file);
  };
  const bucket64 = 6; // 32 < 64 <= 64
  for (const threads of [1, 2]) {
    const once = loop(200_000, threads);
    const twice = loop(400_000, threads);
    t.is(twice.calls.malloc - once.calls.malloc, 200_000, `${threads} thread(s)`);
    t.is(twice.calls.free - once.calls.free, 200_000, `${threads} thread(s)`);
    t.is(twice.histogram[bucket64]! - once.histogram[bucket64]!, 200_000, `${threads} thread(s)`);
    t.is(twice.counters.heapCurrent, once.counters.heapCurrent, `${threads} thread(s)`);
    t.is(twice.counters.heapPeak, once.counters.heapPeak, `${threads} thread(s)`);
  }
});
