// `clip-mem fit -- <command>`: the smallest limit a user's own command needs, proven by runs. The command
// runs without a limit first (its peaks say where to look and how much they vary), then a bisection over
// limits in steps finds the smallest that passes, with the one a step below failing, each run traced and
// diagnosed like `trace` does. The same search and loop (searchByRuns) serve the CLIP `fit --verify`.
import { known } from '../core/field';
import type { Limits } from '../core/limits';
import { formatBytes } from '../core/units';
import type { Cause } from '../diagnose';
import { maxSearchRuns, searchByRuns } from '../estimate/fit';
import { readHostMemory } from '../probe/proc';
import { slurmReachable } from '../probe/slurm';
import { buildTraceReport, type TraceReport } from '../report/trace-report';
import { traceCommand, type TraceRun } from '../track/launcher';

/** What the limit is for: RLIMIT_AS, RLIMIT_DATA, a memory cgroup, or Slurm's --mem (a cgroup too). */
export const FIT_TARGETS = ['mem', 'as', 'data', 'slurm'] as const;
export type FitTarget = (typeof FIT_TARGETS)[number];

/** Bumped when a field of `fit --json -- <command>` changes meaning or disappears (schema/fit.schema.json). */
export const FIT_COMMAND_SCHEMA = 'clip-mem-fit-command/1';

const MiB = 2 ** 20;

export interface CommandFitRequest {
  command: string[];
  target: FitTarget;
  /** The largest limit to try; default: twice the peak measured without a limit. */
  max?: number;
  /** The bisection's resolution; default: the peak / 256, at least 1 MiB, in whole MiB. */
  step?: number;
  /** Runs without a limit, to measure how much the peak varies. */
  runs: number;
  /** Each run's timeout; default: 5 x the slowest run without a limit, at least 30 s. */
  timeoutMs?: number;
  /** What counts as passing (default: exit 0). */
  passIf: PassRule;
  progress: (line: string) => void;
}

/**
 * When a run passes: its exit code is one of `exitCodes`, and every text of `output` appears in its
 * standard output or error (a line a training script prints when it finished, say). A timeout never passes.
 */
export interface PassRule {
  exitCodes: number[];
  output: string[];
}

/** `--pass-if exit=0,3` and `--pass-if output=TEXT`, each repeatable; nothing given: exit 0. */
export function parsePassRules(rules: string[]): PassRule {
  const rule: PassRule = { exitCodes: [], output: [] };
  for (const text of rules) {
    const exit = /^exit=(\d{1,3}(?:,\d{1,3})*)$/.exec(text);
    if (exit) {
      const codes = exit[1]!.split(',').map(Number);
      const bad = codes.find((code) => code > 255);
      if (bad !== undefined) throw new Error(`--pass-if: exit code ${bad} is not one (0 to 255)`);
      rule.exitCodes.push(...codes);
    } else if (text.startsWith('output=') && text.length > 'output='.length) {
      rule.output.push(text.slice('output='.length));
    } else {
      throw new Error(
        `--pass-if: "${text}" is not a rule: give exit=CODE[,CODE...] (e.g. exit=0,3) or output=TEXT ` +
          '(a text the command prints when it succeeded)',
      );
    }
  }
  if (!rule.exitCodes.length) rule.exitCodes.push(0);
  return rule;
}

/** Finds the rule's texts in a run's output as it streams (a text may straddle two chunks). */
function outputWatcher(texts: string[]): { onChunk: (chunk: Buffer) => void; seen: () => boolean } {
  const found = new Set<string>();
  const keep = Math.max(0, ...texts.map((t) => Buffer.byteLength(t))) - 1;
  let carry = '';
  return {
    onChunk: (chunk) => {
      const window = carry + chunk.toString('utf8');
      for (const text of texts) if (window.includes(text)) found.add(text);
      carry = keep > 0 ? window.slice(-keep) : '';
    },
    seen: () => found.size === texts.length,
  };
}

export interface FreeRun {
  passed: boolean;
  exit: TraceReport['exit'];
  /** What the limit counts, at its peak: VmSize (as, data: an upper bound of VmData), the cgroup's charge. */
  peak: number | null;
  durationMs: number;
}

export interface LimitRun {
  limit: number;
  passed: boolean;
  exit: TraceReport['exit'];
  timedOut: boolean;
  cause: Cause;
  evidence: string[];
}

export interface CommandFit {
  schema: typeof FIT_COMMAND_SCHEMA;
  command: string[];
  target: FitTarget;
  passIf: PassRule;
  /** Runs without a limit. */
  free: FreeRun[];
  step: number;
  maxRuns: number;
  runs: LimitRun[];
  /** The outcome: a proven boundary, or why there is none. */
  outcome: 'found' | 'fails-without-limit' | 'passes-at-floor' | 'fails-at-max' | 'flaky' | 'stopped';
  /** The signal clip-mem was stopped by (outcome 'stopped'): the runs so far are kept. */
  stoppedBy: NodeJS.Signals | null;
  /** Smallest limit seen to pass and the largest seen to fail (null where not run). */
  passes: number | null;
  fails: number | null;
  /** The run-to-run spread of the peak without a limit, added on top of the boundary. */
  margin: number;
  /** The limit to ask for (boundary + margin, rounded up to MiB), or null with no boundary. */
  recommended: number | null;
  /** The recommendation in the words the user needs (ulimit, sbatch, docker). */
  say: string[];
  /** How the runs under a limit were made: "srun --mem=X" on the Slurm cluster, or a local limit (and why not srun). */
  limitRuns: string;
}

