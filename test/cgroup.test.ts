import test from 'ava';
import { defaultJobs, jobsRefusal } from '../src/scenarios/jobs';
import * as path from 'node:path';
import {
  cgroupDirectory,
  locateMemoryCgroups,
  parseCgroupMounts,
  parseProcCgroup,
  readCgroups,
  readTaskCgroup,
} from '../src/probe/cgroup';
import { probeJson, runProbe } from '../src/probe/probe';
import { schemaErrors } from './helpers/schema';

const fixtures = path.resolve(__dirname, '..', '..', 'test', 'fixtures');
const sample = (name: string) => ({
  procSelfCgroup: path.join(fixtures, name, 'proc-self-cgroup'),
  mountinfo: path.join(fixtures, name, 'mountinfo'),
  root: path.join(fixtures, name),
});

test('v2: walks up from the own group and names the tightest ancestor', (t) => {
  const report = readCgroups(sample('cgroup-v2'));
  t.deepEqual(report.notes, []);
  t.is(report.hierarchies.length, 1);
  const v2 = report.hierarchies[0]!;
  t.is(v2.version, 2);
  t.is(v2.path, '/slurm/job_42/step_0');
  t.deepEqual(
    v2.groups.map((g) => g.path),
    ['/slurm/job_42/step_0', '/slurm/job_42', '/slurm'],
  );
  const [step, job, slurm] = v2.groups;
  t.is(step!.limit, 1073741824);
  t.is(job!.limit, 734003200);
  t.is(slurm!.limit, 'unlimited');
  t.is(v2.tightest, job!);
  t.is(report.tightest, job!);
  t.like(job, {
    softLimit: 681574400,
    swapLimit: 0,
    usage: 713031680,
    peak: 734003200,
    failcnt: 3,
    oomEvents: 1,
    oomKills: 1,
  });
});

test('v2: a missing file is "unknown: <file>: <why>" and the rest is still read', (t) => {
  const step = readCgroups(sample('cgroup-v2')).hierarchies[0]!.groups[0]!;
  t.regex(step.peak as string, /^unknown: .*step_0\/memory\.peak: ENOENT \(no such file or directory\)$/);
  t.is(step.usage, 704643072);
  t.is(step.oomKills, 1);
});

test('v1 in a container: the mounted group is the top and its limit counts', (t) => {
  const report = readCgroups(sample('cgroup-v1-container'));
  t.is(report.hierarchies.length, 1);
  const v1 = report.hierarchies[0]!;
  t.is(v1.groups.length, 1);
  t.like(v1.groups[0], {
    version: 1,
    path: '/docker/abc123',
    limit: 2147483648,
    softLimit: 'unlimited',
    swapLimit: 4294967296,
    usage: 1073741824,
    peak: 2147483648,
    failcnt: 12,
    oomKills: 2,
  });
  t.regex(v1.groups[0]!.oomEvents as string, /^unknown: cgroup v1 does not count OOM events/);
  t.is(report.tightest, v1.groups[0]!);
  t.deepEqual(report.notes, []);
});

test('unreadable /proc/self/cgroup is a note, not an exception', (t) => {
  const report = readCgroups({ procSelfCgroup: '/nonexistent/cgroup' });
  t.deepEqual(report.hierarchies, []);
  t.is(report.tightest, null);
  t.deepEqual(report.notes, ['unknown: /nonexistent/cgroup: ENOENT (no such file or directory)']);
});

test('parsers: /proc/self/cgroup lines, mountinfo cgroup mounts, directories under a mount root', (t) => {
  t.deepEqual(parseProcCgroup('4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/user.slice\n'), [
    { hierarchyId: 4, controllers: ['memory'], path: '/process_api/x' },
    { hierarchyId: 1, controllers: ['cpu', 'cpuacct'], path: '/' },
    { hierarchyId: 0, controllers: [], path: '/user.slice' },
  ]);
  const mounts = parseCgroupMounts(
    '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n' +
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n' +
      '41 31 0:38 /a\\040b /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n',
  );
  t.deepEqual(mounts, [
    { version: 1, root: '/', mountPoint: '/sys/fs/cgroup/memory', superOptions: ['rw', 'memory'] },
    { version: 2, root: '/a b', mountPoint: '/sys/fs/cgroup/unified', superOptions: ['rw'] },
  ]);
  t.is(cgroupDirectory(mounts[0]!, '/process_api/x'), '/sys/fs/cgroup/memory/process_api/x');
  t.is(cgroupDirectory(mounts[1]!, '/a b/c'), '/sys/fs/cgroup/unified/c');
  t.is(cgroupDirectory(mounts[1]!, '/elsewhere'), undefined);
});

