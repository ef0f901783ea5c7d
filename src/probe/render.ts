// The human table of `clip-mem native-probe`: the report grouped as the README explains it, verdict last.
import { formatBytes } from '../core/units';
import type { MemoryCgroup } from './cgroup';
import { isUnknown, type Field, type Limit } from '../core/field';
import type { AllocationSearch, CudaReport, NvmlReport, ResourceLimitName } from './native';
import type { NativeProbeReport } from './probe';
import { describeConstraint } from './verdict';

function bytes(value: Field<Limit> | null | undefined, exact = false): string {
  if (value === null || value === undefined) return 'not set';
  if (typeof value === 'string') return value;
  return exact ? `${formatBytes(value)} (${value})` : formatBytes(value);
}

function count(value: Field<number> | null): string {
  return value === null ? 'not set' : String(value);
}

function table(rows: string[][], indent = '  '): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map(
    (row) =>
      indent +
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 2)))
        .join('')
        .trimEnd(),
  );
}

const limitRows: [ResourceLimitName, string, string][] = [
  ['as', 'RLIMIT_AS', 'address space (ulimit -v)'],
  ['data', 'RLIMIT_DATA', 'private writable memory (ulimit -d)'],
  ['rss', 'RLIMIT_RSS', 'resident set (ulimit -m; not enforced by Linux)'],
  ['stack', 'RLIMIT_STACK', 'main thread stack (ulimit -s)'],
  ['memlock', 'RLIMIT_MEMLOCK', 'locked memory (ulimit -l)'],
  ['nproc', 'RLIMIT_NPROC', 'processes of this user (count, ulimit -u)'],
];

const overcommitModes: Record<number, string> = { 0: 'heuristic', 1: 'always', 2: 'never: strict CommitLimit' };

function search(result: AllocationSearch, pageSize: number): string {
  const next = result.failedAt - result.largest <= pageSize ? 'one page more' : formatBytes(result.failedAt);
  const failure = result.failedAt ? `; ${next} fails: ${result.errno} (${result.error})` : '';
  return `${formatBytes(result.largest)} (${result.largest})${failure}`;
}

/** The request as the controller has it, and the cgroups that enforce it. */
function slurmJobLines(slurm: NonNullable<NativeProbeReport['slurm']>): string[] {
  const out: string[] = [];
  const job = slurm.scontrol;
  if (job === null) return out;
  if (isUnknown(job)) out.push(`  scontrol: ${job.slice('unknown: '.length)}`);
  else {
    const request = job.request
      ? `${job.request}${job.memoryOnNode !== null ? ` (${formatBytes(job.memoryOnNode)}, ${job.memoryOnNode} bytes, on this node)` : ''}`
      : 'no memory request';
    out.push(
      `  Slurm job ${job.jobId}${slurm.stepId !== null ? ` step ${slurm.stepId}` : ''}${job.name ? ` (${job.name})` : ''}: ${request}` +
        `, ${job.state ?? 'state unknown'} on ${job.nodeList ?? '?'}${job.partition ? `, partition ${job.partition}` : ''} (scontrol show job)`,
    );
  }
  if (slurm.cgroup) {
    for (const group of [slurm.cgroup.job, slurm.cgroup.step]) {
      if (group) out.push(`  enforced by cgroup v${group.version} ${group.path}: limit ${bytes(group.limit, true)}`);
    }
  } else out.push('  no Slurm memory cgroup around this process: the request is not enforced by a cgroup here');
  return out;
}

function cgroupLines(group: MemoryCgroup, own: boolean): string[] {
  const swapKind = group.version === 1 ? 'memory+swap limit' : 'swap limit';
  const soft = group.version === 1 ? 'soft limit' : 'high';
  return [
    `  v${group.version} ${group.path}${own ? '  (this process)' : ''}`,
    ...table(
      [
        ['limit', bytes(group.limit, true), soft, bytes(group.softLimit), swapKind, bytes(group.swapLimit)],
        ['usage', bytes(group.usage), 'peak', bytes(group.peak), 'failcnt', String(group.failcnt)],
        // v1 keeps no OOM event count: only the kills are worth a cell there.
        group.version === 2
          ? ['oom events', String(group.oomEvents), 'oom kills', String(group.oomKills)]
          : ['oom kills', String(group.oomKills)],
      ],
      '      ',
    ),
  ];
}

