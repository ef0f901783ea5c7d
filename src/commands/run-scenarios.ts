// The parent of `clip-mem run`: runs each scenario in its own child under the limits asked for, follows
// it live through the tracker's record (phase and memory, several times a second), kills its process
// group at the timeout, and turns what the child reported and what the tracker recorded into one
// ScenarioResult, diagnosed, with fixes, appended to the JSONL as soon as the child is gone.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { inheritedMemoryLimit } from '../probe/cgroup';
import { known, type Limit } from '../core/field';
import { probeAddon } from '../probe/native';
import { pageCacheBytes, readHostMemory } from '../probe/proc';
import type {
  Environment,
  FailedAllocation,
  MemoryFigures,
  RunEnd,
  RunHeader,
  RunResults,
  ScenarioResult,
  TimelinePoint,
} from '../report/result';
import { RUN_SCHEMA, ResultWriter } from '../report/result';
import { thin } from '../report/svg-chart';
import type { AllocationRecord } from '../track/record';
import { CHILD_REQUEST_ENV, CHILD_RESULT_ENV, type ChildReport, type ChildRequest } from '../scenarios/child-protocol';
import { memoryAnalysis, proposeFixes } from '../report/fixes';
import { buildTraceReport, type TraceReport } from '../report/trace-report';
import { commandLine } from '../scenarios/command-line';
import { catalogEntry } from '../scenarios/catalog';
import type { RunOptions, ScenarioOptions } from '../scenarios/scenario';
import { stopSignal, traceCommand, type TraceRun } from '../track/launcher';
import { phaseLabel } from '../track/phases';

/** How often the parent reads the child's record for progress and the timeline. */
const SAMPLE_MS = 200;

export interface RunRequest {
  options: RunOptions;
  scenarioOptions: ScenarioOptions;
  /** The report options to repeat in the run's reproducible command line, e.g. " --json run.json". */
  outputs?: string;
  /** Where the JSON lines go as each scenario finishes: a file, or '-' for standard output. */
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
  /** Set on a scenario's last event: its child has ended. */
  ended?: true;
}

function packageVersion(): string {
  return (require('../../../package.json') as { version: string }).version;
}

function limitOf(value: Limit): number | null {
  return value === 'unlimited' ? null : value;
}

