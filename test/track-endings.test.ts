// How a traced command ended, told truthfully, on real processes (issue 10): the main process's own ending
// first, another process's OOM kill as "meanwhile", untracked runs as `unknown`, a recovery as recovered,
// peaks at least every sample, and signals to clip-mem or a daemon leaving nothing behind.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceReport } from '../src/report/trace-report';
import { allocProgram } from './helpers/trace';
import { poolWithWorkerTouching } from './helpers/python-jobs';
import { repoRoot } from './helpers/paths';
import { requireProgram } from './helpers/require-program';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';
import { createChildCgroup, removeCgroup } from '../src/track/cgroup';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const cgroupMount = '/sys/fs/cgroup/memory';
const python = '/usr/bin/python3';
const MiB = 2 ** 20;
/** Touches 200 MiB page by page: RSS grows with no allocation call, as a tensor being filled does. */
const touch200 = 'b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1';

interface Traced {
  status: number | null;
  report: TraceReport;
  stderr: string;
}

function checked(json: string): TraceReport {
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  const errors = schemaErrors('trace', report);
  if (errors) throw new Error(`trace --json breaks schema/trace.schema.json: ${errors}`);
  return report;
}

function traceWith(options: string[], command: string[], env: NodeJS.ProcessEnv = {}): Traced {
  const json = path.join(scratchDir('clipmem-endings-'), 'trace.json');
  const result = spawnSync(process.execPath, [bin, 'trace', ...options, '--json', json, '--', ...command], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 120000,
    env: { ...process.env, ...env },
  });
  return { status: result.status, report: checked(json), stderr: result.stderr };
}

/** The headline's ending: what follows "(pid N)" on the report's first line (the command may span lines). */
function headline(stderr: string): string {
  const report = stderr.slice(stderr.lastIndexOf('clip-mem trace: '));
  return /\(pid \d+\) (.*)$/m.exec(report)?.[1] ?? '';
}

/** Names the victim as the kernel log does, or says the log was not readable (then it cannot). */
function otherVictim(t: ExecutionContext, report: TraceReport, comm: string): void {
  if (report.kernelLog !== undefined) {
    t.log(`kernel log unreadable: ${report.kernelLog}`);
    t.true(report.diagnosis.evidence.some((e) => e.includes('another process in its group')));
    return;
  }
  const victim = report.oomKilled.find((v) => v.comm === comm);
  t.truthy(victim, JSON.stringify(report.oomKilled));
  t.false(victim!.main);
  t.not(victim!.pid, report.pid);
  t.true(victim!.rss! > 40 * 2 ** 20, 'the kernel logged its RSS at the kill');
  t.true(report.diagnosis.evidence.some((e) => e.includes(`pid ${victim!.pid} (${comm}`)));
}

test('a shell that exits 3 after its child is OOM-killed: "exited with code 3", the child named, cause unknown', (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const { status, report, stderr } = traceWith(
    ['--limit-mem', '50M'],
    ['bash', '-c', `python3 -c '${touch200}'; exit 3`],
  );
  t.is(status, 3);
  t.deepEqual(report.exit, { code: 3, signal: null });
  t.is(report.cgroup!.oomKills, 1);
  t.regex(report.ending, /^exited with code 3 after \d+\.\d s$/);
  t.regex(headline(stderr), /^exited with code 3 after/);
  t.notRegex(headline(stderr), /OOM/);
  t.not(report.diagnosis.cause, 'cgroup-oom-kill');
  t.is(report.diagnosis.cause, 'unknown');
  t.is(
    report.diagnosis.evidence[0],
    'exited with code 3, and another process in its cgroup was OOM-killed during the run; no allocation of its own failed for lack of memory',
  );
  t.true(
    report.diagnosis.evidence.some((e) =>
      /^meanwhile .* killed by the kernel OOM killer in cgroup \/.*clipmem-\d+-\d+ at limit 50 MiB/.test(e),
    ),
  );
  t.true(report.diagnosis.evidence.some((e) => e.startsWith('whether the command exited with code 3 because')));
  otherVictim(t, report, 'python3');
});

