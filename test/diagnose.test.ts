// The cause vocabulary and its evidence sentences, from facts as a traced run reports them.
import test from 'ava';
import { DiagnosisInput, FailureFacts, diagnose, explainFailure } from '../src/diagnose';
import { traceFix } from '../src/report/trace-report';
import { userspaceOomKillers } from '../src/probe/proc';
import * as path from 'node:path';

const fixtures = path.resolve(__dirname, '..', '..', 'test', 'fixtures');

const GiB = 2 ** 30;
const MiB = 2 ** 20;

function failure(facts: Partial<FailureFacts>): FailureFacts {
  return {
    fn: 'malloc',
    size: 101187584,
    errno: 12,
    overcommitMemory: 0,
    memTotal: 24 * GiB,
    mapCount: 100,
    maxMapCount: 65530,
    ...facts,
  };
}

function run(input: Partial<DiagnosisInput>): DiagnosisInput {
  return { exit: { code: 1, signal: null }, limits: {}, failures: [], ...input };
}

test('address-space: the seed story, with the arithmetic', (t) => {
  const seed = failure({ fn: 'mmap', size: 101187584, vmSize: 3.95 * GiB, prot: 3, flags: 0x22, fd: -1 });
  const d = diagnose(run({ limits: { as: 4 * GiB }, failures: [seed] }));
  t.is(d.cause, 'address-space');
  t.is(
    d.evidence[0],
    'VmSize 3.95 GiB + 97 MiB > RLIMIT_AS 4.00 GiB: mmap of an anonymous mapping, 101187584 bytes (97 MiB) needs address space the limit does not leave',
  );
});

test('data-limit: private writable memory over RLIMIT_DATA', (t) => {
  const d = explainFailure(failure({ vmData: 950 * MiB, vmSize: 2 * GiB }), { data: 1 * GiB });
  t.deepEqual(d, {
    cause: 'data-limit',
    evidence: [
      'VmData 950 MiB + 97 MiB > RLIMIT_DATA 1.00 GiB: malloc of 101187584 bytes (97 MiB) is private writable memory, which RLIMIT_DATA counts',
    ],
  });
});

test('a read-only file mapping is not data: RLIMIT_DATA does not explain its failure', (t) => {
  const readOnly = failure({ fn: 'mmap', prot: 1, flags: 2, fd: 5, fdPath: '/m.safetensors', vmData: 900 * MiB });
  t.is(explainFailure(readOnly, { data: 1 * GiB }), undefined);
});

test('commit-limit under vm.overcommit_memory=2', (t) => {
  const d = explainFailure(
    failure({ overcommitMemory: 2, committedAs: 11 * GiB, commitLimit: 11.5 * GiB, size: GiB }),
    {},
  );
  t.is(d?.cause, 'commit-limit');
  t.is(
    d?.evidence[0],
    'Committed_AS 11.00 GiB + 1.00 GiB > CommitLimit 11.50 GiB (vm.overcommit_memory=2): malloc of 1073741824 bytes (1.00 GiB) cannot be committed',
  );
});

test('overcommit-heuristic: one allocation larger than RAM + swap', (t) => {
  const d = explainFailure(failure({ size: 32 * GiB, memTotal: 24 * GiB }), {});
  t.is(d?.cause, 'overcommit-heuristic');
  t.regex(d!.evidence[0]!, /^32\.00 GiB > RAM \+ swap 24\.00 GiB: vm\.overcommit_memory=0 refuses/);
});

test('map-count: every mapping slot used', (t) => {
  const d = explainFailure(
    failure({ fn: 'mmap', fd: -1, prot: 3, mapCount: 65530, maxMapCount: 65530, size: 4096 }),
    {},
  );
  t.is(d?.cause, 'map-count');
  t.is(
    d?.evidence[0],
    '65530 mappings = vm.max_map_count 65530: mmap of an anonymous mapping, 4096 bytes (4.0 KiB) needs one more mapping',
  );
});