function nvmlLines(nvml: NvmlReport): string[] {
  if (nvml.unavailable) return [`  NVML (${nvml.library}): not available: ${nvml.unavailable}`];
  const lines = [`  NVML (${nvml.library}): driver ${nvml.driverVersion}, ${nvml.devices!.length} device(s)`];
  for (const device of nvml.devices!) {
    const memory =
      device.memoryError ?? `total ${bytes(device.total)}, used ${bytes(device.used)}, free ${bytes(device.free)}`;
    lines.push(`    GPU ${device.index} ${device.name}: ${memory}`);
    if (device.processesError) lines.push(`      processes: ${device.processesError}`);
    for (const p of device.processes ?? [])
      lines.push(
        `      pid ${p.pid} ${p.name || '?'}: ${p.used === undefined ? 'usage not available' : bytes(p.used)}`,
      );
  }
  return lines;
}

function cudaLines(cuda: CudaReport): string[] {
  if (cuda.unavailable) return [`  CUDA driver (${cuda.library}): not available: ${cuda.unavailable}`];
  const version = cuda.driverVersion!;
  const lines = [
    `  CUDA driver (${cuda.library}): version ${Math.floor(version / 1000)}.${(version % 1000) / 10}, ${cuda.devices!.length} device(s)`,
  ];
  for (const d of cuda.devices!) {
    lines.push(
      `    device ${d.ordinal} ${d.name}: ${d.error ?? `cuMemGetInfo free ${bytes(d.free)} of ${bytes(d.total)}`}`,
    );
  }
  return lines;
}

/** "40 tasks (pids.max of /job) in /job/step, 2 refused so far". */
function tasksText(tasks: NativeProbeReport['tasks']): string {
  if (!tasks) return 'no pids limit';
  const where = tasks.limitedAt !== tasks.cgroup ? ` of ${tasks.limitedAt}` : '';
  const limit = tasks.limit === null ? 'no limit' : `${tasks.limit} tasks (pids.max${where})`;
  return `${limit} in ${tasks.cgroup}, ${tasks.refused} refused so far`;
}

