// The Markdown report, in the seed report's structure: summary, environment, each scenario, the memory
// analysis table (required / available / deficit), reproducible commands and recommendations. Every
// figure comes from the run's results; nothing here is estimated.
import { formatBytes } from '../core/units';
import { elideTemplates } from '../track/symbolize';
import { markdownCell } from './markup';
import type { RunResults, ScenarioResult } from './result';
import {
  bytesOrUnknown,
  describeRunSettings,
  describeExit,
  describeFailure,
  describeLimits,
  exactBytes,
  seconds,
} from './terminal';

function scenarioSection(result: ScenarioResult): string[] {
  const m = result.memory;
  const lines = [
    `### ${result.name}: ${result.status === 'passed' ? 'passed' : 'FAILED'}`,
    '',
    `- Wall time: ${seconds(result.wallMs)}; ended: ${describeExit(result)}`,
    `- RSS before / after / peak: ${bytesOrUnknown(m.rssBefore)} / ${bytesOrUnknown(m.rssAfter)} / ${bytesOrUnknown(m.rssPeak)}` +
      ` (memory increase ${bytesOrUnknown(m.increase)})`,
    `- VmSize before / after / peak: ${bytesOrUnknown(m.vmSizeBefore)} / ${bytesOrUnknown(m.vmSizeAfter)} / ${bytesOrUnknown(m.vmSizePeak)}`,
    `- Tracked peaks: heap ${bytesOrUnknown(m.heapPeak)}, anonymous mappings ${bytesOrUnknown(m.anonPeak)}, file mappings ${bytesOrUnknown(m.filePeak)}`,
  ];
  if (m.cgroupPeak != null)
    lines.push(
      `- Memory cgroup charge at its peak: ${bytesOrUnknown(m.cgroupPeak)} (anonymous memory + the page cache it brought in)`,
    );
  const figures = Object.entries(result.figures);
  if (figures.length)
    lines.push(
      `- Measured: ${figures.map(([k, v]) => `${k} ${typeof v === 'number' ? v.toLocaleString('en-US') : v}`).join(', ')}`,
    );
  if (result.status === 'failed') {
    lines.push(`- Failure: ${describeFailure(result)}`);
    if (result.failure) {
      const f = result.failure;
      if (f.vmSize !== null)
        lines.push(
          `- At the failure: VmSize ${exactBytes(f.vmSize)}` + (f.rss !== null ? `, RSS ${formatBytes(f.rss)}` : ''),
        );
      if (f.stack.length) lines.push('- Stack:', '', '```', ...f.stack.slice(0, 12).map(elideTemplates), '```', '');
    }
    if (result.failureCount > 1) lines.push(`- Failed allocations in total: ${result.failureCount}`);
    if (result.lastPhase) lines.push(`- Last phase: ${result.lastPhase}`);
    lines.push(`- Cause: \`${result.diagnosis.cause}\``);
    for (const evidence of result.diagnosis.evidence) lines.push(`  - ${evidence}`);
  }
  lines.push('');
  return lines;
}

export function renderMarkdown(results: RunResults): string {
  const { header, scenarios } = results;
  const o = header.options;
  const env = header.environment;
  const failed = scenarios.filter((s) => s.status === 'failed');
  const lines: string[] = [
    `# clip-mem run report: ${o.model}`,
    '',
    '## Summary',
    '',
    `${scenarios.length - failed.length} of ${scenarios.length} scenarios passed` +
      (results.end ? '' : ' (the run did not finish: only the scenarios that finished are reported)') +
      `. Model ${o.model}, ${describeRunSettings(o)}; limits: ${describeLimits(o.limits)}.`,
    '',
    '| scenario | status | time | RSS peak | memory increase | VmSize peak | cause |',
    '|---|---|---|---|---|---|---|',
    ...scenarios.map(
      (s) =>
        `| ${s.name} | ${s.status} | ${seconds(s.wallMs)} | ${bytesOrUnknown(s.memory.rssPeak)} | ${bytesOrUnknown(s.memory.increase)} | ` +
        `${bytesOrUnknown(s.memory.vmSizePeak)} | ${s.status === 'failed' ? s.diagnosis.cause : ''} |`,
    ),
    '',
    '## Environment',
    '',
    `- clip-mem ${env.clipMemVersion}, Node.js ${env.node}, ${env.platform}/${env.arch}, ${env.cpus} CPUs, host ${env.hostname}`,
    `- RAM: MemTotal ${bytesOrUnknown(env.memTotal)}, MemAvailable ${bytesOrUnknown(env.memAvailable)} at the start`,
    `- Inherited limits: RLIMIT_AS ${env.inherited.as === null ? 'unlimited' : formatBytes(env.inherited.as)}, ` +
      `RLIMIT_DATA ${env.inherited.data === null ? 'unlimited' : formatBytes(env.inherited.data)}, ` +
      `cgroup memory ${env.inherited.cgroupMem === null ? 'unlimited' : formatBytes(env.inherited.cgroupMem)}`,
    `- Started ${header.startedAt}` +
      (results.end ? `, finished ${results.end.finishedAt} (${seconds(results.end.wallMs)})` : ''),
    '',
    '## Scenarios',
    '',
    ...scenarios.flatMap(scenarioSection),
    '## Memory analysis',
    '',
    '| scenario | resource | required | available | deficit | how required was measured |',
    '|---|---|---|---|---|---|',
    ...scenarios.map((s) => {
      const a = s.analysis;
      const exact = (v: number | null) => (v === null ? '?' : exactBytes(v));
      return `| ${s.name} | ${markdownCell(a.resource)} | ${exact(a.required)} | ${exact(a.available)} | ${exact(a.deficit)} | ${markdownCell(a.note ? `${a.basis}; ${a.note}` : a.basis)} |`;
    }),
    '',
    '## Reproducible commands',
    '',
    'The whole run:',
    '',
    '```sh',
    header.command,
    '```',
    '',
    'Each scenario alone, under the same limits:',
    '',
    '```sh',
    ...scenarios.map((s) => s.command),
    '```',
    '',
    '## Recommendations',
    '',
  ];
  const fixes = failed.flatMap((s) => s.fixes.map((fix) => ({ scenario: s.name, fix })));
  if (fixes.length === 0)
    lines.push(
      failed.length
        ? 'No change is supported by the measured numbers; see each cause above.'
        : 'Every scenario fits under these limits; nothing to change.',
    );
  for (const { scenario, fix } of fixes) {
    lines.push(`- **${scenario}** (${fix.kind}): ${fix.text}`);
    if (fix.command) lines.push('', '  ```sh', `  ${fix.command}`, '  ```', '');
  }
  lines.push('');
  return lines.join('\n');
}
