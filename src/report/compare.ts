// `clip-mem compare`: the regression gate between two `run --json` files. It reads outcomes first (a
// scenario that passed and now fails is a regression, one that failed and now passes an improvement),
// compares figures only between runs made with the same options, and says which options differ.
import * as fs from 'node:fs';
import { LIMIT_KINDS, LIMIT_OPTIONS } from '../core/limits';
import { formatBytes } from '../core/units';
import { SCENARIO_CATALOG } from '../scenarios/catalog';
import type { RunOptions } from '../scenarios/scenario';
import { readResults, type MemoryFigures, type RunResults, type ScenarioResult } from './result';

/** Bumped when a field of `compare --json` changes meaning or disappears; adding a field keeps it. */
export const COMPARE_SCHEMA = 'clip-mem-compare/1';

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
  /** Compare the figures even when the runs' options differ (the differences are still reported). */
  allowDifferent?: boolean;
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

/** What happened to one scenario between the two runs. */
export type OutcomeChange = 'still-passing' | 'still-failing' | 'regression' | 'improvement' | 'missing' | 'added';

export interface Outcome {
  scenario: string;
  base: 'passed' | 'failed' | null;
  next: 'passed' | 'failed' | null;
  change: OutcomeChange;
  /** The diagnosis' cause in each run (null where the scenario did not run). */
  baseCause: string | null;
  nextCause: string | null;
  /** Whether this scenario's figures were compared (both passed, with the same options or --allow-different). */
  figuresCompared: boolean;
}

/** An option the two runs were made with that differs, and the scenarios whose figures it changes. */
export interface OptionDifference {
  option: string;
  base: string;
  next: string;
  scenarios: string[];
}

export interface Comparison {
  /** false when options that change the figures differ and allowDifferent was not given: nothing was compared. */
  comparable: boolean;
  differences: OptionDifference[];
  /** Things worth knowing that do not decide the gate: another machine, a run that did not finish. */
  notes: string[];
  outcomes: Outcome[];
  figures: FigureComparison[];
  /** One line per problem that makes the gate fail: a regressed figure, a new failure, a lost scenario. */
  regressions: string[];
  /** One line per scenario that failed in the base run and passes now. */
  improvements: string[];
}

/** The gate's verdict and exit status: 0 ok, 1 regression, 2 runs that cannot be compared. */
export function verdictOf(comparison: Comparison): { verdict: 'ok' | 'regression' | 'not-comparable'; exit: number } {
  if (!comparison.comparable) return { verdict: 'not-comparable', exit: 2 };
  return comparison.regressions.length ? { verdict: 'regression', exit: 1 } : { verdict: 'ok', exit: 0 };
}

function figureOf(scenario: ScenarioResult, figure: keyof MemoryFigures | 'wallMs'): number | null {
  return figure === 'wallMs' ? scenario.wallMs : (scenario.memory[figure] ?? null);
}

/** A figure for people: "75 MiB", "1.24 s"; JSON keeps the exact numbers. */
export function showFigure(value: number | null, unit: 'bytes' | 'ms'): string {
  if (value === null) return '?';
  return unit === 'bytes' ? formatBytes(value) : `${(value / 1000).toFixed(2)} s`;
}

export function showGrowth(growth: number): string {
  return `${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(1)}%`;
}

/** The options of a run that change its figures, as the command line spells them, and which scenarios they touch. */
const COMPARED_OPTIONS: readonly {
  option: string;
  value: (o: RunOptions) => string;
  touches: (scenario: string) => boolean;
}[] = [
  { option: '--model', value: (o) => String(o.model), touches: () => true },
  { option: '--dtype', value: (o) => String(o.dtype), touches: () => true },
  { option: '--batch', value: (o) => String(o.batch), touches: (s) => batchOptionOf(s, 'batch') },
  { option: '--large-batch', value: (o) => String(o.largeBatch), touches: (s) => batchOptionOf(s, 'largeBatch') },
  { option: '--backend', value: (o) => String(o.backend), touches: () => true },
  { option: '--threads', value: (o) => String(o.threads), touches: () => true },
  // Children sharing the cores take longer.
  { option: '--jobs', value: (o) => String(o.jobs), touches: () => true },
  ...LIMIT_KINDS.map((kind) => ({
    option: LIMIT_OPTIONS[kind],
    value: (o: RunOptions) => {
      const bytes = o.limits?.[kind];
      return bytes === undefined || bytes === null ? 'none' : `${formatBytes(bytes)} (${bytes} B)`;
    },
    touches: () => true,
  })),
];