test('this machine: the own memory group is found and read (whatever its limits)', (t) => {
  const report = readCgroups();
  for (const hierarchy of report.hierarchies) {
    t.true(hierarchy.groups.length >= 1);
    t.is(typeof hierarchy.groups[0]!.usage, 'number', JSON.stringify(hierarchy.groups[0]));
  }
  t.pass();
});

test('locateMemoryCgroups: the own group per version with its mount, and why v2 is left out', (t) => {
  const v2 = locateMemoryCgroups(sample('cgroup-v2'));
  t.deepEqual(v2.notes, []);
  t.is(v2.groups.length, 1);
  t.like(v2.groups[0], {
    version: 2,
    path: '/slurm/job_42/step_0',
    directory: path.join(fixtures, 'cgroup-v2', 'sys/fs/cgroup/slurm/job_42/step_0'),
  });
  const none = locateMemoryCgroups({ procSelfCgroup: '/nonexistent/cgroup' });
  t.deepEqual(none, { groups: [], notes: ['unknown: /nonexistent/cgroup: ENOENT (no such file or directory)'] });
});

test('native-probe --json: a value that could not be read is null, with why under its path in `unknowns`', (t) => {
  const report = runProbe({ cgroupSources: sample('cgroup-v2') });
  const json = probeJson(report) as {
    cgroups: { hierarchies: { groups: { path: string; peak: number | null }[] }[] };
    unknowns: Record<string, string>;
  };
  t.is(schemaErrors('native-probe', json), '');
  const groups = json.cgroups.hierarchies[0]!.groups;
  const index = groups.findIndex((g) => g.path.endsWith('step_0'));
  t.is(groups[index]!.peak, null);
  t.regex(json.unknowns[`cgroups.hierarchies.0.groups.${index}.peak`]!, /step_0\/memory\.peak: ENOENT/);
  // The report itself keeps the reading's reason for the terminal.
  t.regex(report.cgroups.hierarchies[0]!.groups[index]!.peak as string, /^unknown: /);
});

test('--jobs above 1 is refused under a cgroup limit, ours or inherited, and allowed otherwise', (t) => {
  t.regex(jobsRefusal({ mem: 2 ** 30 }, null)!, /^under --limit-mem the scenarios run one at a time/);
  t.is(
    jobsRefusal({}, 1500 * 2 ** 20),
    "this runs in a cgroup limited to 1.46 GiB (a Slurm job's --mem, a container's limit): scenarios at once would add up against it, so they run one at a time",
  );
  t.is(jobsRefusal({ as: 2 ** 32 }, null), null);
  t.is(defaultJobs({ mem: 2 ** 30 }), 1);
});

test("v2 pids: the smallest pids.max on the chain, where it is set, and each group's count of refusals", (t) => {
  const group = readTaskCgroup(sample('cgroup-v2'));
  const top = path.join(fixtures, 'cgroup-v2', 'sys', 'fs', 'cgroup');
  t.like(group, { path: '/slurm/job_42/step_0', limit: 64, limitedAt: '/slurm/job_42' });
  t.deepEqual(
    [...group!.refusals],
    [
      [path.join(top, 'slurm', 'job_42', 'step_0'), 0],
      [path.join(top, 'slurm', 'job_42'), 3],
      [path.join(top, 'slurm'), 3],
    ],
  );
  // The v1 container sample has no pids hierarchy mounted: nothing to read.
  t.is(readTaskCgroup(sample('cgroup-v1-container')), null);
});