test('mprotect making a private reservation writable: data-limit, commit-limit or map-count, never address-space', (t) => {
  // Flags as the tracker reads them from /proc/self/maps: MAP_PRIVATE | MAP_ANONYMOUS.
  const commit = failure({
    fn: 'mprotect',
    size: 256 * MiB,
    prot: 3,
    flags: 0x22,
    fd: -1,
    vmSize: 3.9 * GiB,
    vmData: 40 * MiB,
  });
  t.deepEqual(explainFailure(commit, { data: 64 * MiB }), {
    cause: 'data-limit',
    evidence: [
      'VmData 40 MiB + 256 MiB > RLIMIT_DATA 64 MiB: mprotect making 268435456 bytes (256 MiB) of anonymous memory read-write is private writable memory, which RLIMIT_DATA counts',
    ],
  });
  // It maps nothing new: a VmSize close to RLIMIT_AS does not explain it.
  t.is(explainFailure(commit, { as: 4 * GiB }), undefined);
  const overcommitted = explainFailure(
    { ...commit, overcommitMemory: 2, committedAs: 11.9 * GiB, commitLimit: 12 * GiB },
    { as: 4 * GiB },
  );
  t.is(overcommitted?.cause, 'commit-limit');
  t.is(
    overcommitted?.evidence[0],
    'Committed_AS 11.90 GiB + 256 MiB > CommitLimit 12.00 GiB (vm.overcommit_memory=2): mprotect making 268435456 bytes (256 MiB) of anonymous memory read-write cannot be committed',
  );
  const split = explainFailure({ ...commit, size: 4096, mapCount: 65530 }, {});
  t.is(split?.cause, 'map-count');
  t.is(
    split?.evidence[0],
    '65530 mappings = vm.max_map_count 65530: mprotect making 4096 bytes (4.0 KiB) of anonymous memory read-write needs one more mapping',
  );
});

test('mprotect of a shared file mapping is not data: RLIMIT_DATA does not explain its failure', (t) => {
  const shared = failure({ fn: 'mprotect', size: 64 * MiB, prot: 3, flags: 1, fdPath: '/dev/shm/x', vmData: 40 * MiB });
  t.is(explainFailure(shared, { data: 64 * MiB }), undefined);
});

test('pthread_create EAGAIN under RLIMIT_AS is address space (libgomp "Thread creation failed")', (t) => {
  const d = diagnose(
    run({
      limits: { as: GiB },
      failures: [failure({ fn: 'pthread_create', errno: 11, size: 8 * MiB, vmSize: 1020 * MiB })],
      output: 'libgomp: Thread creation failed: Resource temporarily unavailable\n',
    }),
  );
  t.is(d.cause, 'address-space');
  t.true(d.evidence[0]!.startsWith('libgomp could not create its OpenMP threads'));
  t.true(d.evidence.some((e) => e.startsWith('VmSize 1020 MiB + 8.0 MiB > RLIMIT_AS 1.00 GiB')));
});

test('cgroup-oom-kill with the last state', (t) => {
  const d = diagnose(
    run({
      exit: { code: null, signal: 'SIGKILL' },
      cgroup: { path: '/a/clipmem-1-1', limit: 300 * MiB, oomKills: 1 },
      last: { phase: 'touch', heap: 280 * MiB },
    }),
  );
  t.deepEqual(d, {
    cause: 'cgroup-oom-kill',
    evidence: [
      'killed by the kernel OOM killer in cgroup /a/clipmem-1-1 at limit 300 MiB',
      'last seen before the kill: phase "touch", heap 280 MiB',
    ],
  });
});

