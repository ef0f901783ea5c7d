// The holdout's measurements and how the estimate's band is judged on them: the share of measured peaks
// inside the stated band (coverage) and the band's width, per family of estimate and overall. The
// measurements come from scripts/holdout.ts (runs the calibration never saw), with the runtime records
// (baseline, calibrations) they were estimated from, so the same figures can be judged again after a
// change of the model.
import { presetConfig, type WeightFormat } from '../clip/config';
import { estimatePhase, insideBand, type PhaseEstimate } from './estimate';
import type { Optimizer, Phase } from './model';
import type { Peak, RuntimeRecord } from './store';

export const HOLDOUT_SCHEMA = 'clip-mem-holdout/1';

/** The band's coverage goal (issue 17); its width goal is the estimate's own (WIDTH_GOAL). */
export const COVERAGE_GOAL = 0.95;

export interface HoldoutConfig {
  model: string;
  dtype: WeightFormat;
  phase: Phase;
  batch: number;
  optimizer: Optimizer;
  threads: number;
}

export interface HoldoutRow extends HoldoutConfig {
  /** Peak RSS and VmSize of the run's child; null when it did not pass. */
  measured: Peak | null;
  status: string;
  durationMs: number;
  /** 1-minute load average when the run ended. */
  load: number;
}

export interface HoldoutFile {
  schema: string;
  measuredAt: string;
  machine: string;
  /** What the file is (which holdout, what it was used for). */
  note?: string;
  /** The runtime record each thread count's estimates read (baseline, calibrations). */
  records: Record<number, RuntimeRecord>;
  rows: HoldoutRow[];
}

export interface Judged {
  row: HoldoutRow;
  estimate: PhaseEstimate;
  inside: Record<keyof Peak, boolean>;
  /** Half-width relative to the prediction. */
  width: Record<keyof Peak, number>;
}

/** Each measured row against the estimate the records give now. */
export function judge(file: HoldoutFile): Judged[] {
  return file.rows
    .filter((row) => row.measured)
    .map((row) => {
      const estimate = estimatePhase(presetConfig(row.model), row, file.records[row.threads]);
      const width = (key: keyof Peak) => estimate.uncertainty[key] / estimate.predicted[key];
      return {
        row,
        estimate,
        inside: {
          rss: insideBand(estimate, row.measured!, 'rss'),
          vmSize: insideBand(estimate, row.measured!, 'vmSize'),
        },
        width: { rss: width('rss'), vmSize: width('vmSize') },
      };
    });
}

export interface CoverageGroup {
  name: string;
  runs: number;
  coverage: Peak;
  /** The widest half-band, relative to the prediction. */
  widest: Peak;
}

/** Coverage and width per family of estimate (how it was calibrated) and overall, with the lines to print. */
export function coverage(file: HoldoutFile): { groups: CoverageGroup[]; lines: string[] } {
  const judged = judge(file);
  const families = [...new Set(judged.map((j) => j.estimate.uncertainty.scope))];
  const group = (name: string, members: Judged[]): CoverageGroup => {
    const share = (key: keyof Peak) => members.filter((m) => m.inside[key]).length / members.length;
    const widest = (key: keyof Peak) => Math.max(...members.map((m) => m.width[key]));
    return {
      name,
      runs: members.length,
      coverage: { rss: share('rss'), vmSize: share('vmSize') },
      widest: { rss: widest('rss'), vmSize: widest('vmSize') },
    };
  };
  const groups = [
    ...families.map((f) =>
      group(
        f,
        judged.filter((j) => j.estimate.uncertainty.scope === f),
      ),
    ),
    ...(judged.length ? [group('overall', judged)] : []),
  ];
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const lines = groups.map(
    (g) =>
      `${g.name.padEnd(12)} ${String(g.runs).padStart(3)} run(s)  coverage RSS ${pct(g.coverage.rss).padStart(4)}, VmSize ${pct(g.coverage.vmSize).padStart(4)} ` +
      `(goal ${pct(COVERAGE_GOAL)})  widest band RSS ±${(100 * g.widest.rss).toFixed(1)}%, VmSize ±${(100 * g.widest.vmSize).toFixed(1)}%`,
  );
  return { groups, lines };
}
