// `clip-mem run --slurm`: the same run, submitted as one Slurm job step (srun), its output streamed as it
// comes (the progress), its --json/--markdown/--html files written by the run inside the job (a path the
// node shares), then the job's ending as the controller has it. Inside the job every scenario's OOM kill
// by the job's cgroup is named as Slurm's by the trace path (track/slurm.ts). With --nodes N the run goes
// to N nodes at once (one task each), each writing its own files (`.<node>` before the extension), and
// the cluster report puts them side by side: each node's limits as seen inside the job, each scenario's
// outcome and cause.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { isUnknown } from '../core/field';
import { packageRoot } from '../core/native';
import { scontrolJobWhen, slurmJobEnded, slurmReachable } from '../probe/slurm';
import { formatBytes } from '../core/units';
import { readResults, type RunResults } from '../report/result';

export interface SlurmRunRequest {
  /** run's own arguments, without --slurm, --partition, --mem and --nodes. */
  runArgs: string[];
  partition?: string;
  /** --mem in bytes (srun takes whole MiB). */
  mem?: number;
  /** One run on each of this many nodes. */
  nodes?: number;
  progress: (line: string) => void;
}

/** One node's run in the cluster report. */
export interface NodeRun {
  node: string;
  /** Its results file (clip-mem run --json), or why it could not be read. */
  file: string;
  results: RunResults | null;
  problem: string | null;
}

export interface SlurmRunOutcome {
  status: number;
  jobId: string | null;
  /** "Slurm job 12 on vm, --mem=1500M: OUT_OF_MEMORY (exit 0:125)", from scontrol. */
  ending: string;
  /** With --nodes: each node's run, in the order the nodes started. */
  nodes: NodeRun[] | null;
}

const outputs = ['--json', '--markdown', '--html'];
const nodeMark = '%n';

/** "run.jsonl" -> "run.%n.jsonl": the file a node writes, once %n is its name. */
function perNode(file: string): string {
  const ext = path.extname(file);
  return path.resolve(`${file.slice(0, file.length - ext.length)}.${nodeMark}${ext}`);
}

/**
 * run's arguments for each node: every output file made per node, and a JSON results file added where
 * none was asked for (the cluster report reads it). Returns them with the results file's template.
 */
function nodeArgs(runArgs: string[]): { args: string[]; results: string } {
  const args = [...runArgs];
  let results: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const [name, inline] = args[i]!.split(/=(.*)/s, 2) as [string, string | undefined];
    if (!outputs.includes(name)) continue;
    const index = inline !== undefined ? i : i + 1;
    const file = perNode(inline ?? args[index]!);
    args[index] = inline !== undefined ? `${name}=${file}` : file;
    if (name === '--json') results = file;
  }
  if (results === undefined) {
    results = perNode('clip-mem-run.jsonl');
    args.push('--json', results);
  }
  return { args, results };
}