test("a shell that passes its OOM-killed child's 137 on: cgroup-oom-kill, the child named as the one killed", (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const { status, report } = traceWith(['--limit-mem', '50M'], ['bash', '-c', `python3 -c '${touch200}'; exit $?`]);
  t.is(status, 137);
  t.deepEqual(report.exit, { code: 137, signal: null });
  t.regex(report.ending, /^exited with code 137 after/);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill');
  t.true(report.diagnosis.evidence.some((e) => e.startsWith('the command exited with code 137 (128 + SIGKILL)')));
  otherVictim(t, report, 'python3');
});

test('the process itself OOM-killed: named by the kernel log, and its peaks are peaks', (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const { status, report, stderr } = traceWith(['--limit-mem', '50M'], ['python3', '-c', touch200]);
  t.is(status, 137);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill');
  t.regex(report.ending, /^killed by the kernel OOM killer in cgroup .* at limit 50 MiB after/);
  t.regex(headline(stderr), /^killed by the kernel OOM killer in cgroup/);
  if (report.kernelLog === undefined) {
    t.true(report.oomKilled.some((v) => v.main === true && v.pid === report.pid));
    t.true(report.diagnosis.evidence.some((e) => e.startsWith(`the kernel log names it: pid ${report.pid} (python3`)));
  }
  // Every peak at least every sample and the last value: a killed process never read its VmHWM.
  const p = report.peaks;
  t.true(p.rss! >= report.last!.rss!, `peak RSS ${p.rss} < last ${report.last!.rss}`);
  t.true(p.rss! > 20 * 2 ** 20, `peak RSS ${p.rss}`);
  t.true(p.heap! >= report.last!.heap && p.anon! >= report.last!.anon && p.file! >= report.last!.file);
  for (const s of report.timeline) {
    t.true(p.rss! >= s.rss && p.vmSize! >= s.vmSize && p.heap! >= s.heap && p.anon! >= s.anon && p.file! >= s.file);
  }
});

/**
 * Runs `clip-mem trace` inside a memory cgroup the test makes around it, as a scheduler or a container
 * runtime would (under the test's own group, removed afterwards).
 */
function traceInsideCgroup(limit: number, command: string[], unprivileged = false): Traced {
  const outer = createChildCgroup(limit);
  try {
    const dir = scratchDir('clipmem-endings-');
    // As nobody, as in an unprivileged container: the kernel log is unreadable, the cgroup's files are not.
    if (unprivileged) fs.chmodSync(dir, 0o777);
    const json = path.join(dir, 'trace.json');
    const enter = unprivileged
      ? 'echo $$ > "$0"; exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"'
      : 'echo $$ > "$0"; exec "$@"';
    const result = spawnSync(
      'sh',
      ['-c', enter, outer.procsFile, process.execPath, bin, 'trace', '--json', json, '--', ...command],
      { cwd: repoRoot, encoding: 'utf8', timeout: 120000 },
    );
    return { status: result.status, report: checked(json), stderr: result.stderr };
  } finally {
    removeCgroup(outer.directory);
  }
}

test("inside a memory cgroup someone else made (a scheduler's stand-in): its OOM kill named with its path, never the host's", (t) => {
  requireProgram(t, python, 'apt-get install python3');
  const { status, report } = traceInsideCgroup(250 * MiB, [python, '-c', touch200.replace('200 << 20', '400 << 20')]);
  t.is(status, 137);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill');
  if (report.kernelLog !== undefined) return t.log(`kernel log unreadable: ${report.kernelLog}`);
  t.regex(
    report.diagnosis.evidence[0]!,
    /^killed by the kernel OOM killer in cgroup \/.*clipmem-\d+-\d+ \(a memory cgroup this run did not make\)$/,
  );
});

/** A pool whose second worker touches 400 MiB: the worker is killed, and the pool says so (BrokenProcessPool). */
const poolScript = poolWithWorkerTouching(400);

// nobody must be able to run clip-mem from where this checkout is (not under a 0700 home directory).
const nobodyRunsClipMem =
  spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, bin, '--version'])
    .status === 0;