/** The job name of fit's srun runs (squeue and scancel find them by it). */
export const FIT_JOB_NAME = 'clip-mem-fit';

/** The run's limits for a target at `bytes`. */
function limitsFor(target: FitTarget, bytes: number): Limits {
  if (target === 'as') return { as: bytes };
  if (target === 'data') return { data: bytes };
  return { mem: bytes };
}

/** What the limit counts, at its peak, over the traced process tree. */
function peakOf(target: FitTarget, run: TraceRun): number | null {
  if (target === 'mem' || target === 'slurm') return run.cgroup?.peak ?? null;
  // An rlimit binds each process alone: the largest VmSize of any process in the tree. VmSize bounds
  // VmData from above, so for RLIMIT_DATA it is where the search starts, not the answer.
  const peaks = [run.record, ...run.descendants].map((r) => r?.counters.vmPeak ?? 0).filter((v) => v > 0);
  if (run.lastSeen) peaks.push(run.lastSeen.vmSize);
  return peaks.length ? Math.max(...peaks) : null;
}

const roundUp = (bytes: number, unit: number) => Math.ceil(bytes / unit) * unit;

/** The recommendation as the user types it. */
export function inWords(target: FitTarget, bytes: number): string[] {
  const kib = Math.ceil(bytes / 1024);
  const mib = Math.ceil(bytes / MiB);
  if (target === 'as') return [`ulimit -v ${kib}`, `prlimit --as=${bytes}`];
  if (target === 'data') return [`ulimit -d ${kib}`, `prlimit --data=${bytes}`];
  if (target === 'slurm') return [`sbatch --mem=${mib}M`, `srun --mem=${mib}M`];
  return [`docker run --memory=${mib}m`, `systemd-run -p MemoryMax=${mib}M`, `sbatch --mem=${mib}M`];
}

