// clip-mem under a real Slurm (the one-node cluster of scripts/slurm-cluster): inside a job, native-probe
// names the job and its request, trace names the job's cgroup kill as Slurm's with the --mem that fits
// (and a rerun at that --mem passes), and Slurm's other enforcement (OverMemoryKill) is recognised.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { SlurmExplanation } from '../src/commands/slurm-explain';
import { formatBytes } from '../src/core/units';
import type { TraceReport } from '../src/report/trace-report';
import { repoRoot } from './helpers/paths';
import { poolWithWorkerTouching } from './helpers/python-jobs';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';
import { JOB_NAME, leftoverCgroups, ourJobs, requireSlurm, srun } from './helpers/slurm';

const MiB = 2 ** 20;
const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
/** A program that touches `mib` MiB (bytes filled with 1s: every page written). */
const touching = (mib: number, holdSeconds = 0) => [
  'python3',
  '-c',
  `import time; b = b"\\x01" * (${mib} << 20); print("touched", len(b) >> 20, "MiB"); time.sleep(${holdSeconds})`,
];
const jobIds: string[] = [];

/** clip-mem slurm explain JOBID --json -, checked against its schema. */
function explainJob(jobId: string, options: string[]): SlurmExplanation {
  const run = spawnSync(process.execPath, [bin, 'slurm', 'explain', jobId, ...options, '--json', '-'], {
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`slurm explain ${jobId} exited ${run.status}: ${run.stderr}`);
  const explanation = JSON.parse(run.stdout) as SlurmExplanation;
  const errors = schemaErrors('slurm-explain', explanation);
  if (errors) throw new Error(`slurm explain --json breaks schema/slurm-explain.schema.json: ${errors}`);
  return explanation;
}

test('slurm explain: a job id that is not one, or a --trace that is not a trace report, is a usage error (exit 2)', (t) => {
  const cases: [string[], RegExp][] = [
    [['slurm', 'explain', 'abc'], /^clip-mem: slurm explain: give a job id \(digits, e.g. 15\), not "abc"/],
    [['slurm', 'explain', '15', '--trace', '/nonexistent.json'], /^clip-mem: --trace \/nonexistent.json: no such file/],
    [
      ['slurm', 'explain', '15', '--trace', path.join(repoRoot, 'package.json')],
      /^clip-mem: --trace .*package.json: not a clip-mem trace --json report/,
    ],
    [
      ['slurm', 'frobnicate', '15'],
      /^clip-mem: Invalid values:\s+Argument: action, Given: "frobnicate", Choices: "explain"/,
    ],
  ];
  for (const [argv, message] of cases) {
    const run = spawnSync(process.execPath, [bin, ...argv], { encoding: 'utf8' });
    t.is(run.status, 2, argv.join(' '));
    t.regex(run.stderr, message);
  }
});

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

test.serial('native-probe --cluster: a row per node, probed in a job step there', (t) => {
  requireSlurm(t);
  const node = os.hostname().split('.')[0]!;
  const run = spawnSync(process.execPath, [bin, 'native-probe', '--cluster', '--partition', 'debug', '--json', '-'], {
    encoding: 'utf8',
  });
  t.is(run.status, 0, run.stderr);
  const cluster = JSON.parse(run.stdout);
  t.is(schemaErrors('native-probe-cluster', cluster), '');
  t.is(cluster.partition, 'debug');
  t.deepEqual(cluster.differences, []);
  t.is(cluster.nodes.length, 1);
  const row = cluster.nodes[0];
  // The probe job has no --mem: the cluster's DefMemPerCPU=1024 for its one CPU, enforced by its cgroup.
  t.like(row, {
    node,
    error: null,
    request: '--mem-per-cpu=1024M',
    jobCgroupLimit: 1024 * MiB,
    rlimitAs: 'unlimited',
    gpus: 0,
  });
  t.is(schemaErrors('native-probe', row.report), '');
  t.is(row.memTotal, row.report.host.memTotal);
  const text = spawnSync(process.execPath, [bin, 'native-probe', '--cluster'], { encoding: 'utf8' }).stdout;
  t.regex(
    text,
    /^node +request +job cgroup +RLIMIT_AS +RLIMIT_DATA +MemTotal +MemAvailable +GPUs +binds first +headroom$/m,
  );
  t.regex(text, new RegExp(`^${node} +--mem-per-cpu=1024M +1\\.00 GiB +unlimited +unlimited `, 'm'));
  t.regex(text, /\(one node: nothing to compare\)/);
});

test.serial(
  "srun --mem=400M clip-mem trace -- a pool whose worker is OOM-killed: the job's kill, and a --mem fix that does not size the tree from the program alone",
  (t) => {
    requireSlurm(t);
    const json = path.join(scratchDir('clipmem-slurm-'), 'trace.json');
    const pool = poolWithWorkerTouching(600);
    const run = srun(['--mem=400M'], [process.execPath, bin, 'trace', '--json', json, '--', 'python3', '-c', pool]);
    t.not(run.status, 0);
    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
    t.is(schemaErrors('trace', report), '');
    jobIds.push(report.slurm!.jobId);
    if (report.kernelLog !== undefined) return t.log(`kernel log unreadable: ${report.kernelLog}`);
    t.is(report.diagnosis.cause, 'cgroup-oom-kill', report.diagnosis.evidence.join('\n'));
    t.regex(report.diagnosis.evidence[0]!, /^exited with code 1 because a process it started was killed/);
    t.regex(
      report.diagnosis.evidence[1]!,
      new RegExp(
        `^pid \\d+ \\(python3.*\\) was killed by the kernel OOM killer in the cgroup of Slurm job ${report.slurm!.jobId} \\(step 0\\), --mem=400M`,
      ),
    );
    t.is(report.fix!.needAtLeast, 400 * MiB + 1);
    t.regex(report.fix!.text, /--mem=400M was not enough for the step's processes together: pid \d+ \(python3\)/);
    t.regex(report.fix!.text, /ask for --mem above 400M; how much more is not known from one run$/);
  },
);

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
    // slurm explain says the same after the fact, and its --mem passes on a rerun.
    const explain = explainJob(job.jobId, ['--trace', json]);
    t.is(
      explain.summary,
      `Slurm job ${job.jobId} (clipmem-test) ran out of its memory request --mem=300M: step 0 killed for it; the job ended OUT_OF_MEMORY`,
    );
    const step0 = explain.steps.find((s) => s.stepId === '0')!;
    t.is(step0.cause, 'cgroup-oom-kill');
    t.true(
      step0.evidence.some((e) => /^kernel log: pid \d+ \(python3\) killed by the OOM killer in cgroup \/slurm/.test(e)),
      step0.evidence.join('\n'),
    );
    t.true(step0.evidence.includes("slurmd log: slurmstepd detected 1 OOM kill(s) in the step's cgroup"));
    t.true(step0.evidence.includes(`clip-mem trace: ${report.diagnosis.evidence[0]}`));
    t.deepEqual(explain.recommend.request, `--mem=${mem}M`);
    t.like(
      explain.sources.find((s) => s.source === 'sacct -c'),
      {
        read: true,
        note: 'sacct: Slurm accounting storage is disabled; the completion log gives state and exit code only',
      },
    );
    const rerun = srun([`--mem=${mem}M`], touching(600));
    t.is(rerun.status, 0, rerun.stderr);
    t.regex(rerun.stdout, /touched 600 MiB/);
    // Without the trace report: the missing source is named, and no figure is made up.
    const bare = explainJob(job.jobId, []);
    t.is(bare.recommend.request, null);
    t.like(
      bare.sources.find((s) => s.source === 'clip-mem trace report'),
      { read: false },
    );
  },
);

