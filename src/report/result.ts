// The result of `clip-mem run`: one versioned JSON object per line (JSONL). The first line describes the
// run, then one line per scenario, written and fsync'd as each scenario finishes, so a run that is killed
// keeps every finished scenario; a last line closes the run. `compare`, the Markdown and HTML reports
// all read this one model.
import * as fs from 'node:fs';
import type { Diagnosis } from '../diagnose';
import type { RunOptions } from '../scenarios/scenario';
import type { TraceFailure } from './trace-report';

/** Bumped when a field changes meaning or disappears; adding a field keeps the version. */
export const RUN_SCHEMA = 'clip-mem-run/1';

export interface Environment {
  clipMemVersion: string;
  node: string;
  platform: string;
  arch: string;
  cpus: number;
  hostname: string;
  /** /proc/meminfo MemTotal and MemAvailable at the start of the run. */
  memTotal: number | null;
  memAvailable: number | null;
  /** The limits this runner itself lives under (the children get these plus ours). */
  inherited: { as: number | null; data: number | null; cgroupMem: number | null };
}

export interface RunHeader {
  kind: 'run';
  schema: string;
  startedAt: string;
  /** The command line that reproduces this run. */
  command: string;
  options: RunOptions;
  environment: Environment;
}

/** Bytes; null where the figure could not be measured (e.g. a child killed before it reported). */
export interface MemoryFigures {
  rssBefore: number | null;
  rssAfter: number | null;
  rssPeak: number | null;
  vmSizeBefore: number | null;
  vmSizeAfter: number | null;
  vmSizePeak: number | null;
  /** The tracker's peaks: live malloc heap, anonymous mappings, file-backed mappings. */
  heapPeak: number | null;
  anonPeak: number | null;
  filePeak: number | null;
  /** The seed's "memory increase": RSS after minus RSS before the scenario's work. */
  increase: number | null;
  /**
   * What the memory cgroup charged at its peak (memory.max_usage_in_bytes / memory.peak) when the child
   * ran in one (--limit-mem): anonymous memory plus the page cache it brought in, not shared pages.
   */
  cgroupPeak?: number | null;
  /**
   * Bytes of the checkpoint already in the page cache when the scenario started (--limit-mem only): a
   * cgroup is charged for a file page by whoever brought it in, so these are missing from cgroupPeak.
   */
  checkpointCached?: number | null;
}

export const MEMORY_FIGURES: readonly (keyof MemoryFigures)[] = [
  'rssBefore',
  'rssAfter',
  'rssPeak',
  'vmSizeBefore',
  'vmSizeAfter',
  'vmSizePeak',
  'heapPeak',
  'anonPeak',
  'filePeak',
  'increase',
];

/** A failed allocation as a run reports it: the fields of `clip-mem trace --json`'s `failures[]` that runs keep. */
export type FailedAllocation = Pick<
  TraceFailure,
  'fn' | 'size' | 'errno' | 'errnoName' | 'phase' | 'vmSize' | 'vmData' | 'rss' | 'tMs' | 'stack'
>;

export interface TimelinePoint {
  tMs: number;
  rss: number;
  vmSize: number;
  heap: number | null;
  phase: string;
}

/** The memory analysis row: what the scenario needed of the resource that binds, and what it had. */
export interface MemoryAnalysis {
  /** address space (RLIMIT_AS), data segment (RLIMIT_DATA), cgroup memory, or host RAM. */
  resource: string;
  required: number | null;
  available: number | null;
  /** required - available when positive; 0 when it fitted. */
  deficit: number | null;
  /** How required was measured, e.g. "VmSize at the failure + the failed request". */
  basis: string;
  /** What else bears on the figure (e.g. pages charged to another cgroup), when something does. */
  note?: string;
}

export interface Fix {
  /** What kind of change: dtype, batch, raise-limit, malloc-arena-max, slurm-mem, load-path, calibrate (the estimate, before a batch can be proposed). */
  kind: string;
  /** One sentence with the numbers, e.g. "float16 weights need 302,554,626 B: they fit in ...". */
  text: string;
  /** The command that applies it, when there is one. */
  command?: string;
}