/** A run was stopped because clip-mem was told to stop: the search ends with what it has. */
class StoppedBy extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped by ${signal}`);
  }
}

export async function fitLimitForCommand(request: CommandFitRequest): Promise<CommandFit> {
  const result = emptyFit(request);
  try {
    return await search(request, result);
  } catch (error) {
    if (!(error instanceof StoppedBy)) throw error;
    result.outcome = 'stopped';
    result.stoppedBy = error.signal;
    return result;
  }
}

function emptyFit(request: CommandFitRequest): CommandFit {
  return {
    schema: FIT_COMMAND_SCHEMA,
    command: request.command,
    target: request.target,
    passIf: request.passIf,
    free: [],
    step: 0,
    maxRuns: 0,
    runs: [],
    outcome: 'found',
    stoppedBy: null,
    passes: null,
    fails: null,
    margin: 0,
    recommended: null,
    say: [],
    limitRuns: '',
  };
}

async function search(request: CommandFitRequest, result: CommandFit): Promise<CommandFit> {
  const { command, target, progress } = request;
  const cgroupTarget = target === 'mem' || target === 'slurm';
  const hostMemory = known(readHostMemory().memTotal) ?? 2 ** 40;
  // --for slurm proves the --mem on the scheduler itself when one answers: each run under a limit is a job step.
  const cluster = target === 'slurm' ? slurmReachable() : false;
  result.limitRuns =
    cluster === true
      ? 'srun --mem=X on the Slurm cluster'
      : target === 'slurm'
        ? `a local memory cgroup standing in for --mem (no Slurm cluster: ${cluster})`
        : target === 'as' || target === 'data'
          ? `RLIMIT_${target.toUpperCase()} set by clip-mem`
          : 'a memory cgroup made by clip-mem';
  /** One traced run (under a limit in bytes, or none), and whether it passed by the rule. */
  const traced = async (
    limit: number | null,
    timeoutMs?: number,
  ): Promise<{ run: TraceRun; passed: boolean; why?: string }> => {
    const watcher = outputWatcher(request.passIf.output);
    const onSrun = cluster === true && limit !== null;
    const run = await traceCommand({
      command: onSrun
        ? [
            'srun',
            `--job-name=${FIT_JOB_NAME}`,
            `--mem=${Math.ceil(limit / MiB)}M`,
            `--time=${Math.ceil((timeoutMs ?? 600_000) / 60_000) + 1}`,
            '--',
            ...command,
          ]
        : command,
      // Without a limit a cgroup as large as the host's memory measures the charge without limiting it.
      limits: onSrun ? {} : limit === null ? (cgroupTarget ? { mem: hostMemory } : {}) : limitsFor(target, limit),
      timeoutMs,
      onStdout: watcher.onChunk,
      onStderr: watcher.onChunk,
    });
    if (run.stoppedBy) throw new StoppedBy(run.stoppedBy);
    const exited = run.exit.code !== null && request.passIf.exitCodes.includes(run.exit.code);
    const missing = exited && !run.timedOut && !watcher.seen();
    return {
      run,
      passed: exited && !run.timedOut && !missing,
      // Why a run that ended as asked still failed the rule: said first in its evidence.
      why: missing ? `its output lacked ${request.passIf.output.map((text) => `"${text}"`).join(' or ')}` : undefined,
    };
  };

  const free = result.free;
  for (let i = 0; i < request.runs; i++) {
    progress(`without a limit: run ${i + 1} of ${request.runs}`);
    const { run, passed } = await traced(null, request.timeoutMs);
    free.push({ passed, exit: run.exit, peak: peakOf(target, run), durationMs: run.durationMs });
  }
  if (free.some((r) => !r.passed)) {
    result.outcome = free.some((r) => r.passed) ? 'flaky' : 'fails-without-limit';
    return result;
  }
  const peaks = free.map((r) => r.peak).filter((p): p is number => p !== null);
  if (!peaks.length) throw new Error(`no ${cgroupTarget ? 'cgroup charge' : 'VmSize'} was measured for ${command[0]}`);
  const peak = Math.max(...peaks);
  result.margin = Math.max(...peaks) - Math.min(...peaks);
  const asked = request.step ?? Math.max(MiB, roundUp(peak / 256, MiB));
  const step = cluster === true ? roundUp(asked, MiB) : asked; // srun's --mem is in whole MiB
  const max = request.max ?? roundUp(2 * peak, step);
  if (max < peak) {
    throw new Error(`--max ${formatBytes(max)} is below the peak measured without a limit, ${formatBytes(peak)}`);
  }
  const timeoutMs = request.timeoutMs ?? Math.max(30_000, 5 * Math.max(...free.map((r) => r.durationMs)));
  result.step = step;

  const attempt = async (limit: number): Promise<LimitRun> => {
    const { run, passed, why } = await traced(limit, timeoutMs);
    const report = buildTraceReport(run, { heapProfile: 'diagnosis' });
    const entry: LimitRun = {
      limit,
      passed,
      exit: run.exit,
      timedOut: run.timedOut,
      cause: report.diagnosis.cause,
      evidence: why ? [why, ...report.diagnosis.evidence] : report.diagnosis.evidence,
    };
    result.runs.push(entry);
    return entry;
  };

  // The top of the range must pass: the peak plus its spread, else up towards --max. srun takes whole MiB.
  let top = Math.min(max, roundUp(peak + result.margin + step, step));
  for (;;) {
    progress(`checking the top of the range: ${formatBytes(top)}`);
    if ((await attempt(top)).passed) break;
    if (top >= max) {
      result.outcome = 'fails-at-max';
      result.fails = top;
      return result;
    }
    top = Math.min(max, roundUp(top * 2, step));
  }
  // Candidate b (1..n) is the limit top - b*step; small b pass, large b fail.
  const n = Math.floor((top - step) / step);
  const limitAt = (b: number) => top - b * step;
  if (n < 1) {
    result.passes = top;
    result.outcome = 'passes-at-floor';
    return result;
  }
  result.maxRuns = maxSearchRuns(n);
  // The peak predicts the boundary for RLIMIT_AS and a cgroup; for RLIMIT_DATA VmSize is only a bound.
  const predicted = Math.max(0, Math.min(n, Math.floor((top - peak) / step)));
  const expected = target === 'data' ? undefined : { from: predicted, to: predicted };
  // The bracket known so far: the smallest limit seen to pass and the largest seen to fail.
  let passing = top;
  let failing: number | null = null;
  const { passed, failed } = await searchByRuns(n, expected, async (b, run) => {
    const bracket = `boundary between ${failing === null ? 'the floor' : formatBytes(failing)} and ${formatBytes(passing)}`;
    progress(`run ${run} of at most ${result.maxRuns}: ${formatBytes(limitAt(b))} (${bracket})`);
    const ok = (await attempt(limitAt(b))).passed;
    if (ok) passing = limitAt(b);
    else failing = limitAt(b);
    return ok;
  });
  result.passes = limitAt(passed);
  result.fails = failed <= n ? limitAt(failed) : null;
  if (result.fails === null) {
    result.outcome = 'passes-at-floor';
    return result;
  }
  // A repeat at the boundary: a command that passes and fails at the same limit has no boundary to report.
  progress(`repeating the boundary: ${formatBytes(result.passes)} and ${formatBytes(result.fails)}`);
  const again = [await attempt(result.passes), await attempt(result.fails)];
  if (!again[0]!.passed || again[1]!.passed) {
    result.outcome = 'flaky';
    return result;
  }
  result.recommended = roundUp(result.passes + result.margin, MiB);
  result.say = inWords(target, result.recommended);
  return result;
}
