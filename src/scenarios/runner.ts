// The parent of `clip-mem run`: runs each scenario in its own child under the limits asked for, follows
// it live through the tracker's record (phase and memory, several times a second), kills its process
// group at the timeout, and turns what the child reported and what the tracker recorded into one
// ScenarioResult, diagnosed, with fixes, appended to the JSONL as soon as the child is gone.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCgroups } from '../probe/cgroup';
import { known, type Limit } from '../probe/field';
import { probeAddon } from '../probe/native';
import { readHostMemory } from '../probe/proc';
import type {
  Environment,
  FailedAllocation,
  MemoryFigures,
  RunEnd,
  RunHeader,
  RunOptions,
  RunResults,
  ScenarioResult,
  TimelinePoint,
} from '../report/result';
import { RUN_SCHEMA, ResultWriter } from '../report/result';
import type { AllocationRecord } from '../track/record';
import { CHILD_REQUEST_ENV, CHILD_RESULT_ENV, type ChildReport, type ChildRequest } from './child-protocol';
import { diagnose, errnoName } from '../diagnose';
import { traceCommand } from '../track/launcher';
import type { ScenarioOptions } from './scenario';
import { proposeFixes, memoryAnalysis } from '../diagnose/fixes';

/** How often the parent reads the child's record for progress and the timeline. */
const SAMPLE_MS = 200;

export interface RunRequest {
  options: RunOptions;
  scenarioOptions: ScenarioOptions;
  /** The command line that reproduces the run, and the one for a single scenario. */
  command: string;
  scenarioCommand(name: string): string;
  jsonFile?: string;
  /** Live progress, several times a second while a child runs. */
  progress(event: ProgressEvent): void;
}

export interface ProgressEvent {
  scenario: string;
  index: number;
  total: number;
  elapsedMs: number;
  phase: string;
  /** From the tracker's record; null until the child has loaded the tracker. */
  rss: number | null;
  vmSize: number | null;
}

function packageVersion(): string {
  return (require('../../../package.json') as { version: string }).version;
}

function limitOf(value: Limit): number | null {
  return value === 'unlimited' ? null : value;
}

export function currentEnvironment(): Environment {
  const tightest = readCgroups().tightest;
  const cgroupLimit = tightest ? limitOf(known(tightest.limit) ?? 'unlimited') : null;
  const host = readHostMemory();
  const rlimits = probeAddon().readResourceLimits();
  return {
    clipMemVersion: packageVersion(),
    node: process.version,
    platform: process.platform,
    arch: process.arch,
    cpus: os.cpus().length,
    hostname: os.hostname(),
    memTotal: known(host.memTotal) ?? null,
    memAvailable: known(host.memAvailable) ?? null,
    inherited: { as: limitOf(rlimits.as.soft), data: limitOf(rlimits.data.soft), cgroupMem: cgroupLimit },
  };
}

function readChildReport(file: string): ChildReport | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ChildReport;
  } catch {
    return null;
  }
}

function failureOf(record: AllocationRecord | null): FailedAllocation | null {
  // The first real failure is the one that mattered; later ones are often the error path's own attempts.
  const failure = record?.failures.find((f) => !f.injected);
  if (!record || !failure) return null;
  const known = (v: number) => (v < 0 ? null : v);
  return {
    fn: failure.fn,
    size: failure.size,
    errno: failure.errno,
    errnoName: errnoName(failure.errno),
    phase: failure.phase,
    vmSize: known(failure.vmSize),
    vmData: known(failure.vmData),
    rss: known(failure.rss),
    tMs: (failure.timeNs - record.startNs) / 1e6,
    stack: failure.stack.map(
      (frame) => frame.symbol ?? (frame.module ? `${path.basename(frame.module)}+${frame.offset}` : frame.address),
    ),
  };
}