test.serial(
  "run --slurm --mem 1500M clip-train: CLIP ViT-B/32's training step in a job, its OOM named as the Slurm job's",
  (t) => {
    requireSlurm(t);
    // The synthetic checkpoint made first, outside the job: writing it would charge its page cache there.
    t.is(spawnSync(process.execPath, [bin, 'checkpoint', 'vit-b-32'], { encoding: 'utf8' }).status, 0);
    const json = path.join(scratchDir('clipmem-slurm-'), 'run.jsonl');
    const args = ['run', '--slurm', '--mem', '1500M', 'clip-train', '--timeout', '300'];
    const run = spawnSync(process.execPath, [bin, ...args, '--json', json], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 400_000,
    });
    t.is(run.status, 1, run.stderr);
    const node = os.hostname().split('.')[0]!;
    const jobId = new RegExp(`^clip-mem run --slurm: in Slurm job (\\d+) on ${node}$`, 'm').exec(run.stderr)?.[1];
    t.truthy(jobId, run.stderr);
    jobIds.push(jobId!);
    t.regex(
      run.stderr,
      new RegExp(
        `^clip-mem run --slurm: Slurm job ${jobId} on ${node}, --mem=1500M: OUT_OF_MEMORY \\(exit 0:125\\)`,
        'm',
      ),
    );
    const scenario = fs
      .readFileSync(json, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line))
      .find((r) => r.kind === 'scenario');
    t.is(scenario.name, 'clip-train');
    t.is(scenario.diagnosis.cause, 'cgroup-oom-kill');
    t.is(
      scenario.diagnosis.evidence[0],
      `killed by the kernel OOM killer in the cgroup of Slurm job ${jobId} (step 0), --mem=1500M`,
    );
    t.regex(run.stdout, /0 passed, 1 failed/);
  },
);

