// Memory cgroups for traced children: one group per run, created under the caller's own group (v1 or
// v2), the child joins it before exec (clipmem-exec --cgroup-procs), and it is always removed afterwards.
// Groups left by earlier runs whose creator died are removed on the next run. Reading goes through
// src/probe/cgroup.ts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CgroupSources,
  MemoryCgroup,
  cgroupDirectory,
  parseCgroupMounts,
  parseProcCgroup,
  readCgroupV1,
  readCgroupV2,
} from '../probe/cgroup';
import { describeError } from '../core/field';
import { staleEntries } from './stale';

export interface ChildCgroup {
  version: 1 | 2;
  /** Path inside the hierarchy, e.g. /process_api/abc/clipmem-123-1. */
  path: string;
  directory: string;
  /** The file the child writes itself into. */
  procsFile: string;
  limit: number;
}

const namePattern = /^clipmem-(\d+)-(\d+)$/;
let created = 0;

function ownGroup(sources: CgroupSources): { version: 1 | 2; path: string; directory: string } {
  const root = sources.root ?? '';
  const procFile = sources.procSelfCgroup ?? '/proc/self/cgroup';
  const entries = parseProcCgroup(fs.readFileSync(procFile, 'utf8'));
  const mounts = parseCgroupMounts(fs.readFileSync(sources.mountinfo ?? '/proc/self/mountinfo', 'utf8'));
  const v1Entry = entries.find((entry) => entry.hierarchyId !== 0 && entry.controllers.includes('memory'));
  const v1Mount = mounts.find((mount) => mount.version === 1 && mount.superOptions.includes('memory'));
  if (v1Entry && v1Mount) {
    const directory = cgroupDirectory(v1Mount, v1Entry.path, root);
    if (directory) return { version: 1, path: v1Entry.path, directory };
  }
  const v2Entry = entries.find((entry) => entry.hierarchyId === 0);
  const v2Mount = mounts.find((mount) => mount.version === 2);
  if (v2Entry && v2Mount) {
    const directory = cgroupDirectory(v2Mount, v2Entry.path, root);
    if (directory) return { version: 2, path: v2Entry.path, directory };
  }
  throw new Error(
    `--limit-mem needs a memory cgroup this process can create groups under; ${procFile} and the mounts ` +
      'show none (no cgroup v1 memory hierarchy, no cgroup v2 mount). Use --limit-as / --limit-data instead.',
  );
}

/** Removes a group: kills whatever is still in it, then rmdir (retried while the kernel lets go). */
export function removeCgroup(directory: string): void {
  const deadline = Date.now() + 5000;
  for (;;) {
    for (const name of ['cgroup.procs', 'tasks']) {
      let text = '';
      try {
        text = fs.readFileSync(path.join(directory, name), 'utf8');
      } catch {
        continue;
      }
      for (const pid of text.split('\n').filter(Boolean).map(Number)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    try {
      fs.rmdirSync(directory);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() > deadline) {
        throw new Error(`cannot remove the cgroup ${directory}: ${describeError(error)}; remove it with rmdir`);
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

/** Removes groups from earlier runs whose creating process is gone; returns their directories. */
export function removeStaleCgroups(parentDirectory: string): string[] {
  const removed = staleEntries(parentDirectory, namePattern);
  for (const directory of removed) removeCgroup(directory);
  return removed;
}

function write(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (error) {
    throw new Error(`cannot write "${value.trim()}" to ${file}: ${describeError(error)}`);
  }
}

/**
 * Creates a memory group with hard limit `limit` bytes (swap included where the kernel lets us say so)
 * under this process's own group. The caller must removeCgroup() it when the child is done.
 */
export function createChildCgroup(limit: number, sources: CgroupSources = {}): ChildCgroup {
  const own = ownGroup(sources);
  removeStaleCgroups(own.directory);
  const name = `clipmem-${process.pid}-${++created}`;
  const directory = path.join(own.directory, name);
  try {
    fs.mkdirSync(directory);
  } catch (error) {
    throw new Error(
      `cannot create the cgroup ${directory} for --limit-mem: ${describeError(error)}. ` +
        'The caller needs write access to its own memory cgroup (or use --limit-as / --limit-data).',
    );
  }
  const group: ChildCgroup = {
    version: own.version,
    path: path.posix.join(own.path, name),
    directory,
    procsFile: path.join(directory, 'cgroup.procs'),
    limit,
  };
  try {
    if (own.version === 1) {
      write(path.join(directory, 'memory.limit_in_bytes'), `${limit}\n`);
      // memory+swap no higher than memory: the child is OOM-killed at the limit instead of swapping.
      if (fs.existsSync(path.join(directory, 'memory.memsw.limit_in_bytes'))) {
        write(path.join(directory, 'memory.memsw.limit_in_bytes'), `${limit}\n`);
      }
    } else {
      const controllers = path.join(own.directory, 'cgroup.subtree_control');
      if (fs.existsSync(controllers) && !fs.readFileSync(controllers, 'utf8').split(/\s+/).includes('memory')) {
        write(controllers, '+memory\n');
      }
      write(path.join(directory, 'memory.max'), `${limit}\n`);
      if (fs.existsSync(path.join(directory, 'memory.swap.max'))) write(path.join(directory, 'memory.swap.max'), '0\n');
    }
  } catch (error) {
    removeCgroup(directory);
    throw error;
  }
  return group;
}

/** The group's memory figures (limit, peak, OOM kills) through the probe's reader. */
export function readChildCgroup(group: ChildCgroup): MemoryCgroup {
  return group.version === 1 ? readCgroupV1(group.directory, group.path) : readCgroupV2(group.directory, group.path);
}