function memoryFigures(
  report: ChildReport | null,
  record: AllocationRecord | null,
  timeline: TimelinePoint[],
): MemoryFigures {
  const c = record?.counters;
  const measured = (value: number | undefined) => (value !== undefined && value >= 0 ? value : null);
  const sampledMax = (key: 'rss' | 'vmSize') => (timeline.length ? Math.max(...timeline.map((p) => p[key])) : null);
  // The child's own reading of the kernel's high-water marks when it lived to report, else the tracker's.
  const peak = (own: number | undefined, tracked: number | undefined, key: 'rss' | 'vmSize') =>
    measured(own) ?? (tracked !== undefined && tracked > 0 ? tracked : sampledMax(key));
  const rssBefore = measured(report?.rssBefore);
  const rssAfter = measured(report?.rssAfter);
  return {
    rssBefore,
    rssAfter,
    rssPeak: peak(report?.rssPeak, c?.rssPeak, 'rss'),
    vmSizeBefore: measured(report?.vmSizeBefore),
    vmSizeAfter: measured(report?.vmSizeAfter),
    vmSizePeak: peak(report?.vmSizePeak, c?.vmPeak, 'vmSize'),
    heapPeak: c?.heapPeak ?? null,
    anonPeak: c?.anonPeak ?? null,
    filePeak: c?.filePeak ?? null,
    increase: rssBefore !== null && rssAfter !== null ? rssAfter - rssBefore : null,
  };
}

async function runOne(
  name: string,
  request: RunRequest,
  environment: Environment,
  workDir: string,
  index: number,
  total: number,
): Promise<ScenarioResult> {
  const { options, scenarioOptions } = request;
  const resultFile = path.join(workDir, `${name}.json`);
  const childRequest: ChildRequest = { name, options: scenarioOptions };
  const started = performance.now();
  request.progress({ scenario: name, index, total, elapsedMs: 0, phase: 'starting', rss: null, vmSize: null });
  const run = await traceCommand({
    command: [process.execPath, path.join(__dirname, 'child.js')],
    limits: options.limits,
    timeoutMs: options.timeoutMs,
    env: { ...process.env, [CHILD_REQUEST_ENV]: JSON.stringify(childRequest), [CHILD_RESULT_ENV]: resultFile },
    pollMs: SAMPLE_MS,
    onRecord: (record) => {
      activePid = record.pid;
      if (stopRequested) killGroup(record.pid);
      const last = record.timeline[record.timeline.length - 1];
      request.progress({
        scenario: name,
        index,
        total,
        elapsedMs: performance.now() - started,
        phase: phaseOf(record, record.currentPhase),
        rss: last && last.rss >= 0 ? last.rss : null,
        vmSize: last && last.vmSize >= 0 ? last.vmSize : null,
      });
    },
  });
  activePid = null;
  const wallMs = performance.now() - started;
  const record = run.record ?? null;
  const timeline: TimelinePoint[] = (record?.timeline ?? [])
    .filter((s) => s.rss >= 0 && s.vmSize >= 0)
    .map((s) => ({
      tMs: (s.timeNs - record!.startNs) / 1e6,
      rss: s.rss,
      vmSize: s.vmSize,
      heap: s.heap,
      phase: phaseOf(record!, s.phaseIndex),
    }));
  const lastPhase = record ? phaseOf(record, record.currentPhase) : '';
  const report = readChildReport(resultFile);
  const failure = failureOf(record);
  const status =
    run.exit.code === 0 && !run.timedOut && report !== null && report.finished && report.error === null
      ? 'passed'
      : 'failed';
  const memory = { ...memoryFigures(report, record, timeline), cgroupPeak: run.cgroup?.peak ?? null };
  const output = `${run.stderrTail}\n${run.stdoutTail}`;
  const last = record?.timeline[record.timeline.length - 1];
  const diagnosis = diagnose({
    exit: run.exit,
    limits: options.limits,
    failures: record?.failures ?? [],
    cgroup: run.cgroup && {
      path: run.cgroup.path,
      limit: run.cgroup.limit,
      oomKills: run.cgroup.oomKills,
      peak: run.cgroup.peak,
    },
    hostOomKills: run.hostOomKills,
    // The child reports a caught error (e.g. a runtime's dlopen message) in its report, not on stderr.
    output: report?.error ? `${output}\n${report.error}` : output,
    filePeak: record?.counters.filePeak,
    last: record
      ? {
          phase: lastPhase,
          heap: record.counters.heapCurrent,
          rss: last?.rss,
          anon: record.counters.anonMapped,
          file: record.counters.fileMapped,
        }
      : undefined,
    notTracked: run.notTracked,
  });
  if (run.timedOut)
    diagnosis.evidence.unshift(`killed with its process group after the ${options.timeoutMs / 1000} s timeout`);
  const result: ScenarioResult = {
    kind: 'scenario',
    schema: RUN_SCHEMA,
    name,
    status,
    wallMs,
    exit: run.exit,
    timedOut: run.timedOut,
    error: report?.error ?? (status === 'failed' ? lastLines(output) : null),
    memory,
    failure,
    failureCount: record?.failuresTotal ?? 0,
    lastPhase,
    diagnosis: status === 'passed' ? { cause: 'none', evidence: diagnosis.evidence } : diagnosis,
    analysis: { resource: '', required: null, available: null, deficit: null, basis: '' },
    fixes: [],
    figures: report ? { ...report.figures, mallocArenaHeaps: report.mallocArenaHeaps } : {},
    timeline: thin(timeline, 400),
    command: request.scenarioCommand(name),
  };
  result.analysis = memoryAnalysis(result, options, environment);
  result.fixes = proposeFixes(result, options, scenarioOptions);
  return result;
}

