// `trace --markdown FILE` and `trace --html FILE`: the trace report as a document to keep or attach to an
// issue. Both are written from one outline (sections of text, lists, tables, code and charts), so the two
// always say the same: how the command ended, the diagnosis and fix, every failed allocation with its
// frames, a row per process, the tree's combined figures and a timeline per process and for the tree.
import { limitTexts } from '../core/limits';
import { formatBytes } from '../core/units';
import { formatHeapProfile } from './heap-profile';
import type { ProcessRow } from './process-rows';
import { escapeHtml, htmlWithCode, markdownCell } from './markup';
import { lineChartSvg, thin, type ChartSeries } from './svg-chart';
import { formatFailures, treeEventTexts, treeFigureTexts, type TraceReport } from './trace-report';

type Block =
  | { kind: 'text'; text: string }
  | { kind: 'list'; items: string[] }
  | { kind: 'table'; head: string[]; rows: string[][] }
  | { kind: 'code'; lines: string[] }
  /** HTML only; Markdown says where to find it. */
  | { kind: 'chart'; svg: string; caption: string };

interface Section {
  title: string;
  blocks: Block[];
}

const bytes = (value: number | null | undefined) => (value === null || value === undefined ? '?' : formatBytes(value));
const seconds = (ms: number | null) => (ms === null ? '?' : `${(ms / 1000).toFixed(1)} s`);

function processName(p: ProcessRow): string {
  return (p.command ?? p.exe).replace(/\s+/g, ' ');
}

function summary(report: TraceReport): Section {
  const limits = limitTexts(report.limits);
  const p = report.peaks;
  const blocks: Block[] = [
    { kind: 'text', text: `pid ${report.pid} ${report.ending}.` },
    {
      kind: 'list',
      items: [
        `limits: ${limits.length ? limits.join(', ') : 'none set by clip-mem'}`,
        report.tracked
          ? `peaks of the command's own process: RSS ${bytes(p.rss)}, VmSize ${bytes(p.vmSize)}, heap ${bytes(p.heap)}`
          : `not tracked: ${report.notTracked}`,
        `failed allocations: ${report.failuresTotal}`,
        `processes: ${report.processes.length}`,
      ],
    },
    { kind: 'text', text: `Diagnosis: \`${report.diagnosis.cause}\`` },
    { kind: 'list', items: report.diagnosis.evidence },
  ];
  if (report.fix) {
    blocks.push({ kind: 'text', text: `Fix: ${report.fix.text}` });
    if (report.fix.command)
      blocks.push({ kind: 'code', lines: [`# the real minimum, proven by runs`, report.fix.command] });
  }
  for (const fix of report.gpuFixes) blocks.push({ kind: 'text', text: `Fix (${fix.kind}): ${fix.text}` });
  return { title: 'Summary', blocks };
}

function processesSection(report: TraceReport): Section {
  const rows = report.processes.map((p) => [
    String(p.pid),
    p.ppid === null ? '?' : String(p.ppid),
    processName(p),
    `${seconds(p.startMs)} to ${seconds(p.endMs)}`,
    bytes(p.peaks.rss),
    bytes(p.peaks.vmSize),
    p.tracked ? bytes(p.peaks.heap) : 'untracked',
    String(p.failures),
    p.ending.text,
    p.ending.evidence,
  ]);
  const figures = [...treeFigureTexts(report), ...treeEventTexts(report)];
  return {
    title: 'Processes',
    blocks: [
      {
        kind: 'table',
        head: [
          'pid',
          'parent',
          'command',
          'lived',
          'RSS peak',
          'VmSize peak',
          'heap peak',
          'failures',
          'ended',
          'evidence',
        ],
        rows,
      },
      { kind: 'list', items: figures },
    ],
  };
}

const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22'];
const chartedProcesses = 8;

