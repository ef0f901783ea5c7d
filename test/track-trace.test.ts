// `clip-mem trace` end to end on real processes: node, python3, a C program, limits, cgroups.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceReport } from '../src/report/trace-report';
import { trace } from './helpers/trace';
import { scratchDir } from './helpers/scratch';
import { requireProgram } from './helpers/require-program';

const root = path.resolve(__dirname, '..', '..');
const program = path.join(root, 'build', 'test-programs', 'alloc_program');
const bin = path.join(root, 'bin', 'clip-mem.js');
const phaseModule = path.join(root, 'dist', 'src', 'core', 'phase.js');

test('node under RLIMIT_AS 1G: the 101187584-byte allocation fails with ENOMEM, cause address-space', (t) => {
  const { status, report, stderr } = trace(
    ['--limit-as', '1G'],
    ['node', '-e', 'const keep = []; for (;;) keep.push(new Float32Array(101187584 / 4));'],
  );
  t.is(status, 1); // node's own exit code for the uncaught RangeError
  t.deepEqual(report.exit, { code: 1, signal: null });
  t.true(report.failures.length >= 1);
  const failure = report.failures[0]!;
  t.is(failure.size, 101187584);
  t.is(failure.errno, 12);
  t.is(failure.errnoName, 'ENOMEM');
  t.is(failure.fn, 'calloc');
  t.true(failure.stack.some((frame) => frame.includes('node::NodeArrayBufferAllocator::Allocate')));
  t.is(report.diagnosis.cause, 'address-space');
  t.regex(report.diagnosis.evidence[0]!, /^VmSize .* \+ 97 MiB > RLIMIT_AS 1\.00 GiB/);
  t.regex(stderr, /calloc of 101187584 bytes \(97 MiB\) failed: ENOMEM \(12\)/);
  t.truthy(report.peaks.heap && report.peaks.vmSize && report.peaks.rss);
  t.true(report.peaks.reserved! > 0, 'V8 reserves its heap PROT_NONE');
  t.true(report.peaks.anon! > 0, 'V8 commits pages of its reservations with mprotect: they count as anonymous');
});

test('C program under RLIMIT_AS 64M: each function fails with its exact size', (t) => {
  requireProgram(t, 'addr2line', 'apt-get install binutils'); // names the caller's static function
  const { status, report } = trace(['--limit-as', '64M'], [program, 'probes']);
  t.is(status, 0);
  const base = 256 * 2 ** 20;
  const seen = report.failures.map((f) => [f.fn, f.size, f.errnoName, f.phase]);
  t.deepEqual(seen, [
    ['malloc', base + 1, 'ENOMEM', 'probes'],
    ['calloc', base + 2, 'ENOMEM', 'probes'],
    ['realloc', base + 3, 'ENOMEM', 'probes'],
    ['posix_memalign', base + 4, 'ENOMEM', 'probes'],
    ['aligned_alloc', base + 4096 * 2, 'ENOMEM', 'probes'],
    ['mmap', base + 5, 'ENOMEM', 'probes'],
    ['mremap', base + 6 * 4096, 'ENOMEM', 'probes'],
    ['pthread_create', base + 7 * 4096, 'EAGAIN', 'probes'],
  ]);
  t.true(report.failures.every((f) => f.limit?.cause === 'address-space'));
  t.true(
    report.failures.every((f) => f.stack[0]!.startsWith('each_function ')),
    'stacks start at the caller',
  );
  t.is(report.failures[3]!.detail.alignment, 64);
  t.is(report.failures[4]!.detail.alignment, 4096);
  t.is(report.diagnosis.cause, 'address-space');
});

test('C program under RLIMIT_DATA 64M: each function fails as data, thread stacks included', (t) => {
  const { report } = trace(['--limit-data', '64M'], [program, 'probes']);
  t.deepEqual(
    report.failures.map((f) => [f.fn, f.limit?.cause]),
    ['malloc', 'calloc', 'realloc', 'posix_memalign', 'aligned_alloc', 'mmap', 'mremap', 'pthread_create'].map((fn) => [
      fn,
      'data-limit',
    ]),
  );
  t.regex(
    report.diagnosis.evidence[0]!,
    /^VmData .* \+ 256 MiB > RLIMIT_DATA 64 MiB: malloc of 268435457 bytes \(256 MiB\) is private writable memory/,
  );
});

test('C program under fault injection: the chosen calls fail with ENOMEM, flagged injected', (t) => {
  const rules = [
    'malloc:above=999999',
    'calloc:above=999999',
    'realloc:above=999999',
    'posix_memalign:above=999999',
    'aligned_alloc:above=999999',
    'mmap:nth=1',
    'mremap:above=999999',
    'pthread_create:above=0',
  ].join(',');
  const { status, report } = trace(['--fail', rules], [program, 'small']);
  t.is(status, 0);
  const base = 1000000;
  t.deepEqual(
    report.failures.map((f) => [f.fn, f.size, f.errno, f.injected]),
    [
      ['malloc', base + 1, 12, true],
      ['calloc', base + 2, 12, true],
      ['realloc', base + 3, 12, true],
      ['posix_memalign', base + 4, 12, true],
      ['aligned_alloc', base + 4096 * 2, 12, true],
      ['mmap', base + 5, 12, true],
      ['mremap', base + 6 * 4096, 12, true],
      ['pthread_create', base + 7 * 4096, 11, true],
    ],
  );
  t.is(report.diagnosis.cause, 'none');
});