test('host-oom-kill, js-heap, gpu-memory, not-memory, none', (t) => {
  // The host-wide counter alone: "possibly" (unknown) without the kernel log, not-memory when the log is silent.
  const possibly = diagnose(
    run({ exit: { code: null, signal: 'SIGKILL' }, hostOomKills: 1, kernelLog: '/dev/kmsg: permission denied' }),
  );
  t.is(possibly.cause, 'unknown');
  t.regex(
    possibly.evidence[0]!,
    /^killed by SIGKILL, possibly by the host's OOM killer: \/proc\/vmstat counted 1 OOM kill/,
  );
  t.is(diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, hostOomKills: 1, oomKilled: [] })).cause, 'not-memory');
  t.is(
    diagnose(
      run({
        exit: { code: null, signal: 'SIGKILL' },
        hostOomKills: 1,
        oomKilled: [{ pid: 7, name: 'python3', main: true, rss: 2 ** 30, cgroup: '/', cgroupLimit: false }],
      }),
    ).cause,
    'host-oom-kill',
  );
  t.is(diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, hostOomKills: 0 })).cause, 'not-memory');
  t.is(
    diagnose(run({ output: 'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory' }))
      .cause,
    'js-heap',
  );
  t.is(
    diagnose(run({ output: 'torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB' })).cause,
    'gpu-memory',
  );
  t.is(diagnose(run({ exit: { code: 2, signal: null } })).cause, 'not-memory');
  t.deepEqual(diagnose(run({ exit: { code: 0, signal: null } })), {
    cause: 'none',
    evidence: ['exited with code 0; no allocation failed'],
  });
});

test('V8 CodeRange start failure is address space', (t) => {
  const d = diagnose(
    run({
      exit: { code: 133, signal: null },
      limits: { as: 600 * MiB },
      output: 'Fatal process out of memory: Failed to reserve virtual memory for CodeRange',
    }),
  );
  t.is(d.cause, 'address-space');
  t.regex(d.evidence[0]!, /more than RLIMIT_AS 600 MiB allows$/);
});

test("ld.so failing to map a library's segments is address space under RLIMIT_AS only", (t) => {
  const output = 'ERR_DLOPEN_FAILED: libonnxruntime.so.1: failed to map segment from shared object';
  const d = diagnose(run({ exit: { code: 1, signal: null }, limits: { as: 1100 * MiB }, output }));
  t.is(d.cause, 'address-space');
  t.regex(d.evidence[0]!, /^the dynamic loader could not map libonnxruntime\.so\.1 .* under RLIMIT_AS 1\.07 GiB: /);
  t.is(
    diagnose(run({ exit: { code: 1, signal: null }, limits: {}, output })).cause,
    'not-memory',
    'a noexec mount fails the same way',
  );
});

test('a failure with another errno is not a memory shortage', (t) => {
  const d = explainFailure(failure({ fn: 'mmap', errno: 22, fd: 3, fdPath: '/x', prot: 1 }), {});
  t.is(d?.cause, 'not-memory');
  t.regex(d!.evidence[0]!, /failed with EINVAL, which is not a memory shortage$/);
});

test('a refusal for another reason before the one a limit explains: the limit is the cause', (t) => {
  const denied = failure({
    fn: 'mprotect',
    size: 4096,
    errno: 13,
    prot: 7,
    flags: 0x02,
    fd: 3,
    fdPath: '/noexec/lib.so',
  });
  const seed = failure({ fn: 'mmap', size: 101187584, vmSize: 3.95 * GiB, prot: 3, flags: 0x22, fd: -1 });
  const d = diagnose(run({ limits: { as: 4 * GiB }, failures: [denied, seed] }));
  t.is(d.cause, 'address-space');
  t.regex(d.evidence[0]!, /^VmSize 3\.95 GiB \+ 97 MiB > RLIMIT_AS 4\.00 GiB: mmap of an anonymous mapping/);
  t.is(d.evidence[d.evidence.length - 1], '2 allocations failed in all');
  t.is(diagnose(run({ failures: [denied] })).cause, 'not-memory');
});

test("V8's heap-out-of-memory abort after a refusal a limit explains: the limit is the cause", (t) => {
  const refused = failure({ fn: 'mmap', size: 268435456, vmSize: 1.9 * GiB, prot: 3, flags: 0x22, fd: -1 });
  const d = diagnose(
    run({
      limits: { as: 2 * GiB },
      failures: [refused],
      output: 'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory',
    }),
  );
  t.is(d.cause, 'address-space');
  t.is(
    d.evidence[d.evidence.length - 1],
    'V8 then aborted ("JavaScript heap out of memory") because that allocation was refused',
  );
  const unexplained = failure({ fn: 'malloc', size: 64, errno: 12, memTotal: 24 * GiB });
  t.is(diagnose(run({ failures: [unexplained], output: 'JavaScript heap out of memory' })).cause, 'js-heap');
});