(nobodyRunsClipMem ? test : test.skip)(
  "an unprivileged run in a cgroup someone else made, kernel log unreadable: the cgroup's own count names the kill" +
    (nobodyRunsClipMem ? '' : ' (skipped: setpriv cannot run clip-mem as nobody from this checkout)'),
  (t) => {
    requireProgram(t, python, 'apt-get install python3');
    const own = traceInsideCgroup(250 * MiB, [python, '-c', touch200.replace('200 << 20', '400 << 20')], true);
    t.is(own.status, 137);
    t.regex(own.report.kernelLog!, /^the kernel log \/dev\/kmsg could not be read/);
    t.is(own.report.diagnosis.cause, 'cgroup-oom-kill', own.report.diagnosis.evidence.join('\n'));
    t.regex(
      own.report.diagnosis.evidence[0]!,
      /^killed by SIGKILL in the memory cgroup \/.*clipmem-\d+-\d+ \(made outside clip-mem, limit 250 MiB\), which counted 1 OOM kill\(s\) during the run/,
    );
    t.is(own.report.fix!.needAtLeast, 250 * MiB + 1);
    const group = own.report.memoryCgroups.find((g) => g.limit === 250 * MiB)!;
    t.is(group.oomKills, 1);

    const worker = traceInsideCgroup(250 * MiB, [python, '-c', poolScript], true);
    t.is(worker.status, 1);
    t.is(worker.report.diagnosis.cause, 'cgroup-oom-kill', worker.report.diagnosis.evidence.join('\n'));
    t.regex(
      worker.report.diagnosis.evidence[1]!,
      /^a process was killed by the kernel OOM killer in the memory cgroup .* which one is not known/,
    );
  },
);

test("a pool worker OOM-killed in a cgroup someone else made, the pool saying so: cgroup-oom-kill, from the program's own words", (t) => {
  requireProgram(t, python, 'apt-get install python3');
  const { status, report } = traceInsideCgroup(250 * MiB, [python, '-c', poolScript]);
  t.is(status, 1);
  if (report.kernelLog !== undefined) return t.log(`kernel log unreadable: ${report.kernelLog}`);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill', report.diagnosis.evidence.join('\n'));
  t.regex(
    report.diagnosis.evidence[0]!,
    /^exited with code 1 because a process it started was killed, as its output says: "concurrent\.futures\.process\.BrokenProcessPool: A process in the process pool was terminated abruptly/,
  );
  t.regex(
    report.diagnosis.evidence[1]!,
    /^pid \d+ \(python3, .*\) was killed by the kernel OOM killer in cgroup \/.*clipmem-\d+-\d+ \(a memory cgroup this run did not make\)/,
  );
  // The group's limit, read where clip-mem ran, is in the fix.
  t.is(report.fix!.needAtLeast, 250 * MiB + 1);
  t.regex(
    report.fix!.text,
    /^the memory cgroup \/.*clipmem-\d+-\d+, made outside clip-mem .* to 250 MiB of RSS \+ page cache/,
  );
});

test("a PyTorch DataLoader worker OOM-killed in the run's cgroup: cgroup-oom-kill, the worker's pid in the parent's error", (t) => {
  requireProgram(t, python, 'apt-get install python3-torch');
  const torch = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
  if (torch.status !== 0) return t.fail(`PyTorch is needed (Debian: apt-get install python3-torch): ${torch.stderr}`);
  const script = [
    'import torch',
    'from torch.utils.data import DataLoader, Dataset',
    'class Big(Dataset):',
    '    def __len__(self): return 2',
    '    def __getitem__(self, i):',
    '        b = bytearray(400 << 20)',
    '        for j in range(0, len(b), 4096): b[j] = 1',
    '        return torch.zeros(1)',
    'for batch in DataLoader(Big(), num_workers=1): pass',
  ].join('\n');
  const { status, report } = traceWith(['--limit-mem', '300M'], [python, '-c', script]);
  t.is(status, 1);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill', report.diagnosis.evidence.join('\n'));
  const worker = /DataLoader worker \(pid (\d+)\) is killed by signal: Killed/.exec(report.diagnosis.evidence[0]!);
  t.truthy(worker, report.diagnosis.evidence[0]);
  if (report.kernelLog === undefined) t.true(report.oomKilled.some((v) => v.pid === Number(worker![1])));
  t.true(
    report.diagnosis.evidence.some((e) => /killed by the kernel OOM killer in cgroup .* at limit 300 MiB/.test(e)),
  );
});

