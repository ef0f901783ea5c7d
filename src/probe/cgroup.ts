// Reads the memory limits of this process's cgroups, v1 and v2, from /proc/self/cgroup and the cgroup
// file systems listed in /proc/self/mountinfo, walking up from the process's group to the top of the
// mount: a parent's limit binds its children, so the tightest group in the chain is the one that counts.
// Reading only: nothing here creates, changes or removes a cgroup.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Field, Limit, isUnknown, parseCount, parseField, readText, unknown } from '../core/field';

/** One cgroup's memory controller. Field names are version-neutral; each says where it comes from. */
export interface MemoryCgroup {
  version: 1 | 2;
  /** The group's path inside its hierarchy, as /proc/self/cgroup writes it (e.g. "/slurm/uid_1/job_7"). */
  path: string;
  /** Where its files are, e.g. /sys/fs/cgroup/memory/slurm/uid_1/job_7. */
  directory: string;
  /** Hard limit: v1 memory.limit_in_bytes, v2 memory.max. Above it the kernel reclaims, then OOM-kills. */
  limit: Field<Limit>;
  /** v1 memory.soft_limit_in_bytes (reclaim target under pressure), v2 memory.high (throttling point). */
  softLimit: Field<Limit>;
  /** v1 memory.memsw.limit_in_bytes (memory + swap together), v2 memory.swap.max (swap alone). */
  swapLimit: Field<Limit>;
  /** v1 memory.usage_in_bytes, v2 memory.current. */
  usage: Field<number>;
  /** v1 memory.max_usage_in_bytes, v2 memory.peak (kernel >= 5.19). */
  peak: Field<number>;
  /** Times usage hit the limit: v1 memory.failcnt, v2 the "max" count in memory.events. */
  failcnt: Field<number>;
  /** Times the group ran out of memory: v2 "oom" in memory.events; v1 keeps no such count. */
  oomEvents: Field<number>;
  /** Processes the OOM killer killed in the group: "oom_kill" in memory.events (v2) / memory.oom_control (v1). */
  oomKills: Field<number>;
}

/** One mounted hierarchy carrying the memory controller. */
export interface CgroupHierarchy {
  version: 1 | 2;
  mountPoint: string;
  /** This process's group in the hierarchy. */
  path: string;
  /** This process's group first, then each ancestor up to the top of the mount that has limit files. */
  groups: MemoryCgroup[];
  /** The group with the smallest hard limit, or null when none is limited. */
  tightest: MemoryCgroup | null;
}

export interface CgroupReport {
  hierarchies: CgroupHierarchy[];
  /** The group with the smallest hard limit over all hierarchies, or null. */
  tightest: MemoryCgroup | null;
  /** Why a hierarchy is missing or unreadable, e.g. "cgroup v2 ... has no memory controller". */
  notes: string[];
}

/** Where the files live; tests point these at sample trees under test/fixtures. */
export interface CgroupSources {
  procSelfCgroup?: string;
  mountinfo?: string;
  /** Prefixed to every mount point from mountinfo (a fixture tree standing in for /). */
  root?: string;
}

export interface ProcCgroupEntry {
  hierarchyId: number;
  controllers: string[];
  path: string;
}

/** Parses /proc/self/cgroup: "4:memory:/process_api/x" (v1) and "0::/user.slice/x" (v2). */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const entries: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!match) continue;
    entries.push({
      hierarchyId: Number(match[1]),
      controllers: match[2] ? match[2].split(',') : [],
      path: match[3]!,
    });
  }
  return entries;
}

export interface CgroupMount {
  version: 1 | 2;
  /** The directory inside the hierarchy that is mounted (not "/" inside some containers). */
  root: string;
  mountPoint: string;
  superOptions: string[];
}

