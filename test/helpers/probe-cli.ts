// Runs `clip-mem native-probe` as a real child process (optionally under prlimit or another wrapper).
import Ajv from 'ajv';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeProbeReport } from '../../src/probe/probe';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
export const stubGpuLibrary = path.join(repoRoot, 'build', 'Release', 'libclipmem_stub_gpu.so');

const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, 'schema', 'native-probe.schema.json'), 'utf8'));
const validate = new Ajv({ allErrors: true }).compile(schema);

/** Schema errors of a report, as one string ('' when valid). */
export function schemaErrors(report: unknown): string {
  return validate(report) ? '' : JSON.stringify(validate.errors, null, 1);
}

export interface ProbeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `[...wrapper, node, bin, native-probe, ...args]` with `env` added to this environment. */
export function runNativeProbe(
  args: string[],
  options: { wrapper?: string[]; env?: NodeJS.ProcessEnv } = {},
): ProbeRun {
  const command = [...(options.wrapper ?? []), process.execPath, bin, 'native-probe', ...args];
  const result = spawnSync(command[0]!, command.slice(1), {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, ...options.env },
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs with --json and parses the report; fails loudly with stderr when the run failed. */
export function probeJson(
  args: string[] = [],
  options: { wrapper?: string[]; env?: NodeJS.ProcessEnv } = {},
): NativeProbeReport {
  const run = runNativeProbe(['--json', ...args], options);
  if (run.status !== 0) throw new Error(`native-probe exited ${run.status}: ${run.stderr}`);
  return JSON.parse(run.stdout) as NativeProbeReport;
}