test('a write into a full /dev/shm kills the writer with SIGBUS: shared-memory, with the tmpfs seen full', (t) => {
  requireProgram(t, python, 'apt-get install python3');
  requireProgram(t, 'unshare', 'apt-get install util-linux');
  // A 32 MiB /dev/shm of its own, in a mount namespace, as a container has; the 64 MiB file stays there.
  const json = path.join(scratchDir('clipmem-endings-'), 'trace.json');
  const write = [
    'import mmap, os',
    "fd = os.open('/dev/shm/clipmem-test', os.O_CREAT | os.O_RDWR)",
    'os.ftruncate(fd, 64 << 20)',
    'm = mmap.mmap(fd, 64 << 20)',
    'for i in range(0, 64 << 20, 4096): m[i] = 1',
  ].join('\n');
  const inside = 'mount -t tmpfs -o size=32M tmpfs /dev/shm && exec "$@"';
  const result = spawnSync(
    'unshare',
    ['-m', 'sh', '-c', inside, 'sh', process.execPath, bin, 'trace', '--json', json, '--', python, '-c', write],
    { cwd: repoRoot, encoding: 'utf8', timeout: 120000 },
  );
  if (!fs.existsSync(json)) return t.fail(`unshare -m and mount are needed (root): ${result.stderr}`);
  const report = checked(json);
  t.deepEqual(report.exit, { code: null, signal: 'SIGBUS' });
  t.is(report.diagnosis.cause, 'shared-memory', report.diagnosis.evidence.join('\n'));
  t.is(
    report.diagnosis.evidence[0],
    'killed by SIGBUS, as a process writing into a shared mapping is when the file system behind it is full',
  );
  t.regex(
    report.diagnosis.evidence[1]!,
    /^\/dev\/shm, the shared memory file system \(a tmpfs\), holds 32 MiB; its use peaked at 32 MiB during the run \(read every 5 ms; .* at the start\): full$/,
  );
  t.like(report.sharedMemory, { size: 32 * MiB, readEveryMs: 5 });
  t.regex(report.fix!.text, /^\/dev\/shm holds 32 MiB: give it more room \(docker run --shm-size=2g/);
});

test("a program's own kill -9 while the OOM killer kills a process elsewhere on the host: not an OOM kill of it", async (t) => {
  requireProgram(t, python, 'apt-get install python3');
  // Elsewhere: a process outside the run, OOM-killed in a 50 MiB cgroup while the traced shell sleeps.
  const elsewhere = createChildCgroup(50 * MiB);
  try {
    const dir = scratchDir('clipmem-endings-');
    const json = path.join(dir, 'trace.json');
    const started = path.join(dir, 'started');
    const victimDone = path.join(dir, 'victim-done');
    // The kill elsewhere falls inside the run: once the command runs clip-mem has read the counter, and the
    // command kills itself only after the victim is gone.
    const traced = spawn(
      process.execPath,
      [
        bin,
        'trace',
        '--json',
        json,
        '--',
        'sh',
        '-c',
        'touch "$0"; while [ ! -e "$1" ]; do sleep 0.1; done; kill -9 $$',
        started,
        victimDone,
      ],
      { cwd: repoRoot, stdio: 'ignore' },
    );
    while (!fs.existsSync(started)) await new Promise((resolve) => setTimeout(resolve, 50));
    const victim = spawnSync('sh', ['-c', 'echo $$ > "$0"; exec "$@"', elsewhere.procsFile, python, '-c', touch200]);
    t.is(victim.signal, 'SIGKILL', 'the process elsewhere was OOM-killed');
    fs.writeFileSync(victimDone, '');
    await new Promise((resolve) => traced.once('exit', resolve));
    const report = checked(json);
    t.is(report.exit.signal, 'SIGKILL');
    t.true(report.hostOomKills! >= 1, `host counter rose by ${report.hostOomKills}`);
    if (report.kernelLog !== undefined) {
      t.is(report.diagnosis.cause, 'unknown');
      t.regex(report.diagnosis.evidence[0]!, /^killed by SIGKILL, possibly by the host's OOM killer/);
      return;
    }
    t.is(report.diagnosis.cause, 'not-memory');
    t.regex(
      report.diagnosis.evidence[0]!,
      /^killed by SIGKILL, but not by the OOM killer: the kernel log names no OOM kill of it, so another process sent the signal/,
    );
  } finally {
    removeCgroup(elsewhere.directory);
  }
});

test('a timed-out run: "timed out after 1 s, killed by clip-mem"', (t) => {
  const { status, report, stderr } = traceWith(['--timeout', '1'], ['sleep', '30']);
  t.is(status, 137);
  t.true(report.timedOut);
  t.is(report.timeoutMs, 1000);
  t.is(report.ending, 'timed out after 1 s, killed by clip-mem');
  t.is(headline(stderr), 'timed out after 1 s, killed by clip-mem');
  t.is(report.diagnosis.evidence[0], 'killed with its process group after the 1 s timeout');
});

test('a static binary is untracked: cause unknown, with what is missing', (t) => {
  const { status, report } = traceWith([], ['/sbin/ldconfig', '-p']);
  t.is(status, 0);
  t.false(report.tracked);
  t.is(report.diagnosis.cause, 'unknown');
  t.is(report.diagnosis.evidence[0], 'exited with code 0, but whether any allocation failed is not known');
  t.true(report.diagnosis.evidence.includes(report.notTracked!));
  t.true(report.diagnosis.evidence.some((e) => e.startsWith('missing: the allocation record')));
});

test("a program that exec's an untracked one, which runs out of address space: cause unknown, never not-memory", (t) => {
  // env is tracked, then execs python with LD_PRELOAD cleared: python's MemoryError is not in any record.
  const { status, report } = traceWith(
    ['--limit-as', `${300 * MiB}`],
    ['sh', '-c', 'exec env -u LD_PRELOAD "$0" -c "b = bytearray(400 << 20)"', python],
  );
  t.is(status, 1);
  t.truthy(report.lostTrack);
  t.is(report.diagnosis.cause, 'unknown');
  t.is(
    report.diagnosis.evidence[0],
    "exited with code 1; why is not known: the program it exec'd was not tracked, and no allocation failed before",
  );
  t.true(report.diagnosis.evidence.includes(report.lostTrack!));
  t.true(report.diagnosis.evidence.some((e) => e.startsWith("missing: the allocations of the program it exec'd")));
});

test("a multiprocessing pool re-raising a worker's MemoryError: the worker's refusal names the limit", (t) => {
  const pool =
    'import multiprocessing as mp\n' +
    'def work(n): return len(bytearray(n << 20))\n' +
    "if __name__ == '__main__':\n" +
    '    with mp.Pool(2) as pool: print(pool.map(work, [10, 400]))';
  const { status, report } = traceWith(['--limit-as', `${350 * MiB}`], [python, '-c', pool]);
  t.is(status, 1);
  t.is(report.diagnosis.cause, 'address-space');
  t.regex(
    report.diagnosis.evidence[0]!,
    /^exited with code 1 after Python's MemoryError, and pid \d+ \(.*python3.*\), a process it started, had an allocation refused$/,
  );
  t.regex(report.diagnosis.evidence[1]!, /\+ 400 MiB > RLIMIT_AS 350 MiB: /);
  t.regex(report.fix!.command!, /^clip-mem fit --for as -- /);
});

test('a command that exits non-zero after a process it started went untracked: unknown, never not-memory', (t) => {
  // sh forks env (tracked), which execs python with LD_PRELOAD cleared; sh then exits 1 on its own.
  const { status, report } = traceWith(
    [],
    ['sh', '-c', 'env -u LD_PRELOAD "$0" -c "b = bytearray(64 << 20)"; exit 1', python],
  );
  t.is(status, 1);
  t.is(report.diagnosis.cause, 'unknown');
  t.is(
    report.diagnosis.evidence[0],
    'exited with code 1; no tracked process had an allocation refused, but not all that ran was tracked; why is not known',
  );
  t.regex(report.diagnosis.evidence[1]!, /^the record of pid \d+ \(\/usr\/bin\/env\) ends without a clean exit/);
  // All of it tracked: the same ending is not-memory.
  const tracked = traceWith([], ['sh', '-c', '"$0" -c "b = bytearray(64 << 20)"; exit 1', python]);
  t.is(tracked.report.diagnosis.cause, 'not-memory');
});

test('a job script that lowers ulimit -v for the python it starts: address-space in that process, the fix says where the limit is', (t) => {
  const script = (after: string) => [
    'sh',
    '-c',
    `ulimit -v 300000; "$0" -c "b = bytearray(400 << 20)"${after}`,
    python,
  ];
  const passedOn = traceWith([], script(''));
  t.is(passedOn.status, 1);
  t.is(passedOn.report.diagnosis.cause, 'address-space');
  t.regex(
    passedOn.report.diagnosis.evidence[0]!,
    /^exited with code 1, passing on the exit code of pid \d+ \(\/usr\/bin\/python3[.\d]*\), whose allocation was refused$/,
  );
  t.regex(passedOn.report.diagnosis.evidence[1]!, /^pid \d+ .*: VmSize .* \+ 400 MiB > RLIMIT_AS 293 MiB: /);
  // No limit from outside can raise one the script sets: no fit command, the size it needs.
  t.is(passedOn.report.fix!.command, null);
  t.regex(
    passedOn.report.fix!.text,
    /^the command lowers `ulimit -v` itself: pid \d+ .* ran under 293 MiB, the command started under none; /,
  );
  t.true(passedOn.report.fix!.needAtLeast! > 400 * MiB);
  // The script's own exit code, not python's: the refusal is evidence, not proof.
  const ownCode = traceWith([], script('; exit 3'));
  t.is(ownCode.status, 3);
  t.is(ownCode.report.diagnosis.cause, 'unknown');
  t.regex(
    ownCode.report.diagnosis.evidence.at(-1)!,
    /^whether the command exited with code 3 because of it is not known: /,
  );
  // The limit set from outside, inherited: the fit command raises it.
  const outside = traceWith(['--limit-as', `${300 * MiB}`], ['sh', '-c', '"$0" -c "b = bytearray(400 << 20)"', python]);
  t.is(outside.report.diagnosis.cause, 'address-space');
  t.regex(outside.report.fix!.command!, /^clip-mem fit --for as -- /);
});

/** A 64 KiB tmpfs at dir (read-only if asked), unmounted after the test; false when mount is not allowed. */
function smallTmpfs(t: ExecutionContext, dir: string, readOnly: boolean): boolean {
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `${readOnly ? 'ro,' : ''}size=64k`, 'tmpfs', dir]);
  if (mounted.status !== 0) return false;
  t.teardown(() => spawnSync('umount', [dir]));
  return true;
}