export type ScenarioStatus = 'passed' | 'failed';

export interface ScenarioResult {
  kind: 'scenario';
  schema: string;
  name: string;
  status: ScenarioStatus;
  wallMs: number;
  exit: { code: number | null; signal: string | null };
  timedOut: boolean;
  /** The child's own error message when it threw (e.g. "Cannot allocate memory"). */
  error: string | null;
  memory: MemoryFigures;
  failure: FailedAllocation | null;
  failureCount: number;
  lastPhase: string;
  diagnosis: Diagnosis;
  analysis: MemoryAnalysis;
  fixes: Fix[];
  /** Scenario-specific measured figures (tensors loaded, loss, logits shape, ...). */
  figures: Record<string, number | string>;
  timeline: TimelinePoint[];
  /** The command that reruns only this scenario under the same limits. */
  command: string;
}

export interface RunEnd {
  kind: 'end';
  schema: string;
  finishedAt: string;
  passed: number;
  failed: number;
  wallMs: number;
}

export interface RunResults {
  header: RunHeader;
  scenarios: ScenarioResult[];
  /** Absent when the run was killed before it finished. */
  end: RunEnd | null;
  /** The signal that stopped the run before its last scenario (not in the file: the run that got it knows). */
  stoppedBy?: NodeJS.Signals | null;
}

/** Appends the run's lines to FILE ('-': standard output), each fsync'd before the next scenario starts. */
export class ResultWriter {
  private readonly fd: number;
  private readonly toStdout: boolean;

  constructor(
    readonly file: string,
    header: RunHeader,
  ) {
    this.toStdout = file === '-';
    this.fd = this.toStdout ? 1 : fs.openSync(file, 'w');
    this.append(header);
  }

  append(line: RunHeader | ScenarioResult | RunEnd): void {
    fs.writeSync(this.fd, JSON.stringify(line) + '\n');
    // A pipe or terminal cannot be fsync'd; what was written to it is already the reader's.
    if (!this.toStdout) fs.fsyncSync(this.fd);
  }

  close(end: RunEnd): void {
    this.append(end);
    if (!this.toStdout) fs.closeSync(this.fd);
  }
}

/** Reads a results file written by ResultWriter; a run killed midway reads as its finished scenarios. */
export function readResults(file: string): RunResults {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read results file ${file}: ${(error as Error).message}`);
  }
  const lines = text.split('\n');
  let header: RunHeader | null = null;
  let end: RunEnd | null = null;
  const scenarios: ScenarioResult[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    let value: { kind?: unknown; schema?: unknown };
    try {
      value = JSON.parse(line);
    } catch {
      // A killed writer can leave a partial last line: everything before it is still good.
      if (index === lines.length - 1) return;
      throw new Error(`${file}:${index + 1}: not a JSON line; is this a \`clip-mem run --json\` file?`);
    }
    if (value.schema !== RUN_SCHEMA) {
      throw new Error(
        `${file}:${index + 1}: schema is ${JSON.stringify(value.schema)}, this clip-mem reads ${RUN_SCHEMA}`,
      );
    }
    if (value.kind === 'run') header = value as RunHeader;
    else if (value.kind === 'scenario') scenarios.push(value as ScenarioResult);
    else if (value.kind === 'end') end = value as RunEnd;
    else throw new Error(`${file}:${index + 1}: unknown kind ${JSON.stringify(value.kind)}`);
  });
  if (!header) throw new Error(`${file}: no run header line; is this a \`clip-mem run --json\` file?`);
  const options = (header as RunHeader).options as Partial<RunHeader['options']> | undefined;
  if (options && typeof options === 'object') {
    // Runs written before --jobs ran one at a time.
    options.jobs ??= 1;
    // With --jobs above 1 the lines are in the order the scenarios ended: read back in the order asked for.
    const asked = options.scenarios;
    if (Array.isArray(asked)) scenarios.sort((a, b) => asked.indexOf(a.name) - asked.indexOf(b.name));
  }
  return { header, scenarios, end };
}
