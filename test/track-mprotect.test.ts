// mprotect that makes a PROT_NONE reservation writable commits memory (V8 and glibc arenas allocate this
// way): its calls are counted, its failures recorded with the exact length and diagnosed like mmap's.
import test from 'ava';
import { allocProgram, trace } from './helpers/trace';
import { requireProgram } from './helpers/require-program';

// Not a multiple of the page size, so the record must keep the length as asked, not as the kernel rounds it.
const length = 256 * 2 ** 20 + 8 * 4096 + 1;
const pages = 256 * 2 ** 20 + 9 * 4096;
const PROT_READ_WRITE = 3;
const MAP_PRIVATE_ANONYMOUS = 0x22;

test('committing 256 MiB of a PROT_NONE reservation succeeds: one mprotect call, the bytes move from reserved to anonymous', (t) => {
  const { status, report } = trace([], [allocProgram, 'commit', String(length)]);
  t.is(status, 0);
  t.is(report.failuresTotal, 0);
  t.is(report.calls!.mprotect, 1);
  const commit = report.phases.find((p) => p.label === 'commit')!;
  t.is(report.last!.anon - commit.anon, pages);
  t.is(report.last!.reserved, 0);
  t.is(report.peaks.reserved, pages);
});

test('under RLIMIT_DATA 64M, making 256 MiB of a reservation read-write fails: mprotect, exact length, ENOMEM, data-limit', (t) => {
  requireProgram(t, 'addr2line', 'apt-get install binutils'); // names the caller's static function
  const { status, report, stdout } = trace(['--limit-data', '64M'], [allocProgram, 'commit', String(length)]);
  t.is(status, 1);
  t.regex(stdout, /^mmap ok$|^mprotect failed$/m);
  t.is(report.calls!.mprotect, 1);
  t.is(report.failures.length, 1);
  const failure = report.failures[0]!;
  t.deepEqual(
    [failure.fn, failure.size, failure.errnoName, failure.phase, failure.injected],
    ['mprotect', length, 'ENOMEM', 'commit', false],
  );
  t.is(failure.detail.prot, PROT_READ_WRITE);
  t.is(failure.detail.flags, MAP_PRIVATE_ANONYMOUS, 'the mapping is private and anonymous (from /proc/self/maps)');
  t.is(failure.detail.fdPath, '');
  t.true(failure.stack[0]!.startsWith('main '), 'the stack starts at the caller');
  t.is(failure.limit?.cause, 'data-limit');
  t.is(report.diagnosis.cause, 'data-limit');
  t.regex(
    report.diagnosis.evidence[0]!,
    /^VmData .* \+ 256 MiB > RLIMIT_DATA 64 MiB: mprotect making 268468225 bytes \(256 MiB\) of anonymous memory read-write is private writable memory, which RLIMIT_DATA counts$/,
  );
});

test('mprotect under fault injection: the chosen call fails with ENOMEM, exact length, flagged injected', (t) => {
  const { status, report } = trace(
    ['--fail', `mprotect:above=${length - 1}`],
    [allocProgram, 'commit', String(length)],
  );
  t.is(status, 1);
  t.is(report.failures.length, 1);
  const failure = report.failures[0]!;
  t.deepEqual(
    [failure.fn, failure.size, failure.errno, failure.injected, failure.phase],
    ['mprotect', length, 12, true, 'commit'],
  );
  t.is(failure.detail.prot, PROT_READ_WRITE);
  t.is(report.calls!.mprotect, 1);
  t.is(report.last!.reserved, pages, 'nothing was committed');
  t.is(report.diagnosis.cause, 'not-memory');
  t.true(
    report.diagnosis.evidence.includes('1 failure(s) were injected by CLIPMEM_FAIL (fault injection, not a limit)'),
  );
});

test('node under RLIMIT_DATA 200M: V8 commits its heap with mprotect, the refusal is recorded, cause data-limit (not js-heap)', (t) => {
  // 8 MB arrays go to V8's large-object space, committed page by page with mprotect; node starts with ~50 MB of VmData.
  const { report } = trace(
    ['--limit-data', '200M'],
    ['node', '-e', 'const keep = []; for (;;) keep.push(new Array(1000000).fill(1.5));'],
  );
  t.not(report.exit.code, 0);
  const refused = report.failures.filter((f) => f.fn === 'mprotect');
  t.true(refused.length > 0);
  t.true(
    refused.every(
      (f) => f.errnoName === 'ENOMEM' && f.limit?.cause === 'data-limit' && f.detail.prot === PROT_READ_WRITE,
    ),
  );
  t.is(report.diagnosis.cause, 'data-limit');
  t.true(
    report.diagnosis.evidence.includes(
      'V8 then aborted ("JavaScript heap out of memory") because that allocation was refused',
    ),
  );
});