/** The cgroup and cgroup2 mounts in /proc/self/mountinfo. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    if (!before || !after) continue;
    const fields = before.split(' ');
    const [fsType, , superOptions] = after.split(' ');
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    mounts.push({
      version: fsType === 'cgroup2' ? 2 : 1,
      root: unescapeMountPath(fields[3] ?? '/'),
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      superOptions: (superOptions ?? '').split(','),
    });
  }
  return mounts;
}

function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The sysfs directory of `cgroupPath` under `mount`, or undefined when the mount does not show it. */
export function cgroupDirectory(mount: CgroupMount, cgroupPath: string, root = ''): string | undefined {
  const mountRoot = mount.root === '/' ? '' : mount.root;
  if (mountRoot && cgroupPath !== mountRoot && !cgroupPath.startsWith(`${mountRoot}/`)) return undefined;
  return path.join(root + mount.mountPoint, cgroupPath.slice(mountRoot.length));
}

// v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages); v2 writes "max".
const v1Unlimited = 2 ** 62;

function parseLimit(text: string): Limit | undefined {
  const trimmed = text.trim();
  if (trimmed === 'max') return 'unlimited';
  const count = parseCount(trimmed);
  if (count === undefined) return undefined;
  return count >= v1Unlimited ? 'unlimited' : count;
}

/** "key value" lines (memory.events, memory.oom_control, memory.stat) into a map. */
export function parseKeyValues(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) values.set(key, Number(value));
  }
  return values;
}

function readFile<T>(directory: string, name: string, parse: (text: string) => T | undefined): Field<T> {
  const file = path.join(directory, name);
  return parseField(readText(file), file, parse);
}

function readKey(directory: string, name: string, key: string): Field<number> {
  return readFile(directory, name, (text) => parseKeyValues(text).get(key));
}

/** Reads one v1 memory cgroup directory. */
export function readCgroupV1(directory: string, cgroupPath: string): MemoryCgroup {
  return {
    version: 1,
    path: cgroupPath,
    directory,
    limit: readFile(directory, 'memory.limit_in_bytes', parseLimit),
    softLimit: readFile(directory, 'memory.soft_limit_in_bytes', parseLimit),
    swapLimit: readFile(directory, 'memory.memsw.limit_in_bytes', parseLimit),
    usage: readFile(directory, 'memory.usage_in_bytes', parseCount),
    peak: readFile(directory, 'memory.max_usage_in_bytes', parseCount),
    failcnt: readFile(directory, 'memory.failcnt', parseCount),
    oomEvents: unknown('cgroup v1 does not count OOM events, only OOM kills'),
    oomKills: readKey(directory, 'memory.oom_control', 'oom_kill'),
  };
}

/** Reads one v2 cgroup directory's memory controller. */
export function readCgroupV2(directory: string, cgroupPath: string): MemoryCgroup {
  const events = readFile(directory, 'memory.events', (text) => parseKeyValues(text));
  const event = (key: string): Field<number> =>
    isUnknown(events)
      ? events
      : (events.get(key) ?? unknown(`${path.join(directory, 'memory.events')} has no "${key}"`));
  return {
    version: 2,
    path: cgroupPath,
    directory,
    limit: readFile(directory, 'memory.max', parseLimit),
    softLimit: readFile(directory, 'memory.high', parseLimit),
    swapLimit: readFile(directory, 'memory.swap.max', parseLimit),
    usage: readFile(directory, 'memory.current', parseCount),
    peak: readFile(directory, 'memory.peak', parseCount),
    failcnt: event('max'),
    oomEvents: event('oom'),
    oomKills: event('oom_kill'),
  };
}

/** A memory cgroup with a limit that a run was held by, and the OOM kills it counted during the run (null: not read). */
export interface LimitedGroupKills {
  path: string;
  limit: number;
  oomKills: number | null;
}

/** The same group read again (its counters now). */
export function rereadCgroup(group: MemoryCgroup): MemoryCgroup {
  return (group.version === 1 ? readCgroupV1 : readCgroupV2)(group.directory, group.path);
}

/** The group with the smallest numeric hard limit, or null. */
export function tightestGroup(groups: MemoryCgroup[]): MemoryCgroup | null {
  let best: MemoryCgroup | null = null;
  for (const group of groups) {
    if (typeof group.limit !== 'number') continue;
    if (!best || group.limit < (best.limit as number)) best = group;
  }
  return best;
}