test('calloc whose nmemb*size overflows is recorded with the overflow flagged, cause not-memory', (t) => {
  const { report } = trace([], [program, 'calloc-overflow']);
  t.is(report.failures.length, 1);
  const failure = report.failures[0]!;
  t.is(failure.fn, 'calloc');
  t.true(failure.sizeOverflow);
  t.is(failure.detail.nmemb, 2 ** 62);
  t.is(failure.detail.elemSize, 16);
  t.is(failure.size, 2 ** 66);
  t.is(report.diagnosis.cause, 'not-memory');
  t.regex(report.diagnosis.evidence[0]!, /^calloc\(4611686018427387904, 16\): the product overflows 64 bits/);
});

test('a read-only file mapping fails under --limit-as but not under the same --limit-data', (t) => {
  const file = path.join(scratchDir('clipmem-map-'), 'weights.bin');
  const size = String(128 * 2 ** 20);
  const underAs = trace(['--limit-as', '64M'], [program, 'mapfile', file, size]);
  t.is(underAs.status, 1);
  t.is(underAs.report.failures.length, 1);
  t.is(underAs.report.failures[0]!.fn, 'mmap');
  t.is(underAs.report.failures[0]!.size, 128 * 2 ** 20);
  t.is(underAs.report.failures[0]!.detail.fdPath, file);
  t.is(underAs.report.diagnosis.cause, 'address-space');
  t.true(
    underAs.report.diagnosis.evidence.includes(
      'a read-only file mapping counts against RLIMIT_AS (address space) but not RLIMIT_DATA: it is not data',
    ),
  );
  const underData = trace(['--limit-data', '64M'], [program, 'mapfile', file, size]);
  t.is(underData.status, 0);
  t.is(underData.report.failures.length, 0);
  t.is(underData.report.peaks.file, 128 * 2 ** 20);
  t.is(underData.report.diagnosis.cause, 'none');
  t.true(
    underData.report.diagnosis.evidence.includes(
      'file mappings peaked at 128 MiB; read-only file mappings are not data, so RLIMIT_DATA 64 MiB does not count them (RLIMIT_AS would)',
    ),
  );
});

test('node touching 1 GiB in a 300M cgroup: cgroup-oom-kill with the last counters and phase; the cgroup is removed', (t) => {
  const script =
    `require(${JSON.stringify(phaseModule)}).setPhase('touch 1 GiB');` +
    'const keep = []; for (let i = 0; i < 64; i++) { const b = Buffer.alloc(16 << 20); b.fill(1); keep.push(b); }';
  const { status, report, stderr } = trace(['--limit-mem', '300M'], ['node', '-e', script]);
  t.is(status, 137);
  t.deepEqual(report.exit, { code: null, signal: 'SIGKILL' });
  t.is(report.diagnosis.cause, 'cgroup-oom-kill');
  t.is(report.cgroup!.limit, 300 * 2 ** 20);
  t.is(report.cgroup!.oomKills, 1);
  t.true(report.cgroup!.removed);
  t.regex(
    report.diagnosis.evidence[0]!,
    /^killed by the kernel OOM killer in cgroup \/.*clipmem-\d+-\d+ at limit 300 MiB$/,
  );
  t.is(report.last!.phase, 'touch 1 GiB');
  t.true(report.last!.heap > 200 * 2 ** 20);
  t.true(report.last!.rss! > 0);
  t.true(report.diagnosis.evidence.some((e) => e.startsWith('last seen before the kill: phase "touch 1 GiB"')));
  t.regex(stderr, /killed by the kernel OOM killer in cgroup/);
  const mount = '/sys/fs/cgroup/memory';
  t.false(fs.existsSync(path.join(mount, report.cgroup!.path)));
});

test('python3 is traced; under RLIMIT_AS its MemoryError is a failed malloc of the exact size', (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const ok = trace([], ['python3', '-c', 'x = bytearray(50 * 1024 * 1024); print(len(x))']);
  t.is(ok.status, 0);
  t.true(ok.report.tracked);
  t.true(ok.report.peaks.heap! >= 50 * 2 ** 20);
  t.is(ok.report.diagnosis.cause, 'none');
  const failing = trace(['--limit-as', '300M'], ['python3', '-c', 'bytearray(1 << 30)']);
  t.is(failing.status, 1);
  const failure = failing.report.failures.find((f) => f.size >= 2 ** 30)!;
  t.truthy(failure);
  t.is(failure.size, 2 ** 30 + 1); // bytearray keeps a trailing NUL
  t.is(failing.report.diagnosis.cause, 'address-space');
});