function batchOptionOf(scenario: string, option: 'batch' | 'largeBatch'): boolean {
  const entry = SCENARIO_CATALOG.find((s) => s.name === scenario);
  return entry === undefined || entry.batchOption === option;
}

function optionDifferences(base: RunResults, next: RunResults, shared: string[]): OptionDifference[] {
  const differences: OptionDifference[] = [];
  for (const { option, value, touches } of COMPARED_OPTIONS) {
    const b = value(base.header.options);
    const n = value(next.header.options);
    const scenarios = shared.filter(touches);
    if (b !== n && scenarios.length) differences.push({ option, base: b, next: n, scenarios });
  }
  return differences;
}

function environmentNotes(base: RunResults, next: RunResults): string[] {
  const notes: string[] = [];
  const b = base.header.environment;
  const n = next.header.environment;
  const differs = (label: string, x: unknown, y: unknown) => {
    if (x !== undefined && y !== undefined && x !== y)
      notes.push(`${label} differs: ${String(x)} in the base run, ${String(y)} in the new one`);
  };
  if (b && n) {
    differs('the host', b.hostname, n.hostname);
    differs('the CPU count', b.cpus, n.cpus);
    differs('Node.js', b.node, n.node);
    differs('clip-mem', b.clipMemVersion, n.clipMemVersion);
  }
  if (!base.end) notes.push('the base run did not finish (it was killed): only its finished scenarios are compared');
  if (!next.end) notes.push('the new run did not finish (it was killed): only its finished scenarios are compared');
  return notes;
}

export function compareRuns(base: RunResults, next: RunResults, options: CompareOptions): Comparison {
  const nextByName = new Map(next.scenarios.map((s) => [s.name, s]));
  const baseNames = new Set(base.scenarios.map((s) => s.name));
  const shared = base.scenarios.map((s) => s.name).filter((name) => nextByName.has(name));
  const differences = optionDifferences(base, next, shared);
  const comparable = differences.length === 0 || options.allowDifferent === true;
  const notes = environmentNotes(base, next);
  const figures: FigureComparison[] = [];
  const regressions: string[] = [];
  const improvements: string[] = [];
  const outcomes: Outcome[] = [];
  for (const before of base.scenarios) {
    const after = nextByName.get(before.name);
    const outcome: Outcome = {
      scenario: before.name,
      base: before.status,
      next: after?.status ?? null,
      change: 'missing',
      baseCause: before.diagnosis?.cause ?? null,
      nextCause: after?.diagnosis?.cause ?? null,
      figuresCompared: false,
    };
    outcomes.push(outcome);
    if (!after) {
      if (comparable) regressions.push(`${before.name}: in the base run, missing from the new run`);
      continue;
    }
    if (before.status === 'passed' && after.status === 'failed') {
      outcome.change = 'regression';
      if (comparable) regressions.push(`${before.name}: passed before, fails now (${after.diagnosis.cause})`);
      continue;
    }
    if (before.status === 'failed' && after.status === 'passed') {
      outcome.change = 'improvement';
      improvements.push(`${before.name}: failed before (${before.diagnosis.cause}), passes now`);
      continue;
    }
    if (before.status === 'failed') {
      // Where a run died says nothing about how much it needs: figures of two failures are not compared.
      outcome.change = 'still-failing';
      continue;
    }
    outcome.change = 'still-passing';
    if (!comparable) continue;
    outcome.figuresCompared = true;
    for (const { figure, unit } of COMPARED_FIGURES) {
      const b = figureOf(before, figure);
      const n = figureOf(after, figure);
      const growth = b !== null && n !== null && b > 0 ? (n - b) / b : null;
      const floor = unit === 'bytes' ? options.minBytes : options.minMs;
      const regressed = growth !== null && b !== null && n !== null && growth > options.maxGrowth && n - b > floor;
      figures.push({ scenario: before.name, figure, unit, base: b, next: n, growth, regressed });
      if (regressed) {
        regressions.push(
          `${before.name}: ${figure} grew ${showGrowth(growth!)} (${showFigure(b, unit)} -> ${showFigure(n, unit)}), more than ${(options.maxGrowth * 100).toFixed(1)}%`,
        );
      }
    }
  }
  for (const after of next.scenarios) {
    if (baseNames.has(after.name)) continue;
    outcomes.push({
      scenario: after.name,
      base: null,
      next: after.status,
      change: 'added',
      baseCause: null,
      nextCause: after.diagnosis?.cause ?? null,
      figuresCompared: false,
    });
    notes.push(`${after.name}: only in the new run (${after.status}), nothing to compare it with`);
  }
  return { comparable, differences, notes, outcomes, figures, regressions, improvements };
}

