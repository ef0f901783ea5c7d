// `clip-mem slurm explain JOBID`: after the fact, what happened to a Slurm job's memory, step by step, and
// what to request. Every source is read when it can be and named when it cannot: the controller
// (scontrol show job, for MinJobAge after the end), accounting (sacct, else the completion log through
// sacct -c), the node's kernel log (who the OOM killer killed, in which step's cgroup), slurmd's log
// (OverMemoryKill's "exceeded memory limit"), the job's stderr file, and the report of clip-mem trace when
// the job ran under it (`srun clip-mem trace --json FILE -- ...`).
import * as fs from 'node:fs';
import type { Cause } from '../diagnose';
import { isUnknown } from '../core/field';
import { formatBytes } from '../core/units';
import { type SacctJob, type ScontrolJob, sacctJob, scontrolJobWhen, slurmConfig, slurmJobEnded } from '../probe/slurm';
import type { TraceReport } from '../report/trace-report';
import { oomKillsSince } from '../track/kernel-log';

export const SLURM_EXPLAIN_SCHEMA = 'clip-mem-slurm-explain/1';

const MiB = 2 ** 20;

export interface SourceNote {
  /** What was read: "scontrol show job", "sacct -c", "/dev/kmsg", a file. */
  source: string;
  read: boolean;
  /** Why it was not read, or what it lacks ("state and exit code only"). */
  note: string | null;
}

export interface StepFinding {
  /** "0", "batch", "extern"; "job" for what is not tied to one step. */
  stepId: string;
  state: string | null;
  cause: Cause | null;
  evidence: string[];
}

export interface SlurmExplanation {
  schema: typeof SLURM_EXPLAIN_SCHEMA;
  jobId: string;
  job: ScontrolJob | null;
  accounting: SacctJob | null;
  sources: SourceNote[];
  steps: StepFinding[];
  /** What happened, in one sentence. */
  summary: string;
  /** What to request: the option (e.g. "--mem=621M"), its bytes, and why; request null when none is needed or known. */
  recommend: { request: string | null; bytes: number | null; why: string };
}

const mib = (bytes: number) => Math.ceil(bytes / MiB);

function readable(file: string | null): string | null {
  if (!file) return null;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** "ended OUT_OF_MEMORY", or "is COMPLETING (not ended yet)" for a state that may still change. */
function ended(state: string): string {
  return slurmJobEnded(state) ? `ended ${state}` : `is ${state} (not ended yet)`;
}

function step(steps: Map<string, StepFinding>, id: string): StepFinding {
  let found = steps.get(id);
  if (!found) steps.set(id, (found = { stepId: id, state: null, cause: null, evidence: [] }));
  return found;
}

/** What slurmstepd wrote of the job's steps (slurmd's log, the job's stderr): OOM events and OverMemoryKill. */
function stepMessages(text: string, jobId: string, where: string, steps: Map<string, StepFinding>): number | null {
  let overUsed: number | null = null;
  const seen = new Set<string>();
  for (const match of text.matchAll(
    new RegExp(`Detected (\\d+) oom-kill event\\(s\\) in StepId=${jobId}\\.(\\w+)`, 'g'),
  )) {
    const key = `oom ${match[2]}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const finding = step(steps, match[2]!);
    finding.cause = 'cgroup-oom-kill';
    finding.evidence.push(`${where}: slurmstepd detected ${match[1]} OOM kill(s) in the step's cgroup`);
  }
  const over = new RegExp(`StepId=${jobId}\\.(\\w+) exceeded memory limit \\((\\d+) > (\\d+)\\), being killed`, 'g');
  for (const match of text.matchAll(over)) {
    const key = `over ${match[1]} ${match[2]}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const used = Number(match[2]);
    const limit = Number(match[3]);
    const finding = step(steps, match[1]!);
    finding.cause = 'cgroup-oom-kill';
    finding.evidence.push(
      `${where}: Slurm's OverMemoryKill killed it: ${formatBytes(used)} (${used} B) > ${formatBytes(limit)} (${limit} B) ` +
        '("exceeded memory limit ... being killed"; the step\'s summed RSS, polled, no cgroup)',
    );
    overUsed = Math.max(overUsed ?? 0, used);
  }
  return overUsed;
}

