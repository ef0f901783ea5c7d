// Runs the tracker's test program: through `clip-mem trace --json` as a user would, or with the interposer
// preloaded directly to read its record.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { preloadLibrary } from '../../src/track/binaries';
import { AllocationRecord, listRecords, readRecord } from '../../src/track/record';
import type { TraceReport } from '../../src/report/trace-report';
import { repoRoot } from './paths';
import { schemaErrors } from './schema';
import { scratchDir } from './scratch';

/** The C program the tracker tests run (native/test/alloc_program.c). */
export const allocProgram = path.join(repoRoot, 'build', 'test-programs', 'alloc_program');
const bin = path.join(repoRoot, 'bin', 'clip-mem.js');

/** Throws, saying how to get it, when the C test program was not built (no C compiler at `npm install`). */
function requireAllocProgram(command: string[]): void {
  if (command[0] === allocProgram && !fs.existsSync(allocProgram))
    throw new Error(
      `${allocProgram} is not built: \`npm install\` builds it with CMake and a C compiler; install gcc (Debian: apt-get install gcc) and run npm install again`,
    );
}

export function trace(
  options: string[],
  command: string[],
  env: NodeJS.ProcessEnv = process.env,
): { status: number | null; report: TraceReport; stdout: string; stderr: string } {
  requireAllocProgram(command);
  const dir = scratchDir('clipmem-trace-test-');
  const json = path.join(dir, 'trace.json');
  const result = spawnSync(process.execPath, [bin, 'trace', ...options, '--json', json, '--', ...command], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 120000,
    env,
  });
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  // Every trace a test runs checks the JSON against its schema.
  const errors = schemaErrors('trace', report);
  if (errors) throw new Error(`trace --json breaks schema/trace.schema.json: ${errors}`);
  return { status: result.status, report, stdout: result.stdout, stderr: result.stderr };
}

/** alloc_program with the interposer preloaded and its record written into dir (which must hold one record). */
export function traceProgram(
  args: string[],
  dir: string,
): { stdout: string; stderr: string; status: number | null; record: AllocationRecord } {
  requireAllocProgram([allocProgram]);
  const run = spawnSync(allocProgram, args, {
    env: { ...process.env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir },
    encoding: 'utf8',
  });
  const records = listRecords(dir);
  if (records.length !== 1) throw new Error(`expected one record in ${dir}, found ${records.length}: ${run.stderr}`);
  return { stdout: run.stdout, stderr: run.stderr, status: run.status, record: readRecord(records[0]!.file) };
}

/** Mapping counters at each phase marker, relative to the first; reserved bytes from the sample each marker takes. */
export function byPhase(record: AllocationRecord): Record<string, { anon: number; file: number; reserved: number }> {
  const reservedAt = (index: number): number => {
    const sample = record.timeline.find((s) => s.phaseIndex === index);
    if (!sample) throw new Error(`no sample at phase ${index}`);
    return sample.reserved;
  };
  const start = record.phases[0]!;
  const out: Record<string, { anon: number; file: number; reserved: number }> = {};
  for (const p of record.phases)
    out[p.label] = {
      anon: p.anon - start.anon,
      file: p.file - start.file,
      reserved: reservedAt(p.index) - reservedAt(start.index),
    };
  return out;
}