/** "5%", "0.05" and "5" all mean five percent; anything else is a usage error that says so. */
export function parseGrowth(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*$/.exec(String(text));
  const accepted = 'give a percentage from 0% to 1000%, such as 5% (or a fraction below 1, such as 0.05)';
  if (!match) throw new Error(`--max-growth: ${JSON.stringify(String(text))} is not a growth: ${accepted}`);
  const value = Number(match[1]);
  const growth = match[2] === '%' || value >= 1 ? value / 100 : value;
  if (growth > 10) throw new Error(`--max-growth: ${JSON.stringify(String(text))} is too large: ${accepted}`);
  return growth;
}

/**
 * Reads a `clip-mem run --json` file for compare, refusing with a sentence what is not one: an empty file,
 * a line that is not a JSON object (`null`, a number, an array), another command's JSON, a run that holds
 * no scenario.
 */
export function readRunFile(file: string): RunResults {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`);
  }
  if (text.trim() === '') throw new Error(`${file} is empty: compare reads the JSON lines of \`clip-mem run --json\``);
  const lines = text.split('\n');
  const firstLine = lines.findIndex((line) => line.trim() !== '');
  try {
    JSON.parse(lines[firstLine]!);
  } catch {
    // Pretty-printed JSON is another command's output (trace, estimate, fit, compare): say which.
    let whole: unknown;
    try {
      whole = JSON.parse(text);
    } catch {
      whole = undefined;
    }
    const schema = whole && typeof whole === 'object' ? (whole as { schema?: unknown }).schema : undefined;
    if (typeof schema === 'string')
      throw new Error(`${file} holds ${schema} JSON, not the JSON lines of \`clip-mem run --json\` that compare reads`);
  }
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return; // readResults says which line is not JSON (and forgives a torn last line)
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new Error(
        `${file}:${index + 1}: ${JSON.stringify(value).slice(0, 40)} is not a line of \`clip-mem run --json\` (each line is a JSON object)`,
      );
  });
  const results = readResults(file);
  if (!results.scenarios.length)
    throw new Error(`${file} holds no scenario result (the run stopped before its first scenario finished)`);
  for (const [index, s] of results.scenarios.entries()) {
    if (
      typeof s.name !== 'string' ||
      (s.status !== 'passed' && s.status !== 'failed') ||
      typeof s.memory !== 'object' ||
      s.memory === null
    )
      throw new Error(
        `${file}: scenario line ${index + 1} lacks its name, status or memory figures; is it from this clip-mem?`,
      );
  }
  if (typeof results.header.options !== 'object' || results.header.options === null)
    throw new Error(`${file}: the run header lacks its options; is it from this clip-mem?`);
  return results;
}
