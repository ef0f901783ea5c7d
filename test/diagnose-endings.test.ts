// The diagnosis of how a run ended, on inputs as the launcher builds them: who the OOM killer killed (the
// kernel log's lines, parsed here), kills clip-mem sent, untracked runs, recoveries. The same cases run on
// real processes in track-endings.test.ts.
import test from 'ava';
import { diagnose, type DiagnosisInput, type FailureFacts } from '../src/diagnose';
import { parseOomKills } from '../src/track/kernel-log';

const MiB = 2 ** 20;
const cgroup = { path: '/job/clipmem-1-1', limit: 50 * MiB, oomKills: 1, peak: 50 * MiB };
const worker = { pid: 12, name: 'python3', main: false, rss: 56 * MiB, cgroup: '/job/clipmem-1-1', cgroupLimit: true };

function input(extra: Partial<DiagnosisInput>): DiagnosisInput {
  return { exit: { code: 0, signal: null }, limits: {}, failures: [], ...extra };
}

test('the kernel log: the oom-kill line and the Killed process line make one kill, with its cgroup and RSS', (t) => {
  const kills = parseOomKills([
    'memory: usage 51200kB, limit 51200kB, failcnt 12',
    'oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a/clipmem-9-1,task_memcg=/a/clipmem-9-1,task=python3,pid=4242,uid=0',
    'Memory cgroup out of memory: Killed process 4242 (python3) total-vm:227000kB, anon-rss:51000kB, file-rss:6000kB, shmem-rss:0kB, UID:0 pgtables:200kB oom_score_adj:0',
    'Out of memory: Killed process 77 (big) total-vm:9kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB',
  ]);
  t.deepEqual(kills, [
    {
      pid: 4242,
      comm: 'python3',
      memcg: '/a/clipmem-9-1',
      taskMemcg: '/a/clipmem-9-1',
      rss: 57000 * 1024,
      anonRss: 51000 * 1024,
      cgroupLimit: true,
    },
    { pid: 77, comm: 'big', memcg: '', taskMemcg: '', rss: 4096, anonRss: 4096, cgroupLimit: false },
  ]);
});

test('another process OOM-killed, the command exited 3: unknown, never the command "killed by the OOM killer"', (t) => {
  const d = diagnose(input({ exit: { code: 3, signal: null }, cgroup, oomKilled: [worker] }));
  t.is(d.cause, 'unknown');
  t.is(
    d.evidence[0],
    'exited with code 3, and another process in its cgroup was OOM-killed during the run; no allocation of its own failed for lack of memory',
  );
  t.is(
    d.evidence[1],
    'meanwhile pid 12 (python3) was killed by the kernel OOM killer in cgroup /job/clipmem-1-1 at limit 50 MiB; its RSS was 56 MiB when killed',
  );
  t.false(d.evidence.some((e) => e.startsWith('killed by the kernel OOM killer')));
});

test('exit 137 passed on by a shell: cgroup-oom-kill, the killed child named', (t) => {
  const d = diagnose(input({ exit: { code: 137, signal: null }, cgroup, oomKilled: [worker] }));
  t.is(d.cause, 'cgroup-oom-kill');
  t.regex(d.evidence[0]!, /^pid 12 \(python3\) was killed by the kernel OOM killer in cgroup/);
});

test('exit 0 while another process was OOM-killed: none, with the kill said', (t) => {
  const d = diagnose(input({ cgroup, oomKilled: [worker] }));
  t.is(d.cause, 'none');
  t.true(d.evidence.some((e) => e.startsWith('meanwhile pid 12 (python3) was killed')));
});

test('timed out while a worker was OOM-killed: the timeout first, the kill meanwhile, cause unknown', (t) => {
  const d = diagnose(input({ exit: { code: null, signal: 'SIGKILL' }, cgroup, oomKilled: [worker], timeoutMs: 10000 }));
  t.is(d.cause, 'unknown');
  t.is(d.evidence[0], 'killed with its process group after the 10 s timeout');
  t.true(d.evidence.some((e) => e.startsWith('meanwhile pid 12 (python3)')));
  t.true(d.evidence.some((e) => e.startsWith('whether the command hung because of that kill is not known')));
});

test('the kernel log unreadable: the command SIGKILLed in a cgroup that counted a kill is still cgroup-oom-kill', (t) => {
  const d = diagnose(input({ exit: { code: null, signal: 'SIGKILL' }, cgroup, kernelLog: 'EPERM' }));
  t.is(d.cause, 'cgroup-oom-kill');
  t.is(d.evidence[1], 'which process was killed is not confirmed: EPERM');
});

test('the kernel log unreadable, the command exited 3: the victim is unnamed, the unclean descendants offered', (t) => {
  const d = diagnose(
    input({
      exit: { code: 3, signal: null },
      cgroup,
      kernelLog: 'the kernel log /dev/kmsg could not be read (EPERM)',
      endedUnclean: [{ pid: 12, exe: '/usr/bin/python3' }],
    }),
  );
  t.is(d.cause, 'unknown');
  t.regex(d.evidence[1]!, /^meanwhile another process in its group, possibly pid 12 \(\/usr\/bin\/python3\)/);
});

test('untracked: unknown whatever the exit, with what is missing', (t) => {
  for (const exit of [
    { code: 0, signal: null },
    { code: 2, signal: null },
    { code: null, signal: 'SIGKILL' },
  ]) {
    const d = diagnose(input({ exit, notTracked: '/x is statically linked' }));
    t.is(d.cause, 'unknown');
    t.true(d.evidence.includes('/x is statically linked'));
    t.true(d.evidence.some((e) => e.startsWith('missing: the allocation record')));
  }
});

test('recovered: exit 0 after refusals says so, the cause stays the limit', (t) => {
  const refused: FailureFacts = { fn: 'malloc', size: 256 * MiB, errno: 12, vmSize: 10 * MiB };
  const d = diagnose(input({ limits: { as: 64 * MiB }, failures: [refused, refused] }));
  t.is(d.cause, 'address-space');
  t.is(d.evidence[d.evidence.length - 1], 'recovered: 2 allocation(s) failed, exit 0');
  const unexplained = diagnose(input({ failures: [{ fn: 'malloc', size: 1, errno: 12 }] }));
  t.is(unexplained.cause, 'none');
  t.true(unexplained.evidence.includes('recovered: 1 allocation(s) failed, exit 0'));
});

test('stopped by a signal to clip-mem: said first, the kill is ours', (t) => {
  const d = diagnose(input({ exit: { code: null, signal: 'SIGKILL' }, stoppedBy: 'SIGINT', hostOomKills: 1 }));
  t.is(d.evidence[0], 'stopped by SIGINT to clip-mem: killed with its process group');
  t.not(d.cause, 'host-oom-kill');
});