/** A group and each of its ancestors up to the top of the mount (the top included): directory and path. */
function chainToTop(directory: string, groupPath: string, mountTop: string): { directory: string; path: string }[] {
  const top = path.resolve(mountTop);
  const chain = [{ directory, path: groupPath }];
  while (path.resolve(directory) !== top && directory !== path.dirname(directory)) {
    directory = path.dirname(directory);
    groupPath = path.posix.dirname(groupPath);
    chain.push({ directory, path: groupPath });
  }
  return chain;
}

function readHierarchy(own: OwnMemoryCgroup, root: string): CgroupHierarchy {
  const { mount, path: cgroupPath } = own;
  const read = mount.version === 1 ? readCgroupV1 : readCgroupV2;
  const limitFile = mount.version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
  const chain = chainToTop(own.directory, cgroupPath, root + mount.mountPoint);
  const groups = chain
    // The hierarchy's real root has no limit (v2 has no limit files there; v1's cannot be set). The top
    // of a container's mount or cgroup namespace is a real group, with limit files: that one counts.
    .filter(
      (group, i) =>
        i < chain.length - 1 ||
        (fs.existsSync(path.join(group.directory, limitFile)) && !(mount.version === 1 && group.path === '/')),
    )
    .map((group) => read(group.directory, group.path));
  return {
    version: mount.version,
    mountPoint: mount.mountPoint,
    path: cgroupPath,
    groups,
    tightest: tightestGroup(groups),
  };
}

/** This process's group in a hierarchy that has the memory controller. */
export interface OwnMemoryCgroup {
  version: 1 | 2;
  mount: CgroupMount;
  /** The group's path inside the hierarchy. */
  path: string;
  /** Its directory (under `sources.root` when given). */
  directory: string;
}

/**
 * This process's memory cgroups: v1 where a memory hierarchy is mounted, v2 where the memory controller
 * is enabled at the v2 root. `notes` say why a version is missing. (Also where to create child groups.)
 */
export function locateMemoryCgroups(sources: CgroupSources = {}): { groups: OwnMemoryCgroup[]; notes: string[] } {
  const root = sources.root ?? '';
  const procSelfCgroup = sources.procSelfCgroup ?? '/proc/self/cgroup';
  const mountinfoFile = sources.mountinfo ?? '/proc/self/mountinfo';
  const procText = readText(procSelfCgroup);
  const mountText = readText(mountinfoFile);
  if (isUnknown(procText) || isUnknown(mountText)) {
    return { groups: [], notes: [procText, mountText].filter(isUnknown) };
  }
  const entries = parseProcCgroup(procText);
  const mounts = parseCgroupMounts(mountText);
  const groups: OwnMemoryCgroup[] = [];
  const notes: string[] = [];
  const add = (mount: CgroupMount, cgroupPath: string) => {
    const directory = cgroupDirectory(mount, cgroupPath, root);
    if (directory) groups.push({ version: mount.version, mount, path: cgroupPath, directory });
    else
      notes.push(
        `cgroup v${mount.version}: this process's group ${cgroupPath} is outside the mount at ${mount.mountPoint}`,
      );
  };

  const v1Entry = entries.find((entry) => entry.hierarchyId !== 0 && entry.controllers.includes('memory'));
  const v1Mount = mounts.find((mount) => mount.version === 1 && mount.superOptions.includes('memory'));
  if (v1Entry && v1Mount) add(v1Mount, v1Entry.path);
  else if (v1Entry)
    notes.push('cgroup v1: /proc/self/cgroup names a memory group but no memory cgroup file system is mounted');

  const v2Entry = entries.find((entry) => entry.hierarchyId === 0);
  const v2Mount = mounts.find((mount) => mount.version === 2);
  if (v2Entry && v2Mount) {
    const controllers = readText(path.join(root + v2Mount.mountPoint, 'cgroup.controllers'));
    if (isUnknown(controllers)) notes.push(`cgroup v2: ${controllers}`);
    else if (!controllers.split(/\s+/).includes('memory')) {
      notes.push(
        `cgroup v2 at ${v2Mount.mountPoint} has no memory controller (${v1Mount ? 'memory is on cgroup v1' : 'memory is not limited by cgroups'})`,
      );
    } else add(v2Mount, v2Entry.path);
  }
  if (!v1Entry && !v2Entry) notes.push(`${procSelfCgroup} lists no cgroup with a memory controller`);
  return { groups, notes };
}