export async function runInSlurm(request: SlurmRunRequest): Promise<SlurmRunOutcome> {
  const reachable = slurmReachable();
  if (reachable !== true) throw new Error(`run --slurm: no Slurm cluster here: ${reachable}`);
  const perNodeRun = request.nodes !== undefined ? nodeArgs(request.runArgs) : undefined;
  const args = [
    '--job-name=clip-mem-run',
    ...(request.partition ? [`--partition=${request.partition}`] : []),
    ...(request.mem !== undefined ? [`--mem=${Math.ceil(request.mem / 2 ** 20)}M`] : []),
    ...(request.nodes !== undefined
      ? [`--nodes=${request.nodes}`, `--ntasks=${request.nodes}`, '--ntasks-per-node=1']
      : []),
    '--',
    // The job names itself first (srun says its id only on failure): the job and the node it runs on;
    // then %n in the arguments becomes the node's name (each node's own output files).
    'sh',
    '-c',
    'n=$(hostname -s); echo "clip-mem run --slurm: in Slurm job $SLURM_JOB_ID on $n" >&2; ' +
      `for a do shift; set -- "$@" "$(printf '%s' "$a" | sed "s/${nodeMark}/$n/g")"; done; exec "$@"`,
    'sh',
    process.execPath,
    path.join(packageRoot, 'bin', 'clip-mem.js'),
    'run',
    ...(perNodeRun?.args ?? request.runArgs),
  ];
  request.progress(
    `submitting: srun ${args.slice(0, args.indexOf('--')).join(' ')} -- clip-mem run ${request.runArgs.join(' ')}`,
  );
  let jobId: string | null = null;
  const started: string[] = [];
  const child = spawn('srun', args, { stdio: ['ignore', 'inherit', 'pipe'] });
  child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    for (const match of text.matchAll(/in Slurm job (\d+) on (\S+)$/gm)) {
      jobId ??= match[1]!;
      started.push(match[2]!);
    }
    process.stderr.write(chunk);
  });
  const status = await new Promise<number>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? 128 + (signal ? 9 : 0))),
  );
  // srun made the job and has returned: any state but a final one is on its way to one.
  const job = jobId ? scontrolJobWhen(jobId, slurmJobEnded, endingWaitSeconds) : null;
  const ending =
    job && !isUnknown(job)
      ? `Slurm job ${job.jobId} on ${job.nodeList ?? '?'}, ${job.request ?? 'no memory request'}: ${job.state ?? '?'}${slurmJobEnded(job.state) ? '' : ` (not ended after ${endingWaitSeconds} s)`} (exit ${job.exitCode ?? '?'}); \`clip-mem slurm explain ${job.jobId}\` for the job's side`
      : `srun exited ${status}${job ? ` (${job.slice('unknown: '.length)})` : ''}`;
  const nodes = perNodeRun
    ? started.map((node) => {
        const file = perNodeRun.results.replaceAll(nodeMark, node);
        try {
          return { node, file, results: readResults(file), problem: null };
        } catch (error) {
          return { node, file, results: null, problem: (error as Error).message };
        }
      })
    : null;
  return { status, jobId, ending, nodes };
}

/** Seconds the job may take from srun's return to its final state; then the state as it is. */
const endingWaitSeconds = 30;

/** The cluster report: a row per node, its limits inside the job and each scenario's outcome. */
export function formatClusterReport(outcome: SlurmRunOutcome): string {
  const nodes = outcome.nodes ?? [];
  const scenarios = [...new Set(nodes.flatMap((n) => n.results?.scenarios.map((s) => s.name) ?? []))];
  const limit = (bytes: number | null) => (bytes === null ? 'unlimited' : formatBytes(bytes));
  const rows = nodes.map((n) => {
    if (!n.results) return [n.node, '?', '?', '?', ...scenarios.map(() => '?')];
    const inherited = n.results.header.environment.inherited;
    return [
      n.node,
      limit(inherited.as),
      limit(inherited.cgroupMem),
      n.results.end ? `${n.results.end.passed} passed, ${n.results.end.failed} failed` : 'did not finish',
      ...scenarios.map((name) => {
        const s = n.results!.scenarios.find((r) => r.name === name);
        return !s ? 'not run' : s.status === 'passed' ? 'passed' : `FAILED: ${s.diagnosis.cause}`;
      }),
    ];
  });
  const head = ['node', 'RLIMIT_AS', 'cgroup memory', 'run', ...scenarios];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `  ${cells.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd();
  const lines = [
    `clip-mem run --slurm: cluster report, Slurm job ${outcome.jobId ?? '?'}, ${nodes.length} node(s)`,
    line(head),
    ...rows.map(line),
  ];
  for (const n of nodes) lines.push(n.results ? `  ${n.node}: ${n.file}` : `  ${n.node}: no results: ${n.problem}`);
  return lines.join('\n') + '\n';
}