test('python lowering its own RLIMIT_AS after it started: address-space under the limit in force at the failure, the fix says the program sets it', (t) => {
  requireProgram(t, python, 'apt-get install python3');
  const script = [
    'import resource',
    'resource.setrlimit(resource.RLIMIT_AS, (300 << 20, 300 << 20))',
    'b = bytearray(400 << 20)',
  ].join('\n');
  const { status, report } = traceWith([], [python, '-c', script]);
  t.is(status, 1);
  t.is(report.diagnosis.cause, 'address-space', report.diagnosis.evidence.join('\n'));
  t.regex(report.diagnosis.evidence[0]!, /^VmSize .* \+ 400 MiB > RLIMIT_AS 300 MiB: malloc of 419430401 bytes/);
  t.is(report.fix!.command, null);
  t.regex(
    report.fix!.text,
    /^the command lowers `ulimit -v` itself: it ran under 300 MiB at the failure, the command started under none; /,
  );
});

test('TMPDIR full: the record cannot be created, the 1 TiB malloc is not "none", cause unknown with the reason', (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const dir = scratchDir('clipmem-full-tmp-');
  if (!smallTmpfs(t, dir, false)) {
    t.log('mount not permitted here: a full TMPDIR cannot be made');
    t.pass();
    return;
  }
  const script = 'try:\n    bytearray(1 << 40)\nexcept MemoryError:\n    print("MemoryError")';
  const { status, report } = traceWith([], ['python3', '-c', script], { TMPDIR: dir });
  t.is(status, 0);
  t.false(report.tracked);
  t.regex(
    report.notTracked!,
    /^no record could be written: the tracker said "cannot size the record .*No space left on device"/,
  );
  t.is(report.diagnosis.cause, 'unknown');
  t.true(report.diagnosis.evidence.includes(report.notTracked!));
  t.deepEqual(fs.readdirSync(dir), [], 'the record directory is removed');
});