export function currentEnvironment(): Environment {
  const cgroupLimit = inheritedMemoryLimit();
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

/** The first real failure is the one that mattered; later ones are often the error path's own attempts. */
function failureOf(traced: TraceReport): FailedAllocation | null {
  const failure = traced.failures.find((f) => !f.injected);
  if (!failure) return null;
  const { fn, size, errno, errnoName, phase, vmSize, vmData, rss, tMs, stack } = failure;
  return { fn, size, errno, errnoName, phase, vmSize, vmData, rss, tMs, stack };
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
  // Under a cgroup limit: how much of the checkpoint is cached already, charged to whoever read it first.
  const checkpointCached =
    options.limits.mem !== undefined && catalogEntry(name).usesCheckpoint && scenarioOptions.checkpoint
      ? pageCacheBytes(scenarioOptions.checkpoint)
      : null;
  const resultFile = path.join(workDir, `${name}.json`);
  const childRequest: ChildRequest = { name, options: scenarioOptions };
  const started = performance.now();
  request.progress({ scenario: name, index, total, elapsedMs: 0, phase: 'starting', rss: null, vmSize: null });
  const run = await traceCommand({
    command: [process.execPath, path.join(__dirname, '..', 'scenarios', 'child.js')],
    limits: options.limits,
    timeoutMs: options.timeoutMs,
    env: { ...process.env, [CHILD_REQUEST_ENV]: JSON.stringify(childRequest), [CHILD_RESULT_ENV]: resultFile },
    pollMs: SAMPLE_MS,
    onRecord: (record) => {
      const last = record.timeline[record.timeline.length - 1];
      request.progress({
        scenario: name,
        index,
        total,
        elapsedMs: performance.now() - started,
        phase: phaseLabel(record, record.currentPhase),
        rss: last && last.rss >= 0 ? last.rss : null,
        vmSize: last && last.vmSize >= 0 ? last.vmSize : null,
      });
    },
  });
  const wallMs = performance.now() - started;
  request.progress({
    scenario: name,
    index,
    total,
    elapsedMs: wallMs,
    phase: 'finished',
    rss: null,
    vmSize: null,
    ended: true,
  });
  return scenarioResult(name, run, readChildReport(resultFile), request, environment, wallMs, checkpointCached);
}

/**
 * One scenario's result from its traced run and the child's own report (null when it died before
 * writing one): the diagnosis and the failure come from the trace report, as `clip-mem trace` gives them.
 */
export function scenarioResult(
  name: string,
  run: TraceRun,
  report: ChildReport | null,
  request: Pick<RunRequest, 'options' | 'scenarioOptions'>,
  environment: Environment,
  wallMs: number,
  checkpointCached: number | null = null,
): ScenarioResult {
  const { options, scenarioOptions } = request;
  const record = run.record ?? null;
  const timeline: TimelinePoint[] = (record?.timeline ?? [])
    .filter((s) => s.rss >= 0 && s.vmSize >= 0)
    .map((s) => ({
      tMs: (s.timeNs - record!.startNs) / 1e6,
      rss: s.rss,
      vmSize: s.vmSize,
      heap: s.heap,
      phase: phaseLabel(record!, s.phaseIndex),
    }));
  // The child reports a caught error (e.g. a runtime's dlopen message) in its report, not on stderr.
  const traced = buildTraceReport(run, { reportedError: report?.error, heapProfile: 'diagnosis' });
  const status =
    run.exit.code === 0 && !run.timedOut && report !== null && report.finished && report.error === null
      ? 'passed'
      : 'failed';
  const memory = {
    ...memoryFigures(report, record, timeline),
    cgroupPeak: run.cgroup?.peak ?? null,
    checkpointCached,
  };
  const output = `${run.stderrTail}\n${run.stdoutTail}`;
  const diagnosis = traced.diagnosis;
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
    failure: failureOf(traced),
    failureCount: traced.failuresTotal,
    lastPhase: traced.last?.phase ?? '',
    diagnosis: status === 'passed' ? { cause: 'none', evidence: diagnosis.evidence } : diagnosis,
    analysis: { resource: '', required: null, available: null, deficit: null, basis: '' },
    fixes: [],
    figures: report
      ? {
          ...report.figures,
          mallocArenaHeaps: report.mallocArenaHeaps,
          mallocArenaHeapsBefore: report.mallocArenaHeapsBefore,
          otherThreadsBefore: report.otherThreadsBefore,
        }
      : {},
    timeline: thin(timeline, 400),
    command: commandLine([name], options),
  };
  result.analysis = memoryAnalysis(result, options, environment);
  result.fixes = proposeFixes(result, options, scenarioOptions);
  return result;
}

function lastLines(text: string): string | null {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.length ? lines.slice(-3).join(' | ').slice(0, 1000) : null;
}

/**
 * Runs the scenarios one after another, or `options.jobs` at a time with the longest first (catalog
 * `typicalSeconds`); a failing one never stops the rest. Each result is appended to the JSON lines as
 * its child ends; the results come back in the order asked for.
 */
export async function runScenarios(request: RunRequest): Promise<RunResults> {
  const header: RunHeader = {
    kind: 'run',
    schema: RUN_SCHEMA,
    startedAt: new Date().toISOString(),
    command: commandLine(request.options.scenarios, request.options, request.outputs),
    options: request.options,
    environment: currentEnvironment(),
  };
  const writer = request.jsonFile ? new ResultWriter(request.jsonFile, header) : null;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-run-'));
  const started = performance.now();
  const names = request.options.scenarios;
  const { jobs } = request.options;
  const queue =
    jobs > 1 ? [...names].sort((a, b) => catalogEntry(b).typicalSeconds - catalogEntry(a).typicalSeconds) : [...names];
  const finished = new Map<string, ScenarioResult>();
  let failure: unknown;
  // Each lane takes the next scenario until none is left, clip-mem is told to stop, or another lane failed.
  const lane = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined && !stopSignal() && !failure; name = queue.shift()) {
      try {
        const result = await runOne(name, request, header.environment, workDir, names.indexOf(name) + 1, names.length);
        if (stopSignal()) return; // killed by us (clip-mem was told to stop): not a result
        finished.set(name, result);
        writer?.append(result);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  try {
    // Every lane ends before the work directory goes: a failed lane does not leave the others' children behind.
    await Promise.all(Array.from({ length: Math.min(jobs, names.length) }, lane));
    if (failure) throw failure;
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  const scenarios = names.filter((name) => finished.has(name)).map((name) => finished.get(name)!);
  const stoppedBy = stopSignal();
  if (stoppedBy) return { header, scenarios, end: null, stoppedBy };
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
  return { header, scenarios, end, stoppedBy: null };
}