function phaseOf(record: AllocationRecord, index: number): string {
  return record.phases.filter((p) => p.index <= index).pop()?.label ?? '';
}

function lastLines(text: string): string | null {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.length ? lines.slice(-3).join(' | ').slice(0, 1000) : null;
}

/** At most `max` points, evenly spread, always keeping the last (where a failure shows). */
function thin(points: TimelinePoint[], max: number): TimelinePoint[] {
  if (points.length <= max) return points;
  const step = points.length / max;
  const kept = Array.from({ length: max - 1 }, (_, i) => points[Math.floor(i * step)]);
  kept.push(points[points.length - 1]);
  return kept;
}

/**
 * A signal to the runner kills the running child's process group (the tracker's launcher then removes its
 * cgroup) and stops before the next scenario; the JSONL keeps every scenario that finished.
 */
let activePid: number | null = null;
let stopRequested: NodeJS.Signals | null = null;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function stopOnSignal(signal: NodeJS.Signals): void {
  stopRequested = signal;
  if (activePid !== null) killGroup(activePid);
}

const signalExitCode = (signal: NodeJS.Signals) => 128 + (os.constants.signals[signal] ?? 15);

/** Runs the scenarios one after another; a failing one never stops the rest. */
export async function runScenarios(request: RunRequest): Promise<RunResults> {
  const header: RunHeader = {
    kind: 'run',
    schema: RUN_SCHEMA,
    startedAt: new Date().toISOString(),
    command: request.command,
    options: request.options,
    environment: currentEnvironment(),
  };
  const writer = request.jsonFile ? new ResultWriter(request.jsonFile, header) : null;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-run-'));
  const started = performance.now();
  const scenarios: ScenarioResult[] = [];
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.on(signal, stopOnSignal);
  try {
    const names = request.options.scenarios;
    for (const [i, name] of names.entries()) {
      const result = await runOne(name, request, header.environment, workDir, i + 1, names.length);
      if (stopRequested) break; // killed by us: not a result
      scenarios.push(result);
      writer?.append(result);
    }
  } finally {
    for (const signal of signals) process.off(signal, stopOnSignal);
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  if (stopRequested) {
    process.stderr.write(
      `\nclip-mem run: stopped by ${stopRequested} after ${scenarios.length} scenario(s); those are in the --json file\n`,
    );
    process.exit(signalExitCode(stopRequested));
  }
  const failed = scenarios.filter((s) => s.status === 'failed').length;
  const end: RunEnd = {
    kind: 'end',
    schema: RUN_SCHEMA,
    finishedAt: new Date().toISOString(),
    passed: scenarios.length - failed,
    failed,
    wallMs: performance.now() - started,
  };
  writer?.close(end);
  return { header, scenarios, end };
}