test('TMPDIR read-only: the record directory cannot be made, the command still runs, cause unknown', (t) => {
  const dir = scratchDir('clipmem-ro-tmp-');
  let readOnly = smallTmpfs(t, dir, true);
  if (!readOnly && process.getuid?.() !== 0) {
    fs.chmodSync(dir, 0o500); // not writable for a user without CAP_DAC_OVERRIDE
    readOnly = true;
  }
  if (!readOnly) {
    t.log('neither mount nor a non-writable directory binds here');
    t.pass();
    return;
  }
  const { status, report, stderr } = traceWith([], [allocProgram, 'small'], { TMPDIR: dir });
  t.is(status, 0);
  t.regex(report.notTracked!, /^clip-mem could not create its record directory in .* \((EROFS|EACCES)/);
  t.is(report.diagnosis.cause, 'unknown');
  t.regex(stderr, /not tracked: clip-mem could not create its record directory/);
});

test('a program that recovers from refused allocations and exits 0 says so; the cause stays the limit', (t) => {
  const { status, report } = traceWith(['--limit-as', '64M'], [allocProgram, 'probes']);
  t.is(status, 0);
  t.is(report.diagnosis.cause, 'address-space');
  t.true(report.diagnosis.evidence.includes('recovered: 8 allocation(s) failed, exit 0'));
});

test('python catching MemoryError under RLIMIT_AS: address-space, recovered, exit 0', (t) => {
  requireProgram(t, 'python3', 'apt-get install python3');
  const script = 'try:\n    bytearray(1 << 30)\nexcept MemoryError:\n    print("recovered")';
  const { status, report } = traceWith(['--limit-as', '300M'], ['python3', '-c', script]);
  t.is(status, 0);
  t.is(report.diagnosis.cause, 'address-space');
  const failed = report.failures.filter((f) => !f.injected).length;
  t.true(report.diagnosis.evidence.includes(`recovered: ${failed} allocation(s) failed, exit 0`));
});

function leftovers(tmp: string): string[] {
  return fs.readdirSync(tmp).filter((name) => name.startsWith('clipmem-record-'));
}

for (const [signal, number] of [
  ['SIGINT', 2],
  ['SIGTERM', 15],
  ['SIGHUP', 1],
] as const) {
  test(`${signal} to trace: the child's group killed, cgroup and record removed, report written, exit ${128 + number}`, async (t) => {
    const tmp = scratchDir('clipmem-signal-');
    const json = path.join(tmp, 'trace.json');
    const child = spawn(
      process.execPath,
      [bin, 'trace', '--limit-mem', '100M', '--json', json, '--', 'bash', '-c', 'echo ready; sleep 60'],
      { cwd: repoRoot, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (chunk: Buffer) => chunk.includes('ready') && resolve()),
    );
    const status = await new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.kill(signal);
    });
    t.is(status, 128 + number);
    const report = checked(json);
    t.is(report.stoppedBy, signal);
    t.regex(report.ending, new RegExp(`^stopped by ${signal} to clip-mem after .* s, killed by clip-mem$`));
    t.is(report.diagnosis.evidence[0], `stopped by ${signal} to clip-mem: killed with its process group`);
    t.true(report.cgroup!.removed);
    t.false(fs.existsSync(path.join(cgroupMount, report.cgroup!.path)));
    t.deepEqual(leftovers(tmp), []);
    t.throws(() => process.kill(report.pid, 0), undefined, 'the command is gone');
    t.regex(stderr, /diagnosis: /);
  });
}