// The figures of a real refused fork: a 7 GiB parent under vm.overcommit_memory=2 on this machine.
const refusedFork = failure({
  fn: 'fork',
  size: 7524544512,
  vmSize: 7532175360,
  vmData: 7524409344,
  overcommitMemory: 2,
  committedAs: 7643697152,
  commitLimit: 12638015488,
  memTotal: 25276035072,
});

test('a fork the commit limit refused: commit-limit, with what the child must commit', (t) => {
  const d = diagnose(run({ failures: [refusedFork] }));
  t.is(d.cause, 'commit-limit');
  t.deepEqual(d.evidence, [
    'Committed_AS 7.12 GiB + 7.01 GiB > CommitLimit 11.77 GiB (vm.overcommit_memory=2): fork of a process with 7.01 GiB of private writable memory (VmData + VmStk) cannot be committed',
    "the child shares the parent's pages until either writes them, but the kernel commits the whole copy at the fork: a large parent cannot start workers under this limit however little they use",
  ]);
});

test('a fork is never refused by RLIMIT_AS, RLIMIT_DATA or the map count; its EAGAIN is a task limit', (t) => {
  const limits = { as: 7 * GiB, data: 7 * GiB };
  const underLimits = failure({ ...refusedFork, overcommitMemory: 0, mapCount: 65530 });
  t.is(explainFailure(underLimits, limits), undefined);
  const d = diagnose(run({ limits, failures: [underLimits] }));
  t.is(d.cause, 'unknown');
  t.true(d.evidence.some((line) => line.startsWith('fork also fails with ENOMEM when the kernel cannot allocate')));
  const eagain = explainFailure(failure({ ...refusedFork, errno: 11 }), limits);
  t.deepEqual(eagain, {
    cause: 'not-memory',
    evidence: [
      'fork of a process with 7.01 GiB of private writable memory (VmData + VmStk) failed with EAGAIN, which is not a memory shortage',
      "fork's EAGAIN is a limit on processes and threads (RLIMIT_NPROC, the pids cgroup's pids.max, kernel.threads-max)",
    ],
  });
});

test('a refusal for lack of memory that no limit explains: unknown, never not-memory, and what is missing', (t) => {
  const hugePages = failure({ fn: 'mmap', size: 2 * MiB, prot: 3, flags: 0x40022, fd: -1, vmSize: 19 * MiB });
  const d = diagnose(run({ failures: [hugePages] }));
  t.is(d.cause, 'unknown');
  t.deepEqual(d.evidence.slice(0, 3), [
    'exited with code 1; why is not known: an allocation was refused as if memory ran out, and no limit clip-mem reads explains it',
    'mmap of an anonymous mapping, 2097152 bytes (2.0 MiB) failed with ENOMEM',
    "MAP_HUGETLB takes its pages from the kernel's huge page pool (vm.nr_hugepages; HugePages_Free in /proc/meminfo), which free ordinary memory does not refill: an empty or exhausted pool refuses with ENOMEM",
  ]);
  t.regex(d.evidence[3]!, /^missing: what refused it: /);
  // A refusal of another kind beside it does not make the ending "not memory".
  const denied = failure({ fn: 'mprotect', size: 4096, errno: 13, prot: 7, flags: 0x02, fd: -1 });
  t.is(diagnose(run({ failures: [denied, hugePages] })).cause, 'unknown');
  // Survived: the ending is not in question. Killed by a SIGKILL no OOM killer counted: not memory.
  t.is(diagnose(run({ exit: { code: 0, signal: null }, failures: [hugePages] })).cause, 'none');
  t.is(diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, failures: [hugePages] })).cause, 'not-memory');
  // glibc's EAGAIN for a thread: its stack, or a task limit.
  const thread = failure({ fn: 'pthread_create', size: 8 * MiB, errno: 11, vmSize: 1.2 * GiB });
  const threadDiagnosis = diagnose(run({ failures: [thread] }));
  t.is(threadDiagnosis.cause, 'unknown');
  t.regex(threadDiagnosis.evidence[2]!, /^glibc's pthread_create says EAGAIN both when the thread's stack/);
});

