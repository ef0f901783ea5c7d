// Memory over time as an inline SVG line chart (no script): bytes against seconds, limits as dashed
// horizontal lines, events (a failure, a kill) as vertical red lines with a label. The run report's
// scenario timelines and the trace report's process tree draw with it.
import { formatBytes } from '../core/units';
import { escapeHtml } from './markup';

/** At most `count` readings, evenly spaced, the first, the last (where a failure shows) and the highest kept. */
export function thin<T extends { rss: number | null }>(points: readonly T[], count: number): T[] {
  if (points.length <= count) return [...points];
  const top = points.reduce((best, p) => ((p.rss ?? -1) > (best.rss ?? -1) ? p : best), points[0]!);
  const picked = new Set<T>([points[0]!, points.at(-1)!, top]);
  for (let i = 1; picked.size < count && i < count; i++)
    picked.add(points[Math.round((i * (points.length - 1)) / count)]!);
  return points.filter((p) => picked.has(p));
}

export interface ChartSeries {
  label: string;
  color: string;
  /** The polyline's class, for tests and styles. */
  className: string;
  /** Milliseconds and bytes. */
  points: { tMs: number; bytes: number }[];
  strokeWidth?: number;
}

export interface ChartEvent {
  tMs: number;
  label: string;
  /** A value to mark with a dot on the event's line (e.g. VmSize + the refused size). */
  bytes?: number;
}

export interface Chart {
  ariaLabel: string;
  series: ChartSeries[];
  /** Limits, drawn dashed. */
  limits: { bytes: number; label: string }[];
  events: ChartEvent[];
  /** A legend row of the series under the chart (for a few series; more are listed beside it). */
  legend: boolean;
}

const WIDTH = 720;
const HEIGHT = 240;
const PAD = { left: 70, right: 16, top: 16, bottom: 36 };

/** A round axis step: the power of two at or above `rough` bytes, so the labels read 256 MiB, 512 MiB, 1 GiB. */
function byteStep(rough: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(rough, 1)));
}

export function lineChartSvg(chart: Chart): string {
  const values = chart.series
    .flatMap((s) => s.points.map((p) => p.bytes))
    .concat(
      chart.limits.map((l) => l.bytes),
      chart.events.flatMap((e) => (e.bytes !== undefined ? [e.bytes] : [])),
    );
  const maxT = Math.max(
    1,
    ...chart.series.flatMap((s) => s.points.map((p) => p.tMs)),
    ...chart.events.map((e) => e.tMs),
  );
  const maxV = Math.max(1, ...values) * 1.05;
  const x = (t: number) => PAD.left + (t / maxT) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) => HEIGHT - PAD.bottom - (v / maxV) * (HEIGHT - PAD.top - PAD.bottom);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeHtml(chart.ariaLabel)}">`,
    `<rect x="${PAD.left}" y="${PAD.top}" width="${WIDTH - PAD.left - PAD.right}" height="${HEIGHT - PAD.top - PAD.bottom}" fill="#fafafa" stroke="#ccc"/>`,
  ];
  const step = byteStep(maxV / 4);
  for (let v = 0; v <= maxV; v += step)
    parts.push(
      `<text x="${PAD.left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${escapeHtml(formatBytes(v))}</text>`,
    );
  for (let i = 0; i <= 4; i++) {
    const t = (maxT / 4) * i;
    parts.push(
      `<text x="${x(t)}" y="${HEIGHT - PAD.bottom + 16}" text-anchor="middle" font-size="11">${(t / 1000).toFixed(2)} s</text>`,
    );
  }
  for (const limit of chart.limits) {
    parts.push(
      `<line class="limit" x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${y(limit.bytes)}" y2="${y(limit.bytes)}" stroke="#d62728" stroke-dasharray="6 4"/>`,
      `<text x="${PAD.left + 4}" y="${y(limit.bytes) - 4}" font-size="11" fill="#d62728" stroke="#fafafa" stroke-width="3" paint-order="stroke">${escapeHtml(limit.label)}</text>`,
    );
  }
  for (const series of chart.series) {
    const coords = series.points.map((p) => `${x(p.tMs).toFixed(1)},${y(p.bytes).toFixed(1)}`);
    if (coords.length)
      parts.push(
        `<polyline class="${series.className}" fill="none" stroke="${series.color}" stroke-width="${series.strokeWidth ?? 2}" points="${coords.join(' ')}"/>`,
      );
  }
  for (const event of chart.events) {
    parts.push(
      `<line class="failure" x1="${x(event.tMs)}" x2="${x(event.tMs)}" y1="${PAD.top}" y2="${HEIGHT - PAD.bottom}" stroke="#d62728" stroke-width="2"/>`,
    );
    if (event.bytes !== undefined)
      parts.push(`<circle class="failure-point" cx="${x(event.tMs)}" cy="${y(event.bytes)}" r="5" fill="#d62728"/>`);
    const anchor = x(event.tMs) > WIDTH / 2 ? 'end' : 'start';
    parts.push(
      `<text class="failure-label" x="${x(event.tMs) + (anchor === 'end' ? -6 : 6)}" y="${PAD.top + 36}" text-anchor="${anchor}" font-size="12" fill="#d62728" stroke="#fff" stroke-width="4" paint-order="stroke">${escapeHtml(event.label)}</text>`,
    );
  }
  if (chart.legend)
    chart.series.forEach((series, i) => {
      parts.push(
        `<text x="${PAD.left + 8 + i * 110}" y="${HEIGHT - 6}" font-size="11" fill="${series.color}">&#9632; ${escapeHtml(series.label)}</text>`,
      );
    });
  parts.push('</svg>');
  return parts.join('');
}