test('a daemon that outlives the command: the report is printed, the daemon named, the record directory removed', (t) => {
  const tmp = scratchDir('clipmem-daemon-');
  const script = path.join(tmp, 'daemon.sh');
  // The daemon keeps starting processes, each of which would create a record, while trace cleans up.
  fs.writeFileSync(
    script,
    "#!/bin/bash\nsetsid bash -c 'for i in $(seq 1 200); do /bin/true; sleep 0.02; done' > /dev/null 2>&1 < /dev/null &\necho started\n",
    { mode: 0o755 },
  );
  const { status, report, stderr } = traceWith([], [script], { TMPDIR: tmp });
  t.is(status, 0);
  t.is(report.diagnosis.cause, 'none');
  const daemon = report.outlived.find((p) => p.command.startsWith('bash -c for i in'));
  t.truthy(daemon, JSON.stringify(report.outlived));
  t.is(daemon!.exe, '/usr/bin/bash');
  t.is(daemon!.fate, 'still running');
  t.regex(stderr, new RegExp(`outlived the command: pid ${daemon!.pid} \\(/usr/bin/bash\\)`));
  t.is(report.recordDirLeft, undefined);
  t.deepEqual(leftovers(tmp), []);
  try {
    process.kill(daemon!.pid, 'SIGKILL');
  } catch {
    // ended by itself
  }
});

