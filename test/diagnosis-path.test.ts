// `trace` and `run` diagnose the same traced child the same way: both turn the run into the diagnosis'
// input through one function (diagnosisInput, inside buildTraceReport), so cause and evidence are equal.
import test from 'ava';
import { resolveClipConfig } from '../src/clip/config';
import { currentEnvironment, scenarioResult } from '../src/commands/run-scenarios';
import type { Limits } from '../src/core/limits';
import { diagnose, type Cause } from '../src/diagnose';
import { diagnosisInput } from '../src/diagnose/input';
import { heldBy } from '../src/report/heap-profile';
import { buildTraceReport } from '../src/report/trace-report';
import type { RunOptions, ScenarioOptions } from '../src/scenarios/scenario';
import { traceCommand, type TraceRun } from '../src/track/launcher';
import { allocProgram } from './helpers/trace';

function asScenario(run: TraceRun, limits: Limits, timeoutMs: number) {
  const options: RunOptions = {
    model: 'tiny',
    dtype: 'fp32',
    batch: 2,
    largeBatch: 32,
    backend: 'auto',
    threads: 1,
    limits,
    timeoutMs,
    scenarios: ['basic-ops'],
    jobs: 1,
  };
  const scenarioOptions: ScenarioOptions = { ...options, config: resolveClipConfig('tiny'), checkpoint: '' };
  return scenarioResult('basic-ops', run, null, { options, scenarioOptions }, currentEnvironment(), run.durationMs);
}

const cases: { title: string; limits: Limits; command: string[]; timeoutMs: number; cause: Cause }[] = [
  {
    title: 'a failed allocation under RLIMIT_AS',
    limits: { as: 64 * 2 ** 20 },
    command: [allocProgram, 'probes'],
    timeoutMs: 60_000,
    cause: 'address-space',
  },
  {
    title: 'a cgroup OOM kill',
    limits: { mem: 32 * 2 ** 20 },
    command: ['python3', '-c', 'b = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1'],
    timeoutMs: 60_000,
    cause: 'cgroup-oom-kill',
  },
  {
    title: 'a kill at the timeout',
    limits: {},
    command: ['sleep', '30'],
    timeoutMs: 300,
    cause: 'not-memory',
  },
];

for (const c of cases) {
  test(`${c.title}: trace and run give the same diagnosis and evidence for the same child`, async (t) => {
    const run = await traceCommand({ command: c.command, limits: c.limits, timeoutMs: c.timeoutMs });
    const traced = buildTraceReport(run);
    const scenario = asScenario(run, c.limits, c.timeoutMs);
    t.is(traced.diagnosis.cause, c.cause, traced.diagnosis.evidence.join('\n'));
    t.deepEqual(scenario.diagnosis, traced.diagnosis);
    // The report hands the input the live-heap profile's top sites, which it symbolized.
    t.deepEqual(diagnose(diagnosisInput(run, undefined, heldBy(traced.heapProfile, run.pid))), traced.diagnosis);
    const firstReal = traced.failures.find((f) => !f.injected);
    if (firstReal) {
      const { fn, size, errno, errnoName, phase, vmSize, vmData, rss, tMs, stack } = firstReal;
      t.deepEqual(scenario.failure, { fn, size, errno, errnoName, phase, vmSize, vmData, rss, tMs, stack });
    } else {
      t.is(scenario.failure, null);
    }
    if (c.timeoutMs < 1000) {
      t.true(run.timedOut);
      t.is(traced.diagnosis.evidence[0], `killed with its process group after the ${c.timeoutMs / 1000} s timeout`);
    }
  });
}
