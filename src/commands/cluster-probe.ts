// `clip-mem native-probe --cluster [--partition P]`: the probe on every node of a Slurm cluster, each in a
// one-task job step on that node (`srun -w NODE`), gathered into one table with a row per node and the
// columns that differ between nodes marked. clip-mem must be at the same path on every node (a shared
// file system), as Slurm users' tools usually are.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { packageRoot } from '../core/native';
import { formatBytes } from '../core/units';
import { slurmReachable } from '../probe/slurm';

export const CLUSTER_PROBE_SCHEMA = 'clip-mem-native-probe-cluster/1';

type Limit = number | 'unlimited' | null;

export interface NodeProbe {
  node: string;
  /** Null when the probe ran; else why it did not (srun's words). */
  error: string | null;
  /** The probe job's request as scontrol has it, e.g. "--mem-per-cpu=1024M". */
  request: string | null;
  /** The probe job's memory cgroup limit (bytes), null without one. */
  jobCgroupLimit: Limit;
  rlimitAs: Limit;
  rlimitData: Limit;
  memTotal: number | null;
  memAvailable: number | null;
  /** GPUs NVML or CUDA reports, 0 when their libraries are missing. */
  gpus: number | null;
  /** The verdict: the limit an allocation hits first, and its headroom. */
  bindsFirst: string | null;
  headroom: number | null;
  /** The whole native-probe --json report of the node (null when it did not run). */
  report: Record<string, unknown> | null;
}

export interface ClusterProbe {
  schema: typeof CLUSTER_PROBE_SCHEMA;
  partition: string | null;
  nodes: NodeProbe[];
  /** The columns whose values differ between nodes (MemAvailable and headroom move by themselves: not compared). */
  differences: string[];
}

/** The nodes of the partition (or of every partition), as sinfo lists them. */
function nodesOf(partition: string | null): string[] {
  const run = spawnSync('sinfo', ['-h', '-N', '-o', '%N', ...(partition ? ['-p', partition] : [])], {
    encoding: 'utf8',
    timeout: 15_000,
  });
  if (run.error || run.status !== 0) throw new Error(`sinfo failed: ${run.error?.message ?? run.stderr.trim()}`);
  return [
    ...new Set(
      run.stdout
        .split('\n')
        .map((n) => n.trim())
        .filter(Boolean),
    ),
  ];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

function softLimit(limit: Json): Limit {
  return limit && (typeof limit.soft === 'number' || limit.soft === 'unlimited') ? limit.soft : null;
}

function gpuCount(gpu: Json): number | null {
  const counts = [gpu?.nvml?.devices?.length, gpu?.cuda?.devices?.length].filter((n) => typeof n === 'number');
  return counts.length ? Math.max(...counts) : 0;
}

function probeNode(node: string, partition: string | null, probeArgs: string[]): NodeProbe {
  const bin = path.join(packageRoot, 'bin', 'clip-mem.js');
  const run = spawnSync(
    'srun',
    [
      '--job-name=clip-mem-probe',
      '-N1',
      '-n1',
      `--nodelist=${node}`,
      ...(partition ? [`--partition=${partition}`] : []),
      '--',
      process.execPath,
      bin,
      'native-probe',
      ...probeArgs,
      '--json',
      '-',
    ],
    { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 2 ** 20 },
  );
  const empty: NodeProbe = {
    node,
    error: null,
    request: null,
    jobCgroupLimit: null,
    rlimitAs: null,
    rlimitData: null,
    memTotal: null,
    memAvailable: null,
    gpus: null,
    bindsFirst: null,
    headroom: null,
    report: null,
  };
  let report: Json;
  try {
    report = JSON.parse(run.stdout);
  } catch {
    const said = `${run.stderr ?? ''}`.trim().split('\n').slice(-2).join('; ');
    return { ...empty, error: `srun on ${node} exited ${run.status}${said ? `: ${said}` : ''}` };
  }
  const slurm = report.slurm;
  return {
    ...empty,
    request: slurm?.scontrol?.request ?? null,
    jobCgroupLimit: slurm?.cgroup?.job?.limit ?? null,
    rlimitAs: softLimit(report.limits?.as),
    rlimitData: softLimit(report.limits?.data),
    memTotal: report.host?.memTotal ?? null,
    memAvailable: report.host?.memAvailable ?? null,
    gpus: gpuCount(report.gpu),
    bindsFirst: report.verdict?.bindsFirst
      ? `${report.verdict.bindsFirst.name} (${report.verdict.bindsFirst.source})`
      : null,
    headroom: report.verdict?.bindsFirst?.headroom ?? null,
    report,
  };
}

const columns: { name: string; compared: boolean; show: (n: NodeProbe) => string }[] = [
  { name: 'request', compared: true, show: (n) => n.request ?? '-' },
  { name: 'job cgroup', compared: true, show: (n) => limitText(n.jobCgroupLimit, 'none') },
  { name: 'RLIMIT_AS', compared: true, show: (n) => limitText(n.rlimitAs) },
  { name: 'RLIMIT_DATA', compared: true, show: (n) => limitText(n.rlimitData) },
  { name: 'MemTotal', compared: true, show: (n) => limitText(n.memTotal) },
  { name: 'MemAvailable', compared: false, show: (n) => limitText(n.memAvailable) },
  { name: 'GPUs', compared: true, show: (n) => (n.gpus === null ? '?' : String(n.gpus)) },
  { name: 'binds first', compared: true, show: (n) => n.bindsFirst ?? '?' },
  { name: 'headroom', compared: false, show: (n) => limitText(n.headroom) },
];

function limitText(value: Limit, none = '?'): string {
  if (value === null) return none;
  return value === 'unlimited' ? 'unlimited' : formatBytes(value);
}

export function probeCluster(partition: string | null, probeArgs: string[]): ClusterProbe {
  const reachable = slurmReachable();
  if (reachable !== true) throw new Error(`no Slurm cluster to probe: ${reachable}`);
  const names = nodesOf(partition);
  if (!names.length) throw new Error(`sinfo lists no node${partition ? ` in partition ${partition}` : ''}`);
  const nodes = names.map((node) => probeNode(node, partition, probeArgs));
  const probed = nodes.filter((n) => n.error === null);
  const differences = columns.filter((c) => c.compared && new Set(probed.map(c.show)).size > 1).map((c) => c.name);
  return { schema: CLUSTER_PROBE_SCHEMA, partition, nodes, differences };
}

/** One row per node; a column whose values differ between nodes is marked with * in its heading. */
export function renderClusterProbe(probe: ClusterProbe): string {
  const heading = ['node', ...columns.map((c) => (probe.differences.includes(c.name) ? `${c.name} *` : c.name))];
  const rows = probe.nodes.map((n) =>
    n.error === null ? [n.node, ...columns.map((c) => c.show(n))] : [n.node, `not probed: ${n.error}`],
  );
  const widths = heading.map((h, i) =>
    Math.max(h.length, ...rows.filter((r) => r.length > 1 && r.length === heading.length).map((r) => r[i]!.length)),
  );
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ');
  const out = [
    `clip-mem native-probe --cluster: ${probe.nodes.length} node(s)${probe.partition ? ` in partition ${probe.partition}` : ''}, each probed in a job step (srun -w NODE)`,
    line(heading),
    ...rows.map(line),
  ];
  out.push(
    probe.differences.length
      ? `* differs between nodes: ${probe.differences.join(', ')}`
      : probe.nodes.length > 1
        ? 'the nodes agree on every limit'
        : '(one node: nothing to compare)',
  );
  return out.join('\n') + '\n';
}
