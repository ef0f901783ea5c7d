// The terminal form of `clip-mem estimate`: per phase, each component as RSS and as address space, the
// peak with its uncertainty, then accelerate's figures for the same model and why ours differ.
import type { ClipConfig } from '../clip/config';
import { DEFAULT_TRAINING_SEGMENTS } from '../clip/onnx/train';
import { formatBytes } from '../core/units';
import { accelerateFigures, type PhaseEstimate } from './estimate';
import type { RuntimeRecord } from './store';

const pad = (text: string, width: number) => text.padEnd(width);
const padLeft = (text: string, width: number) => text.padStart(width);
const signed = (bytes: number) => (bytes < 0 ? `-${formatBytes(-bytes)}` : formatBytes(bytes));
/** accelerate prints MiB and GiB with two decimals: the same here, so the figures can be compared. */
const twoDecimals = (bytes: number) =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(2)} MiB`;

function phaseTitle(e: PhaseEstimate): string {
  if (e.phase === 'load') return 'load (by copy: every weight read into memory)';
  if (e.phase === 'forward') return `forward, batch ${e.batch} (onnxruntime, no gradients)`;
  const segments = `, backward in ${e.segments ?? DEFAULT_TRAINING_SEGMENTS} segment(s) per tower`;
  return `train step, batch ${e.batch} (onnxruntime gradients${segments} + ${e.optimizer === 'adamw' ? 'AdamW' : 'plain SGD'})`;
}

export function renderPhase(e: PhaseEstimate): string {
  const lines = [`${phaseTitle(e)}`, `  ${pad('', 18)}${padLeft('RSS', 12)}${padLeft('VmSize', 12)}  how`];
  for (const c of e.components)
    lines.push(`  ${pad(c.name, 18)}${padLeft(signed(c.rss), 12)}${padLeft(signed(c.vmSize), 12)}  ${c.basis}`);
  const plusMinus = (key: 'rss' | 'vmSize') => ` ± ${formatBytes(e.uncertainty[key])}`;
  lines.push(
    `  ${pad('peak', 18)}${padLeft(formatBytes(e.predicted.rss), 12)}${padLeft(formatBytes(e.predicted.vmSize), 12)}  (${e.predicted.rss} B RSS${plusMinus('rss')}; ${e.predicted.vmSize} B VmSize${plusMinus('vmSize')})`,
  );
  lines.push(`  band (${e.uncertainty.scope}): ${e.uncertainty.basis}`);
  if (e.mmap)
    lines.push(
      `  by mmap instead: RSS ${formatBytes(e.mmap.rss)} (pages come in when used), VmSize ${formatBytes(e.mmap.vmSize)} (the whole file is mapped at once)`,
    );
  return lines.join('\n');
}

/** accelerate's figures beside ours, and the reasons for each difference. */
export function renderAccelerate(config: ClipConfig, estimates: readonly PhaseEstimate[]): string {
  const dtype = estimates[0].dtype;
  const acc = accelerateFigures(config, dtype);
  const lines = [
    `accelerate estimate-memory for the same model (${config.name}): weights ${twoDecimals(acc.weights)} (${acc.weights} B, ${dtype}), training with Adam ${twoDecimals(acc.adamTraining)} (4 x the float32 weights)`,
  ];
  for (const e of estimates) {
    if (e.phase === 'train')
      lines.push(
        `  ours, train batch ${e.batch}: ${formatBytes(e.predicted.rss)} RSS, ${formatBytes(e.predicted.vmSize)} VmSize`,
      );
    else if (e.phase === 'load')
      lines.push(`  ours, load: ${formatBytes(e.predicted.rss)} RSS by copy, ${formatBytes(e.mmap!.rss)} by mmap`);
    else lines.push(`  ours, forward batch ${e.batch}: ${formatBytes(e.predicted.rss)} RSS`);
  }
  lines.push(
    'why they differ:',
    '  - accelerate counts parameters only: no runtime (Node + onnxruntime: the baseline row), no activations, no allocator slack;',
    '  - it says nothing of address space: RLIMIT_AS counts VmSize, which here is GiBs above RSS (thread stacks, malloc arenas, V8 reservations);',
    "  - our trainer keeps float32 parameters and moments whatever the checkpoint dtype, and holds one tower's gradients twice (onnxruntime's output and the JS buffer) instead of all gradients once;",
    '  - by mmap the weights are file-backed: only the pages used count in RSS (the token table is gathered, so most of it never does).',
  );
  return lines.join('\n');
}

export function renderHeader(config: ClipConfig, dtype: string, record: RuntimeRecord): string {
  return `clip-mem estimate: ${config.name} ${dtype}, ${record.key}\n`;
}