export function explainSlurmJob(jobId: string, traceReports: TraceReport[] = []): SlurmExplanation {
  const sources: SourceNote[] = [];
  const steps = new Map<string, StepFinding>();

  // Right after the job ends it reads COMPLETING for a moment; its final state follows (OUT_OF_MEMORY...).
  const scontrol = scontrolJobWhen(jobId, (state) => state !== 'COMPLETING');
  const job = isUnknown(scontrol) ? null : scontrol;
  sources.push({
    source: 'scontrol show job',
    read: job !== null,
    note: isUnknown(scontrol)
      ? `${scontrol.slice('unknown: '.length)} (the controller forgets a job MinJobAge after its end)`
      : null,
  });

  const sacct = sacctJob(jobId);
  const accounting = isUnknown(sacct) ? null : sacct;
  sources.push({
    source: accounting?.source ?? 'sacct',
    read: accounting !== null,
    note: isUnknown(sacct)
      ? sacct.slice('unknown: '.length)
      : sacct.missing && `${sacct.missing}; the completion log gives state and exit code only`,
  });
  for (const row of accounting?.rows ?? []) {
    const id = row.jobId.includes('.') ? row.jobId.split('.')[1]! : 'job';
    const finding = step(steps, id);
    finding.state = row.state;
    if (row.state === 'OUT_OF_MEMORY') finding.cause = 'cgroup-oom-kill';
    finding.evidence.push(
      `${accounting!.source}: ${row.state}, exit code ${row.exitCode}` +
        (row.maxRss !== null ? `, MaxRSS ${formatBytes(row.maxRss)}` : ''),
    );
  }

  // The kernel's word: kills in a cgroup of this job (/slurm_<node>/uid_U/job_N/step_S/...).
  const kills = oomKillsSince({ seq: -1 });
  if (Array.isArray(kills)) {
    sources.push({ source: '/dev/kmsg', read: true, note: null });
    for (const kill of kills) {
      const inJob = new RegExp(`/job_${jobId}(?:/step_([^/]+))?(?:/|$)`).exec(kill.taskMemcg || kill.memcg);
      if (!inJob) continue;
      const finding = step(steps, inJob[1] ?? 'job');
      finding.cause = 'cgroup-oom-kill';
      finding.evidence.push(
        `kernel log: pid ${kill.pid} (${kill.comm}) killed by the OOM killer in cgroup ${kill.memcg || kill.taskMemcg}` +
          (kill.rss !== null ? `, RSS ${formatBytes(kill.rss)} when killed` : ''),
      );
    }
  } else {
    sources.push({ source: '/dev/kmsg', read: false, note: `${kills.unreadable} (run it on the job's node, as root)` });
  }

  const config = slurmConfig();
  const slurmdLog = isUnknown(config) ? null : (config.get('SlurmdLogFile') ?? null);
  const slurmdText = readable(slurmdLog);
  sources.push({
    source: slurmdLog ?? 'slurmd log',
    read: slurmdText !== null,
    note:
      slurmdText !== null
        ? null
        : isUnknown(config)
          ? config.slice('unknown: '.length)
          : `${slurmdLog ?? 'SlurmdLogFile is not set'}: not readable here (it is on the job's node)`,
  });
  let overUsed = slurmdText !== null ? stepMessages(slurmdText, jobId, 'slurmd log', steps) : null;
  const stderrText = readable(job?.stdErr ?? null);
  if (stderrText !== null) {
    sources.push({ source: job!.stdErr!, read: true, note: null });
    overUsed = Math.max(overUsed ?? 0, stepMessages(stderrText, jobId, 'job stderr', steps) ?? 0) || overUsed;
  }

  const traces = traceReports.filter((r) => r.slurm?.jobId === jobId);
  sources.push({
    source: 'clip-mem trace report',
    read: traces.length > 0,
    note: traces.length
      ? null
      : "none given: run the step as `srun clip-mem trace --json FILE -- ...` and pass --trace FILE for the program's own figures",
  });
  for (const trace of traces) {
    const finding = step(steps, trace.slurm!.stepId ?? 'job');
    if (trace.diagnosis.cause !== 'none') finding.cause = trace.diagnosis.cause;
    finding.evidence.push(...trace.diagnosis.evidence.map((e) => `clip-mem trace: ${e}`));
  }

  const request = job?.request ?? traces[0]?.slurm?.request ?? null;
  const state = job?.state ?? accounting?.rows.find((r) => !r.jobId.includes('.'))?.state ?? null;
  const list = [...steps.values()].sort((a, b) => a.stepId.localeCompare(b.stepId, 'en', { numeric: true }));
  const killed = list.filter((s) => s.cause === 'cgroup-oom-kill');
  // The job's own row repeats its steps' ending: name the steps, the job only when no step is known.
  const killedSteps = killed.some((s) => s.stepId !== 'job') ? killed.filter((s) => s.stepId !== 'job') : killed;
  const name = `Slurm job ${jobId}${job?.name ? ` (${job.name})` : ''}`;
  const where = killedSteps.map((s) => (s.stepId === 'job' ? 'the job' : `step ${s.stepId}`)).join(', ');
  const summary = killed.length
    ? `${name} ran out of its memory request ${request ?? '(not known)'}: ${where} killed for it` +
      (state ? `; the job ${ended(state)}` : '')
    : `${name}${state ? ` ${ended(state)}` : ''}: no memory kill found in the sources read`;

  const fix = traces.map((t) => t.fix).find((f) => f?.needAtLeast != null);
  let recommend: SlurmExplanation['recommend'];
  if (!killed.length) {
    recommend = {
      request: null,
      bytes: null,
      why: `no step was killed for memory: ${request ?? 'the request'} was not what ended it`,
    };
  } else if (fix) {
    const m = mib(fix.needAtLeast!);
    recommend = { request: `--mem=${m}M`, bytes: m * MiB, why: `from clip-mem trace's record: ${fix.text}` };
  } else if (overUsed !== null) {
    const m = mib(overUsed) + 1;
    recommend = {
      request: `--mem=${m}M`,
      bytes: m * MiB,
      why:
        `Slurm measured ${formatBytes(overUsed)} (${overUsed} B) when it killed the step, and the step may have wanted more: ` +
        `at least --mem=${m}M; \`clip-mem fit --for slurm -- <the command>\` proves the real minimum`,
    };
  } else {
    const limit = job?.memoryOnNode ?? null;
    recommend = {
      request: null,
      bytes: limit !== null ? limit + MiB : null,
      why:
        `more than ${request ?? 'the request'}; how much more is not known from outside the job: rerun it as ` +
        '`srun --mem=... clip-mem trace --json FILE -- <the command>` (then explain it with --trace FILE), or find ' +
        'the least that passes with `clip-mem fit --for slurm -- <the command>`',
    };
  }
  return {
    schema: SLURM_EXPLAIN_SCHEMA,
    jobId,
    job,
    accounting,
    sources,
    steps: list,
    summary,
    recommend,
  };
}

export function formatSlurmExplanation(e: SlurmExplanation): string {
  const lines: string[] = [];
  const job = e.job;
  lines.push(
    `clip-mem slurm explain ${e.jobId}: ` +
      (job
        ? `${job.name ?? '?'} on ${job.nodeList ?? '?'}, ${job.state ?? '?'} (exit ${job.exitCode ?? '?'}), ${job.request ?? 'no memory request'}`
        : 'the controller no longer knows this job'),
  );
  lines.push(`  ${e.summary}`);
  for (const s of e.steps) {
    lines.push(
      `  ${s.stepId === 'job' ? `job ${e.jobId}` : `step ${s.stepId}`}${s.state ? ` ${s.state}` : ''}${s.cause ? `: ${s.cause}` : ''}`,
    );
    for (const sentence of s.evidence) lines.push(`    ${sentence}`);
  }
  lines.push(`  request: ${e.recommend.request ?? '(none to give)'}`);
  lines.push(`    ${e.recommend.why}`);
  lines.push('  sources:');
  for (const s of e.sources)
    lines.push(`    ${s.read ? 'read' : 'missing'}: ${s.source}${s.note ? ` (${s.note})` : ''}`);
  return lines.join('\n') + '\n';
}
