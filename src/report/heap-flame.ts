// The live-heap profile as a page: for each profiled process, an icicle chart (inline SVG, no script) of
// the live bytes by stack at the moment that explains its ending, at the peak and at the end. The root is
// the outermost frame; each frame's width is the bytes allocated under it; hovering shows the figures.
import { formatBytes } from '../core/units';
import type { TraceHeapMoment, TraceHeapProfile } from './heap-profile';
import { escapeHtml } from './markup';
import { momentName } from '../track/heap-profile';

interface Node {
  name: string;
  bytes: number;
  children: Map<string, Node>;
}

const WIDTH = 960;
const ROW = 18;
const CHAR = 6.5; // px per character at the 11 px label font

function tree(moment: TraceHeapMoment): Node {
  const root: Node = { name: 'all', bytes: 0, children: new Map() };
  for (const holder of moment.holders) {
    root.bytes += holder.bytes;
    let node = root;
    for (const frame of [...holder.stack].reverse()) {
      let child = node.children.get(frame);
      if (!child) node.children.set(frame, (child = { name: frame, bytes: 0, children: new Map() }));
      child.bytes += holder.bytes;
      node = child;
    }
  }
  return root;
}

/** The icicle of one moment: the top sites' stacks, outermost frame on top. */
export function icicleSvg(moment: TraceHeapMoment): string {
  const root = tree(moment);
  const rects: string[] = [];
  let depth = 0;
  const scale = root.bytes > 0 ? WIDTH / root.bytes : 0;
  const draw = (node: Node, x: number, level: number) => {
    depth = Math.max(depth, level + 1);
    const width = node.bytes * scale;
    if (width < 0.5) return;
    const share = root.bytes > 0 ? Math.round((node.bytes / root.bytes) * 100) : 0;
    const hue = 20 + ((node.name.length * 37) % 40);
    const label = node.name.length * CHAR < width - 4 ? node.name : node.name.slice(0, Math.floor((width - 4) / CHAR));
    rects.push(
      `<g><title>${escapeHtml(`${node.name}\n${formatBytes(node.bytes)} (${share}%)`)}</title>` +
        `<rect x="${x.toFixed(1)}" y="${level * ROW}" width="${width.toFixed(1)}" height="${ROW - 1}" fill="hsl(${hue},85%,62%)"/>` +
        (label.length > 2
          ? `<text x="${(x + 3).toFixed(1)}" y="${level * ROW + 13}">${escapeHtml(label)}</text>`
          : '') +
        '</g>',
    );
    let offset = x;
    for (const child of [...node.children.values()].sort((a, b) => b.bytes - a.bytes)) {
      draw(child, offset, level + 1);
      offset += child.bytes * scale;
    }
  };
  draw(root, 0, 0);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${depth * ROW}" font-family="monospace" font-size="11">` +
    rects.join('') +
    '</svg>'
  );
}

/** A self-contained page: each profiled process's moments as icicle charts, the largest sites listed. */
export function heapProfileHtml(profile: TraceHeapProfile, command: readonly string[]): string {
  const sections = profile.processes.map((p) => {
    const moments = [...p.moments].sort((a, b) => Number(b.explains) - Number(a.explains));
    const charts = moments
      .filter((m) => m.holders.length)
      .map((m) => {
        const shown = m.holders.reduce((sum, h) => sum + h.bytes, 0);
        const rows = m.holders
          .slice(0, 10)
          .map(
            (h) =>
              `<tr><td>${formatBytes(h.bytes)}</td><td>± ${formatBytes(h.error)}</td><td>${Math.round(h.share * 100)}%</td><td>${escapeHtml(h.fn)}</td><td>${escapeHtml(h.site)}</td></tr>`,
          )
          .join('');
        return (
          `<h3>${escapeHtml(momentName({ kind: m.moment, failure: m.failure }, p.killed))}${m.phase ? ` in phase "${escapeHtml(m.phase)}"` : ''}: ` +
          `${formatBytes(m.totalBytes)} ± ${formatBytes(m.error)} estimated live</h3>` +
          `<p>The ${m.holders.length} largest call sites (${formatBytes(shown)}), outermost frame on top; hover a frame for its bytes.</p>` +
          icicleSvg(m) +
          `<table><tr><th>bytes</th><th>error (2σ)</th><th>share</th><th>call</th><th>call site</th></tr>${rows}</table>`
        );
      })
      .join('');
    return `<h2>pid ${p.pid} (${escapeHtml(p.exe)})</h2><p>Allocations sampled every ${formatBytes(p.sampleMean)} on average (${p.samples} samples).</p>${charts}`;
  });
  return (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>clip-mem: live heap</title>' +
    '<style>body{font-family:sans-serif;margin:2em}svg{display:block;margin:1em 0}text{pointer-events:none}' +
    'table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;font-size:13px}</style></head><body>' +
    `<h1>Who held the memory: ${escapeHtml(command.join(' '))}</h1>` +
    sections.join('') +
    '</body></html>\n'
  );
}