function timelineSection(report: TraceReport): Section {
  const byPeak = [...report.processes].sort((a, b) => (b.peaks.rss ?? 0) - (a.peaks.rss ?? 0));
  const charted = byPeak.slice(0, chartedProcesses);
  const series: ChartSeries[] = [];
  if (report.tree.timeline.length)
    series.push({
      label: 'tree (summed RSS)',
      color: '#222',
      className: 'series-tree',
      strokeWidth: 3,
      points: report.tree.timeline.map((s) => ({ tMs: s.tMs, bytes: s.rss })),
    });
  charted.forEach((p, i) =>
    series.push({
      label: `pid ${p.pid}`,
      color: palette[i % palette.length]!,
      className: 'series-process',
      strokeWidth: 1.5,
      points: p.timeline.flatMap((s) => (s.rss !== null ? [{ tMs: s.tMs, bytes: s.rss }] : [])),
    }),
  );
  const events = report.processes.flatMap((p) =>
    p.ending.how === 'killed' && p.endMs !== null
      ? [{ tMs: p.endMs, label: `pid ${p.pid} ${p.ending.by === 'kernel OOM killer' ? 'OOM-killed' : 'killed'}` }]
      : [],
  );
  const firstFailure = report.failures[0];
  if (firstFailure)
    events.push({ tMs: firstFailure.tMs, label: `${firstFailure.fn}(${formatBytes(firstFailure.size)}) failed` });
  const limits =
    report.limits.mem !== undefined
      ? [{ bytes: report.limits.mem, label: `cgroup ${formatBytes(report.limits.mem)}` }]
      : [];
  const blocks: Block[] = [
    {
      kind: 'chart',
      svg: lineChartSvg({
        ariaLabel: 'RSS of the tree and of its processes over time',
        series,
        limits,
        events,
        legend: false,
      }),
      caption:
        `RSS over time: the tree summed (thick) and the ${charted.length} process(es) with the highest peaks (` +
        charted
          .map((p, i) => `<span style="color:${palette[i % palette.length]}">&#9632;</span> pid ${p.pid}`)
          .join(', ') +
        '); failures and kills in red',
    },
  ];
  const combined = thin(report.tree.timeline, 24);
  if (combined.length)
    blocks.push(
      { kind: 'text', text: 'The tree, summed (each 100 ms poll of /proc):' },
      {
        kind: 'table',
        head: ['time', 'summed RSS', 'processes alive'],
        rows: combined.map((s) => [seconds(s.tMs), bytes(s.rss), String(s.processes)]),
      },
    );
  blocks.push(
    { kind: 'text', text: 'Each process (first reading, highest, last):' },
    {
      kind: 'table',
      head: ['pid', 'command', 'readings', 'first', 'highest RSS', 'last'],
      rows: report.processes.map((p) => {
        const readings = p.timeline.filter((s) => s.rss !== null);
        const at = (s: (typeof readings)[number] | undefined) => (s ? `${bytes(s.rss)} at ${seconds(s.tMs)}` : '?');
        const top = readings.reduce<(typeof readings)[number] | undefined>(
          (b, s) => (!b || s.rss! > b.rss! ? s : b),
          undefined,
        );
        return [String(p.pid), processName(p), String(readings.length), at(readings[0]), at(top), at(readings.at(-1))];
      }),
    },
  );
  return { title: 'Timeline', blocks };
}

export function traceOutline(report: TraceReport): { title: string; sections: Section[] } {
  const sections = [summary(report)];
  if (report.failuresTotal > 0)
    sections.push({ title: 'Failed allocations', blocks: [{ kind: 'code', lines: formatFailures(report) }] });
  if (report.heapProfile)
    sections.push({
      title: 'Who held the memory',
      blocks: [{ kind: 'code', lines: formatHeapProfile(report.heapProfile) }],
    });
  sections.push(processesSection(report), timelineSection(report));
  sections.push({ title: 'Reproduce', blocks: [{ kind: 'code', lines: [report.command.join(' ')] }] });
  return { title: `clip-mem trace: ${report.command.join(' ')}`, sections };
}

export function renderTraceMarkdown(report: TraceReport): string {
  const outline = traceOutline(report);
  const lines = [`# ${outline.title}`, ''];
  for (const section of outline.sections) {
    lines.push(`## ${section.title}`, '');
    for (const block of section.blocks) {
      if (block.kind === 'text') lines.push(block.text, '');
      else if (block.kind === 'list') lines.push(...block.items.map((item) => `- ${item}`), '');
      else if (block.kind === 'code') lines.push('```', ...block.lines, '```', '');
      else if (block.kind === 'table')
        lines.push(
          `| ${block.head.join(' | ')} |`,
          `|${block.head.map(() => '---').join('|')}|`,
          ...block.rows.map((row) => `| ${row.map(markdownCell).join(' | ')} |`),
          '',
        );
      else lines.push('(The chart of this section is in the HTML report: `clip-mem trace --html FILE`.)', '');
    }
  }
  return lines.join('\n');
}

export function renderTraceHtml(report: TraceReport): string {
  const outline = traceOutline(report);
  const body = outline.sections.map((section) => {
    const blocks = section.blocks.map((block) => {
      if (block.kind === 'text') return `<p>${htmlWithCode(block.text)}</p>`;
      if (block.kind === 'list')
        return `<ul>${block.items.map((item) => `<li>${htmlWithCode(item)}</li>`).join('')}</ul>`;
      if (block.kind === 'code') return `<pre>${escapeHtml(block.lines.join('\n'))}</pre>`;
      if (block.kind === 'table')
        return (
          `<table><tr>${block.head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>` +
          block.rows.map((row) => `<tr>${row.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('') +
          '</table>'
        );
      // The caption's swatches are the one piece of markup built here (pids and colours only).
      return `<figure>${block.svg}<figcaption>${block.caption}</figcaption></figure>`;
    });
    return `<section><h2>${escapeHtml(section.title)}</h2>${blocks.join('\n')}</section>`;
  });
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(outline.title)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}
code,pre{background:#f3f3f3;padding:1px 4px}pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3em 0;font-size:12px}
section{border-top:1px solid #ccc;margin-top:1.5em}figure{margin:0}figcaption{font-size:13px}
</style></head><body>
<h1>${escapeHtml(outline.title)}</h1>
${body.join('\n')}
</body></html>
`;
}