test('node cannot start under RLIMIT_AS 600M: diagnosed as V8 CodeRange reservation', (t) => {
  const { status, report } = trace(['--limit-as', '600M'], ['node', '-e', '1']);
  t.is(status, 133);
  t.is(report.diagnosis.cause, 'address-space');
  t.true(report.diagnosis.evidence.some((e) => e.includes('V8 could not reserve its CodeRange')));
});

test('a static binary is reported as not tracked, not as "no allocations"', (t) => {
  const { status, report } = trace([], ['/sbin/ldconfig', '-p']);
  t.is(status, 0);
  t.false(report.tracked);
  t.is(
    report.notTracked,
    '/sbin/ldconfig is statically linked: it never reads LD_PRELOAD, so its allocations cannot be tracked',
  );
  t.true(report.diagnosis.evidence.includes(report.notTracked!));
});

test('stress: 8 threads x 1,000,000 malloc/free pairs, fork and exec: no crash, counters balance to the byte', (t) => {
  const { status, report } = trace([], [program, 'stress', '8', '1000000']);
  t.is(status, 0);
  t.is(report.failuresTotal, 0);
  const before = report.phases.find((p) => p.label === 'before stress')!;
  const after = report.phases.find((p) => p.label === 'after stress')!;
  t.is(after.heap, before.heap);
  t.true(report.calls!.malloc >= 8 * 1000000);
  t.true(report.calls!.free >= 8 * 1000000);
  // The command's own process, and the forked child (its exec of /bin/true makes no new process).
  t.is(report.processes.length, 2);
  t.regex(report.processes[1]!.exe, /\/true$/);
});

test('heap peak is exact to the byte for one thread across folds, shrinking and regrowth', (t) => {
  const dir = scratchDir('clipmem-trace-test-');
  const json = path.join(dir, 'trace.json');
  const result = spawnSync(process.execPath, [bin, 'trace', '--json', json, '--', program, 'peak'], {
    cwd: root,
    encoding: 'utf8',
  });
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  t.is(result.status, 0);
  const highest = Number(/peak above start (\d+)/.exec(result.stdout)![1]);
  t.true(highest > 20 * 1024 * 1024);
  const before = report.phases.find((p) => p.label === 'before peak')!;
  const after = report.phases.find((p) => p.label === 'after peak')!;
  t.is(after.heap, before.heap);
  t.is(report.peaks.heap, before.heap + highest);
});

test('600 threads, more than the record has slots: the rest share one slot and the counters still balance', (t) => {
  const { status, report } = trace([], [program, 'threads', '600']);
  t.is(status, 0);
  const before = report.phases.find((p) => p.label === 'before threads')!;
  const after = report.phases.find((p) => p.label === 'after threads')!;
  t.is(after.heap, before.heap);
  t.true(report.calls!.malloc >= 600 * 1000);
  t.is(report.calls!.pthread_create, 601);
});

test('a tracked shell that execs a static binary: the lost track is reported', (t) => {
  const { status, report } = trace([], ['sh', '-c', 'exec /sbin/ldconfig -p > /dev/null']);
  t.is(status, 0);
  t.true(report.tracked);
  t.regex(report.lostTrack!, /never reached its exit handlers: it exec'd a program that did not load the interposer/);
  t.true(report.diagnosis.evidence.includes(report.lostTrack!));
});

test("a shell that leaves through _exit (dash's exit), and a forked child that does (os._exit): no lost track", (t) => {
  const shell = trace([], ['sh', '-c', 'echo hi > /dev/null; exit 3']);
  t.is(shell.status, 3);
  t.is(shell.report.lostTrack, undefined);
  t.is(shell.report.diagnosis.cause, 'not-memory');
  const python = trace(
    [],
    ['python3', '-c', 'import os\npid = os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0)'],
  );
  t.is(python.status, 0);
  t.is(python.report.lostTrack, undefined);
});

test('errno survives the tracker: successful calls leave it as the program set it', (t) => {
  const { status, report } = trace([], [program, 'errno']);
  t.is(status, 0);
  t.is(report.failuresTotal, 0);
  t.true(report.timeline.length > 1);
});

const overcommitHeuristic = fs.readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim() === '0';
(overcommitHeuristic ? test : test.skip)(
  'python3 asking for 1 TiB under vm.overcommit_memory=0: overcommit-heuristic, with the phase set through ctypes',
  (t) => {
    requireProgram(t, 'python3', 'apt-get install python3');
    const script = [
      'import ctypes',
      'ctypes.CDLL(None).clipmem_tracker_set_phase(b"load weights")',
      'try:',
      '    bytearray(1 << 40)',
      'except MemoryError:',
      '    print("MemoryError")',
    ].join('\n');
    const { status, report } = trace([], ['python3', '-c', script]);
    t.is(status, 0);
    const failure = report.failures.find((f) => f.size === 2 ** 40 + 1)!;
    t.is(failure.fn, 'malloc');
    t.is(failure.phase, 'load weights');
    t.is(report.diagnosis.cause, 'overcommit-heuristic');
    t.regex(
      report.diagnosis.evidence[0]!,
      /^1\.00 TiB > RAM \+ swap .* GiB: vm\.overcommit_memory=0 refuses a single allocation larger than all memory/,
    );
  },
);
