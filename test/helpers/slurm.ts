// The Slurm tests run on the one-node cluster of scripts/slurm-cluster (docs/slurm.md): used when it is
// running, started when it is not (and stopped again at the end), never skipped: without Slurm they fail
// saying how to install it. Every job they submit is named JOB_NAME, so that the end cancels exactly those.
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './paths';
import { requireProgram } from './require-program';

export const slurmScript = path.join(repoRoot, 'scripts', 'slurm-cluster');
export const JOB_NAME = 'clipmem-test';
const install = 'apt-get install --no-install-recommends slurm-wlm munge, then scripts/slurm-cluster start';

let startedHere = false;
let modeChanged = false;

function script(args: string[]): { status: number | null; output: string } {
  const run = spawnSync(slurmScript, args, { encoding: 'utf8', timeout: 120_000 });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

/** The cluster's enforcement now: "cgroup", "over-memory-kill", or '' when not running. */
export function clusterMode(): string {
  const status = script(['status']);
  return status.status === 0 ? (/^mode\s+(\S+)/m.exec(status.output)?.[1] ?? '') : '';
}

/** Fails the test (and throws) unless a Slurm cluster in `mode` takes jobs, starting it through the script. */
export function requireSlurm(t: ExecutionContext, mode: 'cgroup' | 'over-memory-kill' = 'cgroup'): void {
  for (const program of ['srun', 'scontrol', 'slurmctld', 'slurmd', 'munged']) requireProgram(t, program, install);
  const now = clusterMode();
  if (now === mode) return;
  if (now === '') startedHere = true;
  else modeChanged = true;
  const started = script(['start', ...(mode === 'over-memory-kill' ? ['--over-memory-kill'] : [])]);
  if (started.status !== 0) {
    const message = `scripts/slurm-cluster start failed (exit ${started.status}): ${started.output.trim()}`;
    t.fail(message);
    throw new Error(message);
  }
}

/** srun with this file's job name; output and status as spawnSync gives them. */
export function srun(
  options: string[],
  command: string[],
  env: NodeJS.ProcessEnv = process.env,
): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync('srun', [`--job-name=${JOB_NAME}`, ...options, ...command], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 180_000,
    env,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** This file's jobs still queued or running. */
export function ourJobs(): string[] {
  const run = spawnSync('squeue', ['-h', '--name', JOB_NAME, '-o', '%i'], { encoding: 'utf8' });
  return run.status === 0 ? run.stdout.split('\n').filter(Boolean) : [];
}

/** The memory cgroups Slurm still has for these jobs (it removes them when a job ends). */
export function leftoverCgroups(jobIds: string[]): string[] {
  const left: string[] = [];
  for (const top of fs.readdirSync('/sys/fs/cgroup/memory').filter((name) => name.startsWith('slurm'))) {
    const base = path.join('/sys/fs/cgroup/memory', top);
    for (const uid of fs.readdirSync(base).filter((name) => name.startsWith('uid_'))) {
      for (const id of jobIds)
        if (fs.existsSync(path.join(base, uid, `job_${id}`))) left.push(path.join(base, uid, `job_${id}`));
    }
  }
  return left;
}

test.after.always("cancel this file's jobs; the cluster back as it was", () => {
  spawnSync('scancel', ['--name', JOB_NAME]);
  if (startedHere) script(['stop']);
  else if (modeChanged) script(['start']);
});
