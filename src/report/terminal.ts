// The terminal report: the seed's passing/failing list, one line of figures per scenario, and for each
// failure the allocation that failed, the cause with its evidence, and the fixes.
import { formatBytes } from '../core/units';
import { limitTexts, type Limits } from '../core/limits';
import type { RunHeader, ScenarioResult } from './result';
import type { RunOptions } from '../scenarios/scenario';

export function bytesOrUnknown(value: number | null): string {
  return value === null ? '?' : formatBytes(value);
}

export function exactBytes(value: number): string {
  return `${value.toLocaleString('en-US')} B (${formatBytes(value)})`;
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

export function describeLimits(limits: Limits): string {
  const parts = limitTexts(limits);
  return parts.length ? parts.join(', ') : 'none (the limits this shell already has)';
}

export function describeExit(result: ScenarioResult): string {
  if (result.timedOut) return 'killed at the timeout';
  if (result.exit.signal) return `killed by ${result.exit.signal}`;
  return `exit ${result.exit.code}`;
}

export function describeFailure(result: ScenarioResult): string {
  const f = result.failure;
  if (!f) return result.error ? `${describeExit(result)}: ${result.error}` : describeExit(result);
  return `${f.fn}(${exactBytes(f.size)}) failed with ${f.errnoName}` + (f.phase ? ` during "${f.phase}"` : '');
}

/** One scenario as its passing line, or its failing block. */
export function scenarioLines(result: ScenarioResult): string[] {
  const m = result.memory;
  const mark = result.status === 'passed' ? 'PASS' : 'FAIL';
  const figures =
    `${seconds(result.wallMs).padStart(8)}  RSS peak ${bytesOrUnknown(m.rssPeak).padStart(9)}` +
    `  increase ${bytesOrUnknown(m.increase).padStart(9)}  VmSize peak ${bytesOrUnknown(m.vmSizePeak).padStart(9)}`;
  // Which runtime ran it (onnxruntime, or the tfjs backend the fallback chose), as the scenario reported.
  const runtime =
    result.figures.runtime ?? (result.figures.backend !== undefined ? `tfjs ${result.figures.backend}` : undefined);
  const lines = [`  ${mark} ${result.name.padEnd(15)}${figures}${runtime !== undefined ? `  [${runtime}]` : ''}`];
  const a = result.analysis;
  if (result.status === 'passed' && !a.resource.startsWith('host')) {
    // Under a limit, say why it fitted (e.g. a file mapping that RLIMIT_DATA does not count).
    if (a.available !== null && a.required !== null)
      lines.push(`       fits: ${a.basis} ${formatBytes(a.required)} of ${a.resource} ${formatBytes(a.available)}`);
    if (a.note) lines.push(`       note: ${a.note}`);
    const evidence = result.diagnosis.evidence.filter(
      (e) =>
        !e.startsWith('exited with code 0') &&
        !/^\d+ allocations failed in all$/.test(e) &&
        !/^recovered: \d+ allocation\(s\) failed, exit 0$/.test(e), // said by the "recovered from" line
    );
    // Refusals the scenario survived (tfjs falls back from wasm when its reservation is refused).
    if (result.failureCount > 0 && evidence.length) {
      lines.push(
        `       recovered from ${result.failureCount} refused allocation(s)${runtime !== undefined ? `, and ran on ${runtime}` : ''}; the first:`,
      );
    }
    for (const line of evidence) lines.push(`         ${line}`);
  }
  if (result.status === 'failed') {
    lines.push(`       ${describeFailure(result)}`);
    lines.push(`       cause: ${result.diagnosis.cause}`);
    for (const evidence of result.diagnosis.evidence) lines.push(`         ${evidence}`);
    if (result.lastPhase && !result.failure) lines.push(`       last phase: ${result.lastPhase}`);
    for (const fix of result.fixes)
      lines.push(`       fix: ${fix.text}` + (fix.command ? `\n            ${fix.command}` : ''));
  }
  return lines;
}

/**
 * How the run's scenarios ran, after the model: the weight format, --batch (and --large-batch where the
 * large-batch scenario ran), the backend, the threads, and how many ran at once when more than one did.
 */
export function describeRunSettings(o: RunOptions): string {
  const batch = `batch ${o.batch}` + (o.scenarios.includes('large-batch') ? `, large batch ${o.largeBatch}` : '');
  const jobs = o.jobs > 1 && o.scenarios.length > 1 ? `, ${o.jobs} scenarios at once` : '';
  return `${o.dtype}, ${batch}, backend ${o.backend}, ${o.threads} thread(s)${jobs}`;
}

export function renderTerminal(header: RunHeader, scenarios: ScenarioResult[]): string {
  const o = header.options;
  const lines = [`clip-mem run: ${o.model} ${describeRunSettings(o)}`, `limits: ${describeLimits(o.limits)}`, ''];
  for (const result of scenarios) lines.push(...scenarioLines(result));
  const failed = scenarios.filter((s) => s.status === 'failed').length;
  lines.push('', `${scenarios.length - failed} passed, ${failed} failed`);
  return lines.join('\n') + '\n';
}
