// Creating the child's memory cgroup: cgroup v2 on a sample tree (files stand in for the kernel's),
// stale groups of dead runs removed. The v1 path runs for real in track-trace.test.ts.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createChildCgroup, removeStaleCgroups } from '../src/track/cgroup';
import { scratchDir } from './helpers/scratch';

function v2Tree(): { own: string; sources: { root: string; procSelfCgroup: string; mountinfo: string } } {
  const root = scratchDir('clipmem-cgroup-v2-');
  const own = path.join(root, 'sys/fs/cgroup/user.slice/job-7');
  fs.mkdirSync(own, { recursive: true });
  fs.writeFileSync(path.join(root, 'sys/fs/cgroup/cgroup.controllers'), 'cpu io memory pids\n');
  fs.writeFileSync(path.join(own, 'cgroup.subtree_control'), 'cpu\n');
  fs.writeFileSync(path.join(root, 'cgroup'), '0::/user.slice/job-7\n');
  fs.writeFileSync(
    path.join(root, 'mountinfo'),
    '35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n',
  );
  return { own, sources: { root, procSelfCgroup: path.join(root, 'cgroup'), mountinfo: path.join(root, 'mountinfo') } };
}

test('cgroup v2: a group under our own, memory enabled for children, memory.max set', (t) => {
  const { own, sources } = v2Tree();
  const group = createChildCgroup(300 * 2 ** 20, sources);
  t.is(group.version, 2);
  t.regex(group.path, new RegExp(`^/user\\.slice/job-7/clipmem-${process.pid}-\\d+$`));
  t.is(path.dirname(group.directory), own);
  t.is(group.procsFile, path.join(group.directory, 'cgroup.procs'));
  t.is(fs.readFileSync(path.join(group.directory, 'memory.max'), 'utf8'), '314572800\n');
  t.is(fs.readFileSync(path.join(own, 'cgroup.subtree_control'), 'utf8'), '+memory\n');
});

test('groups of runs whose process is gone are removed; live ones stay', (t) => {
  const parent = scratchDir('clipmem-stale-');
  const deadPid = 2 ** 22 + 1; // above pid_max: never alive
  fs.mkdirSync(path.join(parent, `clipmem-${deadPid}-1`));
  fs.mkdirSync(path.join(parent, `clipmem-${process.pid}-9`));
  fs.mkdirSync(path.join(parent, 'someone-else'));
  t.deepEqual(removeStaleCgroups(parent), [path.join(parent, `clipmem-${deadPid}-1`)]);
  t.deepEqual(fs.readdirSync(parent).sort(), [`clipmem-${process.pid}-9`, 'someone-else']);
});