/** Every memory cgroup hierarchy this process is in, with the limits along each chain. */
export function readCgroups(sources: CgroupSources = {}): CgroupReport {
  const { groups, notes } = locateMemoryCgroups(sources);
  const hierarchies = groups.map((own) => readHierarchy(own, sources.root ?? ''));
  const tightest = tightestGroup(hierarchies.map((h) => h.tightest).filter((g): g is MemoryCgroup => g !== null));
  return { hierarchies, tightest, notes };
}

/**
 * The memory limit of the tightest cgroup this process is in (a Slurm job's --mem, a container's limit),
 * in bytes; null when no group limits memory or it cannot be read. Every child shares it.
 */
export function inheritedMemoryLimit(sources: CgroupSources = {}): number | null {
  const limit = readCgroups(sources).tightest?.limit;
  return limit === undefined || isUnknown(limit) || limit === 'unlimited' ? null : limit;
}

/**
 * A pids cgroup's limit on processes and threads as a run or the probe saw it: the smallest pids.max from
 * the group up (null: none), the group that sets it, and the forks or thread starts it refused (pids.events).
 */
export interface TaskLimit {
  cgroup: string;
  limit: number | null;
  limitedAt: string | null;
  refused: number;
}

/**
 * This process's pids cgroup (v1's pids hierarchy, or v2 with the pids controller): the most tasks it and
 * its ancestors allow, and each group's count of forks and thread starts its limit refused so far.
 */
export interface TaskCgroup {
  /** The group's path inside its hierarchy. */
  path: string;
  /** The smallest pids.max from the group up to the top of the mount; null when none is set. */
  limit: number | null;
  /** The group that sets it. */
  limitedAt: string | null;
  /** "max" of pids.events per group directory, the group first: it counts refusals since the group began. */
  refusals: Map<string, number>;
}

/** The pids cgroup this process is in, or null where no pids controller shows it. */
export function readTaskCgroup(sources: CgroupSources = {}): TaskCgroup | null {
  const root = sources.root ?? '';
  const procText = readText(sources.procSelfCgroup ?? '/proc/self/cgroup');
  const mountText = readText(sources.mountinfo ?? '/proc/self/mountinfo');
  if (isUnknown(procText) || isUnknown(mountText)) return null;
  const entries = parseProcCgroup(procText);
  const mounts = parseCgroupMounts(mountText);
  const v1Entry = entries.find((entry) => entry.hierarchyId !== 0 && entry.controllers.includes('pids'));
  const v1Mount = mounts.find((mount) => mount.version === 1 && mount.superOptions.includes('pids'));
  const v2Entry = entries.find((entry) => entry.hierarchyId === 0);
  const v2Mount = mounts.find((mount) => mount.version === 2);
  const [mount, cgroupPath] =
    v1Entry && v1Mount ? [v1Mount, v1Entry.path] : v2Entry && v2Mount ? [v2Mount, v2Entry.path] : [];
  const directory = mount && cgroupPath !== undefined ? cgroupDirectory(mount, cgroupPath, root) : undefined;
  if (!mount || cgroupPath === undefined || !directory || !fs.existsSync(path.join(directory, 'pids.max'))) return null;
  const group: TaskCgroup = { path: cgroupPath, limit: null, limitedAt: null, refusals: new Map() };
  for (const { directory: dir, path: groupPath } of chainToTop(directory, cgroupPath, root + mount.mountPoint)) {
    const max = readText(path.join(dir, 'pids.max'));
    const limit = isUnknown(max) ? undefined : parseCount(max);
    if (limit !== undefined && (group.limit === null || limit < group.limit)) {
      group.limit = limit;
      group.limitedAt = groupPath;
    }
    const events = readText(path.join(dir, 'pids.events'));
    if (!isUnknown(events)) group.refusals.set(dir, parseKeyValues(events).get('max') ?? 0);
  }
  return group;
}
