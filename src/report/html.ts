// The HTML report: one self-contained file (inline CSS and SVG, no script, no external resource) that
// works offline, with the Markdown report's content and a memory timeline per scenario whose failure
// point is marked.
import { formatBytes } from '../core/units';
import type { Limits } from '../core/limits';
import type { RunResults, ScenarioResult } from './result';
import { escapeHtml, htmlWithCode } from './markup';
import { lineChartSvg, type Chart } from './svg-chart';
import {
  bytesOrUnknown,
  describeRunSettings,
  describeExit,
  describeFailure,
  describeLimits,
  seconds,
} from './terminal';

const SERIES = [
  { key: 'rss', label: 'RSS', color: '#1f77b4' },
  { key: 'vmSize', label: 'VmSize', color: '#ff7f0e' },
  { key: 'heap', label: 'tracked heap', color: '#2ca02c' },
] as const;

/** The timeline as an inline SVG: RSS, VmSize and heap against time, limits dashed, the failure in red. */
export function timelineSvg(result: ScenarioResult, limits: Limits): string {
  const points = result.timeline;
  const failure = result.failure;
  const failureT = failure?.tMs ?? (result.status === 'failed' && points.length ? points[points.length - 1].tMs : null);
  const lines: Chart['limits'] = [];
  if (limits.as !== undefined) lines.push({ bytes: limits.as, label: `RLIMIT_AS ${formatBytes(limits.as)}` });
  if (limits.data !== undefined) lines.push({ bytes: limits.data, label: `RLIMIT_DATA ${formatBytes(limits.data)}` });
  if (limits.mem !== undefined) lines.push({ bytes: limits.mem, label: `cgroup ${formatBytes(limits.mem)}` });
  const events: Chart['events'] = [];
  if (failureT !== null && result.status === 'failed')
    events.push({
      tMs: failureT,
      label: failure ? `${failure.fn}(${formatBytes(failure.size)}) failed` : describeExit(result),
      ...(failure?.vmSize ? { bytes: failure.vmSize + failure.size } : {}),
    });
  return lineChartSvg({
    ariaLabel: `memory timeline of ${result.name}`,
    series: SERIES.map((series) => ({
      label: series.label,
      color: series.color,
      className: `series-${series.key}`,
      points: points.flatMap((p) => (p[series.key] !== null ? [{ tMs: p.tMs, bytes: p[series.key] as number }] : [])),
    })),
    limits: lines,
    events,
    legend: true,
  });
}

function scenarioHtml(result: ScenarioResult, limits: Limits): string {
  const m = result.memory;
  const rows: [string, string][] = [
    ['status', result.status === 'passed' ? 'passed' : `FAILED: ${describeFailure(result)}`],
    ['wall time', seconds(result.wallMs)],
    ['ended', describeExit(result)],
    [
      'RSS before / after / peak',
      `${bytesOrUnknown(m.rssBefore)} / ${bytesOrUnknown(m.rssAfter)} / ${bytesOrUnknown(m.rssPeak)}`,
    ],
    ['memory increase', bytesOrUnknown(m.increase)],
    [
      'VmSize before / after / peak',
      `${bytesOrUnknown(m.vmSizeBefore)} / ${bytesOrUnknown(m.vmSizeAfter)} / ${bytesOrUnknown(m.vmSizePeak)}`,
    ],
    [
      'tracked heap / anon / file peaks',
      `${bytesOrUnknown(m.heapPeak)} / ${bytesOrUnknown(m.anonPeak)} / ${bytesOrUnknown(m.filePeak)}`,
    ],
  ];
  if (result.lastPhase) rows.push(['last phase', result.lastPhase]);
  if (result.status === 'failed') rows.push(['cause', result.diagnosis.cause]);
  const evidence =
    result.status === 'failed'
      ? `<ul class="evidence">${result.diagnosis.evidence.map((e) => `<li>${escapeHtml(e)}</li>`).join('')}</ul>`
      : '';
  const fixes = result.fixes.length
    ? `<h4>Fixes</h4><ul class="fixes">${result.fixes.map((f) => `<li>${htmlWithCode(f.text)}${f.command ? `<pre>${escapeHtml(f.command)}</pre>` : ''}</li>`).join('')}</ul>`
    : '';
  return (
    `<section class="scenario ${result.status}" id="scenario-${escapeHtml(result.name)}"><h3>${escapeHtml(result.name)}: ${result.status}</h3>` +
    `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>` +
    evidence +
    timelineSvg(result, limits) +
    fixes +
    `<p>Rerun:</p><pre>${escapeHtml(result.command)}</pre></section>`
  );
}

export function renderHtml(results: RunResults): string {
  const { header, scenarios } = results;
  const o = header.options;
  const env = header.environment;
  const failed = scenarios.filter((s) => s.status === 'failed').length;
  const summaryRows = scenarios
    .map(
      (s) =>
        `<tr class="${s.status}"><td><a href="#scenario-${escapeHtml(s.name)}">${escapeHtml(s.name)}</a></td><td>${s.status}</td><td>${seconds(s.wallMs)}</td>` +
        `<td>${bytesOrUnknown(s.memory.rssPeak)}</td><td>${bytesOrUnknown(s.memory.vmSizePeak)}</td><td>${s.status === 'failed' ? escapeHtml(s.diagnosis.cause) : ''}</td></tr>`,
    )
    .join('');
  const analysisRows = scenarios
    .map(
      (s) =>
        `<tr><td>${escapeHtml(s.name)}</td><td>${escapeHtml(s.analysis.resource)}</td><td>${bytesOrUnknown(s.analysis.required)}</td><td>${bytesOrUnknown(s.analysis.available)}</td><td>${bytesOrUnknown(s.analysis.deficit)}</td><td>${escapeHtml(s.analysis.note ? `${s.analysis.basis}; ${s.analysis.note}` : s.analysis.basis)}</td></tr>`,
    )
    .join('');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>clip-mem run report: ${escapeHtml(o.model)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:14px}
tr.failed td:nth-child(2),section.failed h3{color:#d62728}tr.passed td:nth-child(2){color:#2ca02c}
code,pre{background:#f3f3f3;padding:1px 4px}pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3em 0}
section.scenario{border-top:1px solid #ccc;margin-top:1.5em}
</style></head><body>
<h1>clip-mem run report: ${escapeHtml(o.model)}</h1>
<h2>Summary</h2>
<p id="summary">${scenarios.length - failed} of ${scenarios.length} scenarios passed${results.end ? '' : ' (the run did not finish)'}. ${escapeHtml(`${describeRunSettings(o)}; limits: ${describeLimits(o.limits)}`)}.</p>
<table id="scenarios"><tr><th>scenario</th><th>status</th><th>time</th><th>RSS peak</th><th>VmSize peak</th><th>cause</th></tr>${summaryRows}</table>
<h2>Environment</h2>
<p>${escapeHtml(`clip-mem ${env.clipMemVersion}, Node.js ${env.node}, ${env.platform}/${env.arch}, ${env.cpus} CPUs; MemTotal ${bytesOrUnknown(env.memTotal)}, MemAvailable ${bytesOrUnknown(env.memAvailable)}; started ${header.startedAt}`)}</p>
<h2>Scenarios</h2>
${scenarios.map((s) => scenarioHtml(s, o.limits)).join('\n')}
<h2>Memory analysis</h2>
<table id="analysis"><tr><th>scenario</th><th>resource</th><th>required</th><th>available</th><th>deficit</th><th>how required was measured</th></tr>${analysisRows}</table>
<h2>Reproducible commands</h2>
<pre>${escapeHtml(header.command)}</pre>
</body></html>
`;
}