test('a process the command started had a refusal no limit explains: unknown for the command too', (t) => {
  const hugePages = failure({ fn: 'mmap', size: 2 * MiB, prot: 3, flags: 0x40022, fd: -1 });
  const d = diagnose(
    run({ descendantFailures: [{ pid: 12, exe: '/usr/bin/worker', exitCode: 1, limits: {}, failures: [hugePages] }] }),
  );
  t.is(d.cause, 'unknown');
  t.is(
    d.evidence[1],
    'pid 12 (/usr/bin/worker): mmap of an anonymous mapping, 2097152 bytes (2.0 MiB) failed with ENOMEM',
  );
});

test("a refused fork's fix: start the workers from a small process, no limit to size", (t) => {
  const limit = explainFailure(refusedFork, {})!;
  const forkFailure = {
    fn: 'fork',
    size: refusedFork.size,
    injected: false,
    limit,
    vmSize: refusedFork.vmSize!,
    vmData: refusedFork.vmData!,
  };
  const fix = traceFix(['python3', 'train.py'], limit, { failures: [forkFailure] });
  t.deepEqual(fix, {
    needAtLeast: null,
    text:
      "the child of a fork is committed a full copy of the parent's 7.01 GiB of private writable memory: start " +
      "worker processes from a small process (Python: multiprocessing.set_start_method('forkserver') or 'spawn'; " +
      "PyTorch: DataLoader(..., multiprocessing_context='forkserver')), or before the model is loaded; or have the " +
      'administrator raise vm.overcommit_ratio or add swap',
    command: null,
  });
});

test("a worker the OOM killer killed, and the parent's own words that its worker was killed: the OOM kill is the cause", (t) => {
  const worker = { pid: 24553, name: 'python3', main: false, rss: 386 * MiB, cgroup: '/audit', cgroupLimit: true };
  const output =
    'RuntimeError: DataLoader worker (pid 24553) is killed by signal: Killed. \nRuntimeError: DataLoader worker (pid(s) 24553) exited unexpectedly\n';
  const d = diagnose(run({ oomKilled: [worker], output }));
  t.deepEqual(d, {
    cause: 'cgroup-oom-kill',
    evidence: [
      'exited with code 1 because a process it started was killed, as its output says: "RuntimeError: DataLoader worker (pid 24553) is killed by signal: Killed."',
      'pid 24553 (python3) was killed by the kernel OOM killer in cgroup /audit (a memory cgroup this run did not make); its RSS was 386 MiB when killed',
    ],
  });
  // A worker named that is not the one killed: whether the ending follows from the kill is not known.
  t.is(diagnose(run({ oomKilled: [worker], output: output.replace(/24553/g, '999') })).cause, 'unknown');
  // The program says nothing of its worker: not known either, the kill said as "meanwhile".
  const silent = diagnose(run({ oomKilled: [worker], output: 'Traceback ...\nValueError: bad\n' }));
  t.is(silent.cause, 'unknown');
  t.regex(
    silent.evidence[1]!,
    /^meanwhile pid 24553 \(python3\) was killed by the kernel OOM killer in cgroup \/audit/,
  );
  // Passed on as 137 by a shell: the kill is the cause; with the host out of memory, host-oom-kill.
  t.is(diagnose(run({ exit: { code: 137, signal: null }, oomKilled: [worker] })).cause, 'cgroup-oom-kill');
  const hostKill = { ...worker, cgroup: '', cgroupLimit: false };
  t.is(diagnose(run({ oomKilled: [hostKill], output })).cause, 'host-oom-kill');
  // The pool's words name no pid; a kill the run's own cgroup counted (kernel log unread) is enough.
  const pool = 'concurrent.futures.process.BrokenProcessPool: A process in the process pool was terminated abruptly';
  const counted = diagnose(
    run({ output: pool, cgroup: { path: '/run', limit: 300 * MiB, oomKills: 1 }, kernelLog: 'not readable' }),
  );
  t.is(counted.cause, 'cgroup-oom-kill');
});

