// The HTML report: one self-contained file (inline CSS and SVG, no script, no external resource) that
// works offline, with the Markdown report's content and a memory timeline per scenario whose failure
// point is marked.
import { formatBytes } from '../core/units';
import type { Limits } from '../core/limits';
import type { RunResults, ScenarioResult } from './result';
import { bytesOrUnknown, describeBatch, describeExit, describeFailure, describeLimits, seconds } from './terminal';

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Escaped text whose `backticked` spans (commands and options in the fixes' texts) become <code>. */
function withCode(text: string): string {
  return escapeHtml(text).replace(/`([^`]+)`/g, '<code>$1</code>');
}

const WIDTH = 720;
const HEIGHT = 240;
const PAD = { left: 70, right: 16, top: 16, bottom: 36 };

const SERIES = [
  { key: 'rss', label: 'RSS', color: '#1f77b4' },
  { key: 'vmSize', label: 'VmSize', color: '#ff7f0e' },
  { key: 'heap', label: 'tracked heap', color: '#2ca02c' },
] as const;

/** A round axis step: the power of two at or above `rough` bytes, so the labels read 256 MiB, 512 MiB, 1 GiB. */
function byteStep(rough: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(rough, 1)));
}

/** The timeline as an inline SVG: RSS, VmSize and heap against time, limits dashed, the failure in red. */
export function timelineSvg(result: ScenarioResult, limits: Limits): string {
  const points = result.timeline;
  const failure = result.failure;
  const failureT = failure?.tMs ?? (result.status === 'failed' && points.length ? points[points.length - 1].tMs : null);
  const horizontal: { value: number; label: string }[] = [];
  if (limits.as !== undefined) horizontal.push({ value: limits.as, label: `RLIMIT_AS ${formatBytes(limits.as)}` });
  if (limits.data !== undefined)
    horizontal.push({ value: limits.data, label: `RLIMIT_DATA ${formatBytes(limits.data)}` });
  if (limits.mem !== undefined) horizontal.push({ value: limits.mem, label: `cgroup ${formatBytes(limits.mem)}` });
  const values = points.flatMap((p) => [p.rss, p.vmSize, p.heap ?? 0]).concat(horizontal.map((h) => h.value));
  if (failure?.vmSize) values.push(failure.vmSize + failure.size);
  const maxT = Math.max(1, ...points.map((p) => p.tMs), failureT ?? 0);
  const maxV = Math.max(1, ...values) * 1.05;
  const x = (t: number) => PAD.left + (t / maxT) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) => HEIGHT - PAD.bottom - (v / maxV) * (HEIGHT - PAD.top - PAD.bottom);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="memory timeline of ${escapeHtml(result.name)}">`,
    `<rect x="${PAD.left}" y="${PAD.top}" width="${WIDTH - PAD.left - PAD.right}" height="${HEIGHT - PAD.top - PAD.bottom}" fill="#fafafa" stroke="#ccc"/>`,
  ];
  const step = byteStep(maxV / 4);
  for (let v = 0; v <= maxV; v += step) {
    parts.push(
      `<text x="${PAD.left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${escapeHtml(formatBytes(v))}</text>`,
    );
  }
  for (let i = 0; i <= 4; i++) {
    const t = (maxT / 4) * i;
    parts.push(
      `<text x="${x(t)}" y="${HEIGHT - PAD.bottom + 16}" text-anchor="middle" font-size="11">${(t / 1000).toFixed(2)} s</text>`,
    );
  }
  for (const h of horizontal) {
    parts.push(
      `<line class="limit" x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${y(h.value)}" y2="${y(h.value)}" stroke="#d62728" stroke-dasharray="6 4"/>`,
    );
    parts.push(
      `<text x="${PAD.left + 4}" y="${y(h.value) - 4}" font-size="11" fill="#d62728" stroke="#fafafa" stroke-width="3" paint-order="stroke">${escapeHtml(h.label)}</text>`,
    );
  }
  for (const series of SERIES) {
    const coords = points
      .filter((p) => p[series.key] !== null)
      .map((p) => `${x(p.tMs).toFixed(1)},${y(p[series.key] as number).toFixed(1)}`);
    if (coords.length)
      parts.push(
        `<polyline class="series-${series.key}" fill="none" stroke="${series.color}" stroke-width="2" points="${coords.join(' ')}"/>`,
      );
  }
  if (failureT !== null && result.status === 'failed') {
    const label = failure ? `${failure.fn}(${formatBytes(failure.size)}) failed` : describeExit(result);
    parts.push(
      `<line class="failure" x1="${x(failureT)}" x2="${x(failureT)}" y1="${PAD.top}" y2="${HEIGHT - PAD.bottom}" stroke="#d62728" stroke-width="2"/>`,
    );
    if (failure?.vmSize)
      parts.push(
        `<circle class="failure-point" cx="${x(failureT)}" cy="${y(failure.vmSize + failure.size)}" r="5" fill="#d62728"/>`,
      );
    const anchor = x(failureT) > WIDTH / 2 ? 'end' : 'start';
    parts.push(
      `<text class="failure-label" x="${x(failureT) + (anchor === 'end' ? -6 : 6)}" y="${PAD.top + 36}" text-anchor="${anchor}" font-size="12" fill="#d62728" stroke="#fff" stroke-width="4" paint-order="stroke">${escapeHtml(label)}</text>`,
    );
  }
  SERIES.forEach((series, i) => {
    parts.push(
      `<text x="${PAD.left + 8 + i * 110}" y="${HEIGHT - 6}" font-size="11" fill="${series.color}">&#9632; ${series.label}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
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
    ? `<h4>Fixes</h4><ul class="fixes">${result.fixes.map((f) => `<li>${withCode(f.text)}${f.command ? `<pre>${escapeHtml(f.command)}</pre>` : ''}</li>`).join('')}</ul>`
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
<p id="summary">${scenarios.length - failed} of ${scenarios.length} scenarios passed${results.end ? '' : ' (the run did not finish)'}. ${escapeHtml(`${o.dtype}, ${describeBatch(o)}, backend ${o.backend}, ${o.threads} thread(s); limits: ${describeLimits(o.limits)}`)}.</p>
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
