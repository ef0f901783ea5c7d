// How close `clip-mem estimate` comes to what `clip-mem run` measures: vit-b-32 in each dtype, load once
// and forward and train at each batch, every run in its own child through the scenario runner. Prints the
// predicted peak RSS (model terms + baseline alone, then calibrated, with its uncertainty) beside the
// measured one and the error of each; VmSize the same. Goal: |error| <= 10% (5%) for every row.
// Calibration (made first when missing) runs batch 1 and 4: batch 2 and 8 are predictions it never saw.
// Ends with vit-l-14, never run here, and its stated uncertainty.
//
//   npm run build:ts && nice node dist/scripts/bench-estimate.js [--dtypes fp32,fp16] [--batches 1,2,8] [--json]
import * as os from 'node:os';
import { presetConfig, type WeightFormat } from '../src/clip/config';
import { calibrate, ensureBaseline } from '../src/commands/calibrate';
import { estimatePhase, type PhaseEstimate } from '../src/estimate/estimate';
import type { Phase } from '../src/estimate/model';
import { runPhases } from '../src/commands/phase-runs';
import { loadRuntimeRecord } from '../src/estimate/store';
import { formatBytes } from '../src/core/units';

const MODEL = 'vit-b-32';
const GOAL = 0.1;
const STRETCH = 0.05;

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] ? process.argv[at + 1] : fallback;
}

interface Row {
  dtype: string;
  phase: Phase;
  batch: number;
  measured: { rss: number; vmSize: number } | null;
  status: string;
  modelled: { rss: number; vmSize: number };
  predicted: { rss: number; vmSize: number };
  uncertainty: number | null;
  errorModelled: number | null;
  errorPredicted: number | null;
  errorVmSize: number | null;
}

async function main(): Promise<void> {
  const dtypes = option('dtypes', 'fp32,fp16').split(',') as WeightFormat[];
  const batches = option('batches', '1,2,8').split(',').map(Number);
  const json = process.argv.includes('--json');
  const threads = Math.min(os.cpus().length, 4);
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  await ensureBaseline(threads, progress);
  const config = presetConfig(MODEL);
  const rows: Row[] = [];
  for (const dtype of dtypes) {
    if (!loadRuntimeRecord(threads).calibrations.some((c) => c.model === MODEL && c.dtype === dtype)) {
      progress(`calibrating ${MODEL} ${dtype} at batch 1 and 4 first`);
      await calibrate(MODEL, dtype, [1, 4], threads, progress);
    }
    const record = loadRuntimeRecord(threads);
    const plan: [Phase, number][] = [
      ['load', 1],
      ...batches.flatMap(
        (b) =>
          [
            ['forward', b],
            ['train', b],
          ] as [Phase, number][],
      ),
    ];
    for (const [phase, batch] of plan) {
      const [run] = await runPhases({ model: MODEL, dtype, batch, phases: [phase], threads, progress });
      const m = run.result.memory;
      const e: PhaseEstimate = estimatePhase(config, { model: MODEL, dtype, batch, phase, optimizer: 'adamw' }, record);
      const measured = m.rssPeak !== null && m.vmSizePeak !== null ? { rss: m.rssPeak, vmSize: m.vmSizePeak } : null;
      const error = (predicted: number, key: 'rss' | 'vmSize') =>
        measured ? (predicted - measured[key]) / measured[key] : null;
      rows.push({
        dtype,
        phase,
        batch: phase === 'load' ? 0 : batch,
        measured,
        status: run.result.status,
        modelled: e.modelled,
        predicted: e.predicted,
        uncertainty: e.uncertainty?.rss ?? null,
        errorModelled: error(e.modelled.rss, 'rss'),
        errorPredicted: error(e.predicted.rss, 'rss'),
        errorVmSize: error(e.predicted.vmSize, 'vmSize'),
      });
    }
  }
  const large = presetConfig('vit-l-14');
  const record = loadRuntimeRecord(threads);
  const unseen = (['load', 'forward', 'train'] as Phase[]).map((phase) =>
    estimatePhase(large, { model: 'vit-l-14', dtype: 'fp32', batch: 2, phase, optimizer: 'adamw' }, record),
  );
  if (json) {
    process.stdout.write(JSON.stringify({ runtime: record.key, rows, vitL14: unseen }, null, 1) + '\n');
    return;
  }
  const percent = (x: number | null) => (x === null ? '-' : `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`);
  const header = [
    'dtype',
    'phase',
    'batch',
    'measured RSS',
    'model only',
    'error',
    'calibrated',
    '±',
    'error',
    'VmSize meas.',
    'VmSize pred.',
    'error',
  ];
  const table = rows.map((r) => [
    r.dtype,
    r.phase === 'load' ? 'load (copy)' : r.phase,
    r.phase === 'load' ? '-' : String(r.batch),
    r.measured ? formatBytes(r.measured.rss) : r.status,
    formatBytes(r.modelled.rss),
    percent(r.errorModelled),
    formatBytes(r.predicted.rss),
    r.uncertainty === null ? '-' : formatBytes(r.uncertainty),
    percent(r.errorPredicted),
    r.measured ? formatBytes(r.measured.vmSize) : '-',
    formatBytes(r.predicted.vmSize),
    percent(r.errorVmSize),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(`clip-mem estimate vs clip-mem run: ${MODEL}, ${record.key}`);
  console.log(line(header));
  for (const row of table) console.log(line(row));
  const worst = (key: 'errorModelled' | 'errorPredicted') => Math.max(...rows.map((r) => Math.abs(r[key] ?? Infinity)));
  for (const [key, label] of [
    ['errorModelled', 'model terms + baseline only'],
    ['errorPredicted', 'calibrated (batch 1 and 4)'],
  ] as const) {
    const w = worst(key);
    console.log(
      `worst |error| ${label}: ${(100 * w).toFixed(1)}% (goal ${100 * GOAL}%: ${w <= GOAL ? 'met' : 'NOT met'}; ${100 * STRETCH}%: ${w <= STRETCH ? 'met' : 'not met'})`,
    );
  }
  console.log('\nvit-l-14 fp32, batch 2 (never run here):');
  for (const e of unseen) {
    const u = e.uncertainty
      ? ` ± ${formatBytes(e.uncertainty.rss)} (${((100 * e.uncertainty.rss) / e.predicted.rss).toFixed(0)}%)`
      : ' (uncalibrated)';
    console.log(
      `  ${e.phase.padEnd(8)} RSS ${formatBytes(e.predicted.rss)}${u}, VmSize ${formatBytes(e.predicted.vmSize)}; ${e.uncertainty?.basis ?? ''}`,
    );
  }
}

main().catch((error) => {
  process.stderr.write(`bench-estimate: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