export function renderProbe(report: NativeProbeReport): string {
  const { limits, process: proc, host, cgroups, slurm, gpu, allocator, verdict } = report;
  const out: string[] = [
    `clip-mem native-probe ${report.tool.version} (${report.tool.native}): pid ${report.pid}, ${report.time}`,
    '',
  ];

  out.push('1. Resource limits (getrlimit)');
  out.push(
    ...table([
      ['', 'soft', 'hard', ''],
      ...limitRows.map(([key, name, what]) => {
        const exact = key !== 'nproc';
        const show = (v: Limit) => (exact ? bytes(v, true) : String(v));
        return [name, show(limits[key].soft), show(limits[key].hard), what];
      }),
    ]),
  );
  out.push('');

  out.push('2. This process (/proc/self/status, /proc/self/maps, mallinfo2)');
  const m = proc.mallinfo;
  out.push(
    ...table([
      ['VmSize', bytes(proc.vmSize, true), 'address space mapped: what RLIMIT_AS counts'],
      ['VmPeak', bytes(proc.vmPeak), 'largest VmSize so far'],
      ['VmRSS', bytes(proc.vmRss), 'resident now: what cgroups and the OOM killer count'],
      ['VmHWM', bytes(proc.vmHwm), 'largest VmRSS so far'],
      ['VmData', bytes(proc.vmData, true), 'private writable memory: what RLIMIT_DATA counts'],
      ['VmStk', bytes(proc.vmStk), 'main thread stack'],
      ['Threads', String(proc.threads), ''],
      ['mappings', String(proc.mappings), `of vm.max_map_count ${host.maxMapCount}`],
      [
        'malloc',
        `${formatBytes(m.uordblks)} in use`,
        `heap ${formatBytes(m.arena)} from brk + ${formatBytes(m.hblkhd)} in ${m.hblks} mmap'd block(s); ${formatBytes(m.fordblks)} free inside, ${formatBytes(m.keepcost)} releasable`,
      ],
      [
        'MALLOC_ARENA_MAX',
        proc.mallocArenaMax ?? 'not set',
        proc.glibcTunables ? `GLIBC_TUNABLES=${proc.glibcTunables}` : '',
      ],
    ]),
  );
  out.push('');

  out.push('3. Host (/proc/meminfo, /proc/sys/vm, /sys/kernel/mm)');
  const overcommit = host.overcommitMemory;
  out.push(
    ...table([
      ['MemTotal', bytes(host.memTotal), 'MemAvailable', bytes(host.memAvailable)],
      ['SwapTotal', bytes(host.swapTotal), 'SwapFree', bytes(host.swapFree)],
      ['CommitLimit', bytes(host.commitLimit), 'Committed_AS', bytes(host.committedAs)],
      [
        'overcommit_memory',
        typeof overcommit === 'number' ? `${overcommit} (${overcommitModes[overcommit] ?? '?'})` : overcommit,
        'overcommit_ratio',
        `${host.overcommitRatio}%, overcommit_kbytes ${host.overcommitKbytes}`,
      ],
      ['transparent hugepages', String(host.transparentHugepage), 'max_map_count', String(host.maxMapCount)],
      [
        '/dev/shm',
        report.sharedMemory
          ? `${formatBytes(report.sharedMemory.size)} tmpfs, ${formatBytes(report.sharedMemory.used)} used`
          : 'not a tmpfs of its own',
        'pids',
        tasksText(report.tasks),
      ],
    ]),
  );
  out.push('');

  out.push('4. cgroup memory (from /proc/self/cgroup up to the top of each hierarchy)');
  if (cgroups.hierarchies.length === 0) out.push('  no memory cgroup found');
  for (const hierarchy of cgroups.hierarchies) {
    hierarchy.groups.forEach((group, i) => out.push(...cgroupLines(group, i === 0)));
  }
  out.push(
    `  tightest: ${cgroups.tightest ? `v${cgroups.tightest.version} ${cgroups.tightest.path}, limit ${bytes(cgroups.tightest.limit, true)}` : 'no group has a memory limit'}`,
  );
  for (const note of cgroups.notes) out.push(`  note: ${note}`);
  out.push('');

  out.push('5. Slurm job');
  if (!slurm) out.push('  not in a Slurm job (SLURM_JOB_ID not set)');
  else {
    out.push(
      ...table([
        ['SLURM_JOB_ID', slurm.jobId],
        ['SLURM_STEP_ID', slurm.stepId ?? 'not set'],
        ['SLURM_MEM_PER_NODE', bytes(slurm.memPerNode)],
        ['SLURM_MEM_PER_CPU', bytes(slurm.memPerCpu)],
        ['SLURM_MEM_PER_GPU', bytes(slurm.memPerGpu)],
        ['SLURM_CPUS_ON_NODE', count(slurm.cpusOnNode)],
      ]),
    );
    out.push(...slurmJobLines(slurm));
  }
  out.push('');

  out.push('6. GPU');
  out.push(...nvmlLines(gpu.nvml), ...cudaLines(gpu.cuda));
  out.push('');

  out.push('7. Allocator probe (what can be allocated now; each block released at once, no page touched)');
  out.push(
    ...table([
      ['largest malloc', search(allocator.malloc, allocator.pageSize)],
      ['largest read-write mapping', search(allocator.readWriteMapping, allocator.pageSize)],
      ['largest PROT_NONE reservation', search(allocator.reservation, allocator.pageSize)],
      [
        'reservable address space',
        `${formatBytes(allocator.reservable.total)} (${allocator.reservable.total}) in ${allocator.reservable.blocks} block(s)`,
      ],
    ]),
  );
  out.push('');

  out.push('8. Verdict');
  out.push(`  binds first: ${verdict.summary}`);
  for (const c of verdict.constraints.slice(1)) out.push(`  then:        ${describeConstraint(c)}`);
  for (const note of verdict.notes) out.push(`  note:        ${note}`);
  for (const fit of report.models) {
    out.push(
      `  model ${fit.model} (${fit.weights}, ${formatBytes(fit.weightBytes)}; largest tensor ${fit.largestTensor.name} ${formatBytes(fit.largestTensor.bytes)}):`,
    );
    for (const check of [fit.viaMmap, fit.viaCopy, fit.training]) out.push(`    ${check.explanation}`);
  }
  // An rlimit binds each process alone: the headroom above is this probe's, not a fresh job's.
  const own = verdict.constraints.find((c) => c.source === 'RLIMIT_AS' || c.source === 'RLIMIT_DATA');
  if (report.models.length && own) {
    out.push(
      `  whose headroom: this probe's own Node process (${own.source} ${formatBytes(own.limit)}, ${formatBytes(own.used)} of it ` +
        `used by Node itself); a program starting fresh under the same limit has ${formatBytes(own.limit)} less its own ` +
        `start-up use instead: measure it with clip-mem trace --limit-${own.source === 'RLIMIT_AS' ? 'as' : 'data'} ${own.limit} -- <program>`,
    );
  }
  return out.join('\n') + '\n';
}
