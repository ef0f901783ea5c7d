// Runs `clip-mem trace --json` on a command, as a user would, and returns its JSON report.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TraceReport } from '../../src/track/report';
import { repoRoot } from './paths';

/** The C program the tracker tests run (native/test/alloc_program.c). */
export const allocProgram = path.join(repoRoot, 'build', 'test-programs', 'alloc_program');
const bin = path.join(repoRoot, 'bin', 'clip-mem.js');

export function trace(options: string[], command: string[]): { status: number | null; report: TraceReport; stdout: string; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipmem-trace-test-'));
  const json = path.join(dir, 'trace.json');
  const result = spawnSync(process.execPath, [bin, 'trace', ...options, '--json', json, '--', ...command], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 120000,
  });
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  fs.rmSync(dir, { recursive: true });
  return { status: result.status, report, stdout: result.stdout, stderr: result.stderr };
}
