// clip-mem under a real Slurm (the one-node cluster of scripts/slurm-cluster): inside a job, native-probe
// names the job and its request, trace names the job's cgroup kill as Slurm's with the --mem that fits
// (and a rerun at that --mem passes), and Slurm's other enforcement (OverMemoryKill) is recognised.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatBytes } from '../src/core/units';
import type { TraceReport } from '../src/report/trace-report';
import { repoRoot } from './helpers/paths';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';
import { JOB_NAME, leftoverCgroups, ourJobs, requireSlurm, srun } from './helpers/slurm';

const MiB = 2 ** 20;
const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
/** A program that touches `mib` MiB (bytes filled with 1s: every page written). */
const touching = (mib: number) => [
  'python3',
  '-c',
  `b = b"\\x01" * (${mib} << 20); print("touched", len(b) >> 20, "MiB")`,
];
const jobIds: string[] = [];

test.serial('native-probe inside srun --mem=300M names the job, its request (from scontrol) and its cgroups', (t) => {
  requireSlurm(t);
  const run = srun(['--mem=300M'], [process.execPath, bin, 'native-probe', '--json', '-']);
  t.is(run.status, 0, run.stderr);
  const report = JSON.parse(run.stdout);
  t.is(schemaErrors('native-probe', report), '');
  const slurm = report.slurm;
  jobIds.push(slurm.jobId);
  t.is(slurm.stepId, '0');
  t.is(slurm.memPerNode, null, 'srun --mem sets no SLURM_MEM_PER_NODE');
  t.like(slurm.scontrol, { jobId: slurm.jobId, request: '--mem=300M', memPerNode: 300 * MiB, state: 'RUNNING' });
  t.regex(slurm.cgroup.job.path, new RegExp(`^/slurm[^/]*/uid_\\d+/job_${slurm.jobId}$`));
  t.is(slurm.cgroup.job.limit, 300 * MiB);
  t.is(slurm.cgroup.step.path, `${slurm.cgroup.job.path}/step_0`);
  const text = srun(['--mem=300M'], [process.execPath, bin, 'native-probe']).stdout;
  t.regex(
    text,
    /Slurm job \d+ step 0 \(clipmem-test\): --mem=300M \(300 MiB, 314572800 bytes, on this node\), RUNNING/,
  );
});

test.serial(
  'srun --mem=300M clip-mem trace -- a 600 MiB program: cgroup-oom-kill of the Slurm job, and the --mem that passes',
  (t) => {
    requireSlurm(t);
    const json = path.join(scratchDir('clipmem-slurm-'), 'trace.json');
    const run = srun(['--mem=300M'], [process.execPath, bin, 'trace', '--json', json, '--', ...touching(600)]);
    t.not(run.status, 0);
    t.regex(run.stderr, /Detected 1 oom-kill event\(s\) in StepId=\d+\.0/);
    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
    t.is(schemaErrors('trace', report), '');
    const job = report.slurm!;
    jobIds.push(job.jobId);
    t.like(job, { stepId: '0', request: '--mem=300M', limit: 300 * MiB, oomKills: 1 });
    t.regex(job.cgroup!, new RegExp(`/job_${job.jobId}$`));
    t.is(report.diagnosis.cause, 'cgroup-oom-kill');
    t.is(
      report.diagnosis.evidence[0],
      `killed by the kernel OOM killer in the cgroup of Slurm job ${job.jobId} (step 0), --mem=300M`,
    );
    t.true(
      report.diagnosis.evidence.includes(
        `the job's cgroup ${job.cgroup} holds it to 300 MiB (314572800 B) of RSS + page cache`,
      ),
    );
    // The fix: all the program mapped, in MiB, at least the 600 MiB it touches.
    const mem = Number(/ask for --mem=(\d+)M/.exec(report.fix!.text)?.[1]);
    t.true(mem >= 600 && mem < 700, report.fix!.text);
    t.is(report.fix!.needAtLeast, mem * MiB);
    t.is(
      report.fix!.command,
      `clip-mem fit --for slurm -- ${touching(600).slice(0, 2).join(' ')} '${touching(600)[2]}'`,
    );
    // A rerun at that --mem passes.
    const rerun = srun([`--mem=${mem}M`], touching(600));
    t.is(rerun.status, 0, rerun.stderr);
    t.regex(rerun.stdout, /touched 600 MiB/);
  },
);

test.serial(
  'OverMemoryKill (no cgroups): "exceeded memory limit (A > B), being killed" is Slurm killing the job at --mem',
  (t) => {
    requireSlurm(t, 'over-memory-kill');
    const json = path.join(scratchDir('clipmem-slurm-'), 'trace.json');
    const srunCommand = ['srun', `--job-name=${JOB_NAME}`, '--mem=200M', ...touching(400)];
    const run = spawnSync(process.execPath, [bin, 'trace', '--json', json, '--', ...srunCommand], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
    t.not(run.status, 0);
    t.is(report.diagnosis.cause, 'cgroup-oom-kill', report.diagnosis.evidence.join('\n'));
    const said = /StepId=(\d+)\.0 exceeded memory limit \((\d+) > 209715200\), being killed/.exec(run.stderr);
    t.truthy(said, run.stderr);
    jobIds.push(said![1]!);
    const used = Number(said![2]);
    t.true(used > 200 * MiB);
    t.is(
      report.diagnosis.evidence[0],
      `Slurm killed job ${said![1]} (step 0) for exceeding its memory limit: ${formatBytes(used)} (${used} B) > ` +
        `200 MiB (209715200 B) ("exceeded memory limit (${used} > 209715200), being killed")`,
    );
  },
);

test.serial('the jobs are gone and Slurm left none of their cgroups', async (t) => {
  requireSlurm(t);
  t.deepEqual(ourJobs(), []);
  for (let i = 0; i < 50 && leftoverCgroups(jobIds).length; i++) await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(leftoverCgroups(jobIds), []);
});
