// `clip-mem compare`: the regression gate between two `run --json` files, per scenario and figure.
import type { MemoryFigures, RunResults, ScenarioResult } from './result';

/** The figures compared, and the smallest absolute growth that counts (below it is measurement noise). */
export const COMPARED_FIGURES: readonly { figure: keyof MemoryFigures | 'wallMs'; unit: 'bytes' | 'ms' }[] = [
  { figure: 'wallMs', unit: 'ms' },
  { figure: 'rssPeak', unit: 'bytes' },
  { figure: 'vmSizePeak', unit: 'bytes' },
  { figure: 'heapPeak', unit: 'bytes' },
  { figure: 'anonPeak', unit: 'bytes' },
  { figure: 'filePeak', unit: 'bytes' },
  { figure: 'increase', unit: 'bytes' },
];

export interface CompareOptions {
  /** Allowed growth as a fraction: 0.05 = 5%. */
  maxGrowth: number;
  /** Absolute growth below these never fails (noise floor). */
  minBytes: number;
  minMs: number;
}

export interface FigureComparison {
  scenario: string;
  figure: string;
  unit: 'bytes' | 'ms';
  base: number | null;
  next: number | null;
  /** (next - base) / base; null when either side is missing or base is 0. */
  growth: number | null;
  regressed: boolean;
}

export interface Comparison {
  figures: FigureComparison[];
  /** One line per problem that makes the gate fail: a regressed figure, a new failure, a lost scenario. */
  regressions: string[];
}

function figureOf(scenario: ScenarioResult, figure: keyof MemoryFigures | 'wallMs'): number | null {
  return figure === 'wallMs' ? scenario.wallMs : (scenario.memory[figure] ?? null);
}

export function compareRuns(base: RunResults, next: RunResults, options: CompareOptions): Comparison {
  const figures: FigureComparison[] = [];
  const regressions: string[] = [];
  const nextByName = new Map(next.scenarios.map((s) => [s.name, s]));
  for (const before of base.scenarios) {
    const after = nextByName.get(before.name);
    if (!after) {
      regressions.push(`${before.name}: in the base run, missing from the new run`);
      continue;
    }
    if (before.status === 'passed' && after.status === 'failed') {
      regressions.push(`${before.name}: passed before, fails now (${after.diagnosis.cause})`);
    }
    for (const { figure, unit } of COMPARED_FIGURES) {
      const b = figureOf(before, figure);
      const n = figureOf(after, figure);
      const growth = b !== null && n !== null && b > 0 ? (n - b) / b : null;
      const floor = unit === 'bytes' ? options.minBytes : options.minMs;
      const regressed = growth !== null && b !== null && n !== null && growth > options.maxGrowth && n - b > floor;
      figures.push({ scenario: before.name, figure, unit, base: b, next: n, growth, regressed });
      if (regressed) {
        regressions.push(
          `${before.name}: ${figure} grew ${(growth! * 100).toFixed(1)}% (${b} -> ${n} ${unit}), more than ${(options.maxGrowth * 100).toFixed(1)}%`,
        );
      }
    }
  }
  return { figures, regressions };
}

/** "5%", "0.05" and "5" all mean five percent; anything else is a usage error that says so. */
export function parseGrowth(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(text);
  if (!match)
    throw new Error(`--max-growth ${JSON.stringify(text)}: give a percentage such as 5% (or a fraction such as 0.05)`);
  const value = Number(match[1]);
  return match[2] === '%' || value >= 1 ? value / 100 : value;
}