test('a daemon inside --limit-mem: killed with the cgroup, which is removed', (t) => {
  const tmp = scratchDir('clipmem-daemon-cg-');
  const { status, report } = traceWith(
    ['--limit-mem', '100M'],
    ['bash', '-c', 'setsid sleep 60 > /dev/null 2>&1 < /dev/null & echo started'],
    { TMPDIR: tmp },
  );
  t.is(status, 0);
  const daemon = report.outlived.find((p) => p.command === 'sleep 60');
  t.truthy(daemon, JSON.stringify(report.outlived));
  t.is(daemon!.fate, 'killed with the cgroup');
  t.true(report.cgroup!.removed);
  t.deepEqual(leftovers(tmp), []);
});

test('an RLIMIT_AS smaller than the program itself: SIGSEGV at exec, named address-space with the image size', (t) => {
  const { report } = traceWith(['--limit-as', '4096'], ['/bin/true']);
  t.is(report.exit.signal, 'SIGSEGV');
  t.is(report.diagnosis.cause, 'address-space');
  t.regex(
    report.diagnosis.evidence[0]!,
    /^killed by SIGSEGV as it started: RLIMIT_AS 4\.0 KiB is below the \d+ KiB that exec maps/,
  );
});

test('a limit too small for the tracker itself: the program runs untracked, said so, never a cause of its own', (t) => {
  // The smallest limits, up from 1 MiB, where ld.so refuses the tracker's library but /bin/true still runs, and
  // where the tracker loads but cannot map its record: found by trying, as library sizes vary.
  const seen = new Set<string>();
  for (let limit = 1 << 20; limit <= 16 << 20 && seen.size < 2; limit += 256 << 10) {
    const { report, stderr } = traceWith(['--limit-as', String(limit)], ['/bin/true']);
    if (report.exit.code !== 0) continue;
    const kind = /cannot be preloaded/.test(stderr) ? 'library' : /cannot map the record/.test(stderr) ? 'record' : '';
    if (!kind || seen.has(kind)) continue;
    seen.add(kind);
    t.is(report.diagnosis.cause, 'unknown', `${kind} at ${limit}`);
    t.regex(
      report.notTracked ?? '',
      kind === 'library'
        ? /could not load clip-mem's tracker .* under RLIMIT_AS .*: the limit leaves too little even for the tracker's library/
        : /under RLIMIT_AS .* there was no room for the tracker's \d\.\d MiB record/,
    );
  }
  t.deepEqual([...seen].sort(), ['library', 'record']);
});