test.serial(
  'run --slurm --nodes 1: a run per node, each writing its own results, and the cluster report side by side',
  (t) => {
    requireSlurm(t);
    const dir = scratchDir('clipmem-slurm-');
    const args = [
      'run',
      '--slurm',
      '--nodes',
      '1',
      'clip-load',
      '--model',
      'tiny',
      '--json',
      path.join(dir, 'run.jsonl'),
    ];
    const run = spawnSync(process.execPath, [bin, ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 180_000 });
    t.is(run.status, 0, run.stderr);
    const node = os.hostname().split('.')[0]!;
    const jobId = new RegExp(`^clip-mem run --slurm: in Slurm job (\\d+) on ${node}$`, 'm').exec(run.stderr)?.[1];
    t.truthy(jobId, run.stderr);
    jobIds.push(jobId!);
    // Each node's results under its own name; the report reads them back.
    const file = path.join(dir, `run.${node}.jsonl`);
    const lines = fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    t.is(lines.find((l) => l.kind === 'scenario').status, 'passed');
    t.regex(
      run.stdout,
      new RegExp(
        `^clip-mem run --slurm: cluster report, Slurm job ${jobId}, 1 node\\(s\\)\\n` +
          ` {2}node +RLIMIT_AS +cgroup memory +run +clip-load\\n` +
          ` {2}${node} +unlimited +\\S+( \\w+)? +1 passed, 0 failed +passed\\n {2}${node}: ${file.replace(/[.]/g, '\\.')}\\n$`,
        'm',
      ),
    );
    // More nodes than the partition has: refused before anything is queued (srun would wait for ever).
    const more = spawnSync(process.execPath, [bin, 'run', '--slurm', '--nodes', '2', 'clip-load'], {
      encoding: 'utf8',
    });
    t.is(more.status, 2);
    t.regex(more.stderr, /^clip-mem: --nodes: 2 is more than the 1 node\(s\) of partition \(the default\)$/m);
  },
);

test.serial('fit --for slurm -- a ~400 MiB program: the --mem that passes under srun, one step below failing', (t) => {
  requireSlurm(t);
  const command = touching(400);
  const run = spawnSync(
    process.execPath,
    [bin, 'fit', '--for', 'slurm', '--runs', '1', '--step', '8M', '--json', '-', '--', ...command],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 240_000,
    },
  );
  t.is(run.status, 0, run.stderr);
  const fit = JSON.parse(run.stdout);
  t.is(schemaErrors('fit', fit), '');
  t.is(fit.limitRuns, 'srun --mem=X on the Slurm cluster');
  t.is(fit.outcome, 'found');
  t.is(fit.passes - fit.fails, 8 * MiB);
  t.true(fit.passes >= 400 * MiB && fit.passes <= 480 * MiB, `passes at ${fit.passes}`);
  t.is(fit.passes % MiB, 0, 'srun takes whole MiB');
  const failed = fit.runs.filter((r: { passed: boolean }) => !r.passed);
  t.true(failed.length > 0);
  for (const r of failed) {
    t.is(r.cause, 'cgroup-oom-kill');
    t.regex(r.evidence[0], /^slurmstepd reports 1 OOM kill\(s\) in Slurm job \d+ \(step 0\)/);
  }
  t.deepEqual(fit.say, [`sbatch --mem=${fit.recommended / MiB}M`, `srun --mem=${fit.recommended / MiB}M`]);
  t.regex(run.stderr, /clip-mem fit: run 1 of at most \d+/);
  // What it says to ask for passes under srun.
  const again = srun([`--mem=${fit.recommended / MiB}M`], command);
  t.is(again.status, 0, again.stderr);
});

test.serial(
  'OverMemoryKill (no cgroups): "exceeded memory limit (A > B), being killed" is Slurm killing the job at --mem',
  (t) => {
    requireSlurm(t, 'over-memory-kill');
    const json = path.join(scratchDir('clipmem-slurm-'), 'trace.json');
    // Held for 5 s: Slurm samples the job's memory once a second (JobAcctGatherFrequency=1), and a program that
    // is done sooner can end between two samples unkilled.
    const srunCommand = ['srun', `--job-name=${JOB_NAME}`, '--mem=200M', ...touching(400, 5)];
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
    const explain = explainJob(said![1]!, []);
    t.is(explain.steps.find((s) => s.stepId === '0')?.cause, 'cgroup-oom-kill');
    t.is(explain.recommend.request, `--mem=${Math.ceil(used / MiB) + 1}M`);
  },
);

test.serial('the jobs are gone and Slurm left none of their cgroups', async (t) => {
  requireSlurm(t);
  t.deepEqual(ourJobs(), []);
  for (let i = 0; i < 50 && leftoverCgroups(jobIds).length; i++) await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(leftoverCgroups(jobIds), []);
});