test("a pids cgroup's refusals during the run are said, even when no tracked call saw them", (t) => {
  const tasks = { cgroup: '/job', limit: 40, limitedAt: '/job', refused: 2 };
  const d = diagnose(run({ tasks }));
  t.deepEqual(d, {
    cause: 'not-memory',
    evidence: [
      'exited with code 1; no allocation failed for lack of memory',
      'the pids cgroup /job refused 2 new process(es) or thread(s) during the run (pids.events), at the limit of 40 tasks (pids.max)',
    ],
  });
  // A thread refused by it is that limit, not memory; set by a parent group, the group is named.
  const thread = failure({ fn: 'pthread_create', size: 8 * MiB, errno: 11, vmSize: 1.2 * GiB });
  const byParent = { ...tasks, cgroup: '/job/step', refused: 1 };
  t.deepEqual(explainFailure(thread, {}, undefined, byParent), {
    cause: 'not-memory',
    evidence: [
      'pthread_create of a thread with a 8.0 MiB stack failed with EAGAIN: the pids cgroup /job/step refused 1 new process(es) or thread(s) during the run (pids.events), at the limit of 40 tasks (pids.max of /job); a limit on processes and threads, not memory',
    ],
  });
});

test('a failed write into /dev/shm: shared-memory when seen full, unknown when not, and a silent SIGBUS only when full', (t) => {
  const output =
    'ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm).\n';
  const full = { size: 32 * MiB, usedAtStart: 0, peakUsed: 33280000, readEveryMs: 5 };
  t.deepEqual(diagnose(run({ output, sharedMemory: full })), {
    cause: 'shared-memory',
    evidence: [
      'exited with code 1 after a write into shared memory failed, as its output says: "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm)."',
      '/dev/shm, the shared memory file system (a tmpfs), holds 32 MiB; its use peaked at 32 MiB during the run (read every 5 ms; 0 B at the start): full',
      'a write into shared memory past what that file system holds kills the writer with SIGBUS, or is refused (ENOSPC)',
    ],
  });
  const halfway = diagnose(run({ output, sharedMemory: { ...full, peakUsed: 16 * MiB } }));
  t.is(halfway.cause, 'unknown');
  t.regex(halfway.evidence[2]!, /^missing: \/dev\/shm's use at the moment the write failed/);
  t.is(diagnose(run({ output, sharedMemory: null })).cause, 'unknown');
  const bus = { code: null, signal: 'SIGBUS' };
  t.is(diagnose(run({ exit: bus, sharedMemory: full })).cause, 'shared-memory');
  t.is(diagnose(run({ exit: bus, sharedMemory: { ...full, peakUsed: 0 } })).cause, 'not-memory');
});

test('mremap growing in place without MREMAP_MAYMOVE: not memory, unless a limit refused the growth', (t) => {
  const inPlace = failure({ fn: 'mremap', size: 2 * MiB, oldSize: 1 * MiB, flags: 0, vmSize: 100 * MiB });
  t.deepEqual(explainFailure(inPlace, {}), {
    cause: 'not-memory',
    evidence: [
      'mremap of 2097152 bytes (2.0 MiB) failed with ENOMEM: without MREMAP_MAYMOVE a mapping can only grow in place, and the address space right after it is in use (not a memory shortage)',
    ],
  });
  t.is(explainFailure(inPlace, { as: 101 * MiB })?.cause, 'address-space');
  t.is(explainFailure({ ...inPlace, flags: 1 }, {}), undefined, 'free to move: nothing known refused it');
});

test('mprotect of a range with nothing mapped at its start (flags 0 from /proc/self/maps): not memory', (t) => {
  const unmapped = failure({ fn: 'mprotect', size: 4096, prot: 3, flags: 0, fd: -1, vmData: 40 * MiB });
  t.deepEqual(explainFailure(unmapped, { data: 40 * MiB }), {
    cause: 'not-memory',
    evidence: [
      'mprotect making 4096 bytes (4.0 KiB) of an address range read-write failed with ENOMEM: nothing is mapped at its start (not a memory shortage)',
    ],
  });
});

test("the kernel log unreadable: a kill counted by a cgroup someone else made is that cgroup's, never the host's", (t) => {
  const memoryCgroups = [{ path: '/docker/abc', limit: 400 * MiB, oomKills: 1 }];
  const kernelLog = 'the kernel log /dev/kmsg could not be read (EPERM (operation not permitted))';
  const killed = { code: null, signal: 'SIGKILL' };
  const d = diagnose(run({ exit: killed, memoryCgroups, kernelLog, hostOomKills: 1 }));
  t.is(d.cause, 'cgroup-oom-kill');
  t.deepEqual(d.evidence, [
    'killed by SIGKILL in the memory cgroup /docker/abc (made outside clip-mem, limit 400 MiB), which counted 1 OOM kill(s) during the run (memory.oom_control or memory.events)',
    `which process was killed is not confirmed: ${kernelLog}`,
  ]);
  // Nothing counted there: the host-wide counter alone stays "possibly".
  const none = [{ ...memoryCgroups[0]!, oomKills: 0 }];
  t.is(diagnose(run({ exit: killed, memoryCgroups: none, kernelLog, hostOomKills: 1 })).cause, 'unknown');
  // The kernel log readable and naming no kill of this run: the cgroup's count is another process's.
  t.is(diagnose(run({ exit: killed, memoryCgroups, oomKilled: [], hostOomKills: 1 })).cause, 'not-memory');
  // Exited non-zero meanwhile, saying nothing of a worker: unknown, the kill said.
  const exited = diagnose(run({ memoryCgroups, kernelLog, output: 'ValueError: bad' }));
  t.is(exited.cause, 'unknown');
  t.regex(
    exited.evidence[1]!,
    /^meanwhile a process was killed by the kernel OOM killer in the memory cgroup \/docker\/abc/,
  );
});

test('the program says memory was refused, and no tracked call was: unknown, never not-memory', (t) => {
  const d = diagnose(run({ output: 'Traceback (most recent call last):\n  ...\nMemoryError\n' }));
  t.is(d.cause, 'unknown');
  t.is(
    d.evidence[0],
    'exited with code 1; its output says memory was refused ("MemoryError"), but no tracked call was',
  );
  t.regex(d.evidence[2]!, /^missing: the refused call/);
  const errno = diagnose(run({ output: 'OSError: [Errno 12] Cannot allocate memory\n' }));
  t.is(errno.cause, 'unknown');
  // Without such words the ending is not memory's.
  t.is(diagnose(run({ output: 'ValueError: bad shape\n' })).cause, 'not-memory');
});

test('killed by a signal from another process while a user-space OOM killer runs: unknown, naming it', (t) => {
  const killers = userspaceOomKillers(path.join(fixtures, 'host', 'proc-with-earlyoom'));
  t.deepEqual(killers, [{ pid: 812, name: 'earlyoom' }]);
  const d = diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, hostOomKills: 0, userspaceOomKillers: killers }));
  t.deepEqual(d, {
    cause: 'unknown',
    evidence: [
      'killed by SIGKILL: a signal from another process, and the kernel counted no OOM kill of it; why is not known',
      "earlyoom (pid 812) runs here: a user-space OOM killer, which kills by SIGTERM or SIGKILL when memory runs low, unseen by the kernel's OOM counters and log",
      "missing: who sent the signal; earlyoom's own log says whether it did (journalctl -u earlyoom)",
    ],
  });
  t.is(diagnose(run({ exit: { code: null, signal: 'SIGTERM' }, userspaceOomKillers: killers })).cause, 'unknown');
  // None runs: the kernel's silence is the answer.
  t.is(
    diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, hostOomKills: 0, userspaceOomKillers: [] })).cause,
    'not-memory',
  );
  // A non-zero exit of its own is not a kill.
  t.is(diagnose(run({ userspaceOomKillers: killers })).cause, 'not-memory');
  // clip-mem's own kill at the timeout is clip-mem's.
  t.is(
    diagnose(run({ exit: { code: null, signal: 'SIGKILL' }, timeoutMs: 1000, userspaceOomKillers: killers })).cause,
    'not-memory',
  );
});
