// `clip-mem compare BASE.json NEW.json`: the regression gate for scripted runs.
import * as path from 'node:path';
import type { CommandModule } from 'yargs';
import { checkReadableFile, jsonTarget, once, usageCheck, withJsonOption, writeJson, type JsonArgs } from '../options';
import { parseBytes } from '../../core/units';
import {
  COMPARE_SCHEMA,
  compareRuns,
  parseGrowth,
  readRunFile,
  showFigure,
  showGrowth,
  verdictOf,
  type Comparison,
} from '../../report/compare';
import type { RunResults } from '../../report/result';

interface CompareArgs extends JsonArgs {
  base: string;
  new: string;
  'max-growth': number;
  'min-bytes': number;
  'min-ms': number;
  'allow-different': boolean;
}

/** The longest noise floor for time: a day. */
const MAX_MIN_MS = 24 * 3600 * 1000;

function parseMinMs(value: unknown): number {
  const text = once(value, '--min-ms').trim();
  const accepted = `give milliseconds from 0 to ${MAX_MIN_MS}, e.g. 50`;
  if (!/^(\d+(\.\d+)?|\.\d+)$/.test(text))
    throw new Error(`--min-ms: ${JSON.stringify(text)} is not a duration: ${accepted}`);
  const ms = Number(text);
  if (ms > MAX_MIN_MS) throw new Error(`--min-ms: ${JSON.stringify(text)} is too large: ${accepted}`);
  return ms;
}

function render(comparison: Comparison, maxGrowth: number, allowDifferent: boolean): string {
  const lines: string[] = [];
  if (comparison.differences.length) {
    lines.push(
      `${comparison.comparable ? 'warning' : 'error'}: the two runs were made with different options, which change the figures:`,
      ...comparison.differences.map(
        (d) => `  ${d.option.padEnd(14)} base ${d.base}, new ${d.next}  (${d.scenarios.join(', ')})`,
      ),
      comparison.comparable
        ? '  (--allow-different: the figures are compared anyway)'
        : '  Rerun one of them with the options of the other, or pass --allow-different to compare the figures anyway.',
      '',
    );
  }
  for (const note of comparison.notes) lines.push(`note: ${note}`);
  if (comparison.notes.length) lines.push('');
  if (!comparison.comparable) return lines.join('\n') + '\n';
  const changed = comparison.outcomes.filter((o) => o.change !== 'still-passing');
  if (changed.length) {
    lines.push(`${'scenario'.padEnd(16)}outcome`);
    for (const o of changed) {
      const what = {
        'still-failing': `failed in both runs (${o.baseCause} -> ${o.nextCause}): figures not compared`,
        regression: `passed -> failed (${o.nextCause})  REGRESSION`,
        improvement: `failed (${o.baseCause}) -> passed  IMPROVEMENT`,
        missing: 'in the base run, missing from the new run  REGRESSION',
        added: `only in the new run (${o.next})`,
        'still-passing': '',
      }[o.change];
      lines.push(`${o.scenario.padEnd(16)}${what}`);
    }
    lines.push('');
  }
  if (comparison.figures.length) {
    lines.push(
      `${'scenario'.padEnd(16)}${'figure'.padEnd(12)}${'base'.padStart(11)}${'new'.padStart(11)}${'growth'.padStart(9)}`,
    );
    for (const f of comparison.figures) {
      const growth = f.growth === null ? '' : showGrowth(f.growth);
      lines.push(
        `${f.scenario.padEnd(16)}${f.figure.padEnd(12)}${showFigure(f.base, f.unit).padStart(11)}${showFigure(f.next, f.unit).padStart(11)}${growth.padStart(9)}${f.regressed ? '  REGRESSION' : ''}`,
      );
    }
    lines.push('');
  }
  if (comparison.improvements.length)
    lines.push(`${comparison.improvements.length} improvement(s):`, ...comparison.improvements.map((r) => `  ${r}`));
  if (comparison.regressions.length)
    lines.push(
      `FAIL: ${comparison.regressions.length} regression(s) past ${(maxGrowth * 100).toFixed(1)}%:`,
      ...comparison.regressions.map((r) => `  ${r}`),
    );
  else
    lines.push(
      `OK: no figure grew more than ${(maxGrowth * 100).toFixed(1)}%${comparison.outcomes.some((o) => o.change === 'regression') ? '' : ', no scenario that passed fails now'}${allowDifferent && comparison.differences.length ? ' (options differ: see the warning)' : ''}`,
    );
  return lines.join('\n') + '\n';
}

function side(file: string, results: RunResults) {
  return {
    file: path.resolve(file),
    command: results.header.command,
    startedAt: results.header.startedAt,
    options: results.header.options,
    finished: results.end !== null,
  };
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare <base> <new>',
  describe:
    'Compare two `run --json` files per scenario and figure; exit 1 when a scenario now fails or memory or time grew past the bound',
  builder: (yargs) =>
    withJsonOption(yargs, 'the comparison (schema/compare.schema.json)')
      .positional('base', {
        type: 'string',
        demandOption: true,
        describe: 'the reference run (JSONL from `clip-mem run --json`)',
      })
      .positional('new', { type: 'string', demandOption: true, describe: 'the run to check against it' })
      .option('max-growth', {
        type: 'string',
        default: '5%',
        describe: 'allowed growth of each figure, e.g. 5% or 0.05 (at most 1000%)',
        coerce: (value: unknown) => parseGrowth(once(value, '--max-growth')),
      })
      .option('min-bytes', {
        type: 'string',
        default: '1M',
        describe: 'memory growth smaller than this never fails (noise floor), e.g. 1M, 0',
        coerce: (value: unknown) =>
          parseBytes(once(value, '--min-bytes'), '--min-bytes', { min: 0, max: 2 ** 47, maxReason: '128 TiB' }),
      })
      .option('min-ms', {
        type: 'string',
        default: '50',
        describe: 'time growth smaller than this many ms never fails (noise floor)',
        coerce: parseMinMs,
      })
      .option('allow-different', {
        type: 'boolean',
        default: false,
        describe:
          'compare the figures even when the runs were made with different options (--model, --dtype, --batch, --limit-*, ...); they are listed as a warning',
      })
      .check(
        usageCheck((args) => {
          checkReadableFile(once(args.base, 'BASE'), 'BASE');
          checkReadableFile(once(args.new, 'NEW'), 'NEW');
        }),
      )
      .example('$0 compare base.json new.json --max-growth 5%', 'fail (exit 1) if any scenario grew more than 5%')
      .epilogue(
        'Outcomes first: a scenario that passed in BASE and fails in NEW, or is missing from NEW, is a regression; one that ' +
          'failed and passes now is an improvement. Figures are compared between scenarios that passed in both runs: wall time, ' +
          'RSS peak, VmSize peak, tracked heap / anonymous / file-mapping peaks, memory increase. Runs made with different ' +
          'options that change the figures (--model, --dtype, --batch, --large-batch, --backend, --threads, --limit-*) are ' +
          'not compared unless --allow-different.\n\n' +
          'Exit status: 0 no regression; 1 a regression; 2 on a usage error, a file that is not a `clip-mem run --json` ' +
          'file, or runs made with different options (without --allow-different).',
      ),
  handler: (args) => {
    let base: RunResults;
    let next: RunResults;
    try {
      base = readRunFile(args.base);
      next = readRunFile(args.new);
    } catch (error) {
      process.stderr.write(`clip-mem compare: ${(error as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    const options = {
      maxGrowth: args['max-growth'],
      minBytes: args['min-bytes'],
      minMs: args['min-ms'],
      allowDifferent: args['allow-different'],
    };
    const comparison = compareRuns(base, next, options);
    const { verdict, exit } = verdictOf(comparison);
    const text = render(comparison, options.maxGrowth, options.allowDifferent);
    if (jsonTarget(args) !== null) {
      writeJson(args, {
        schema: COMPARE_SCHEMA,
        verdict,
        base: side(args.base, base),
        new: side(args.new, next),
        ...options,
        ...comparison,
      });
      // With the JSON on standard output, what the differences are still reaches people.
      if (!comparison.comparable) process.stderr.write(text);
    } else {
      (comparison.comparable ? process.stdout : process.stderr).write(text);
    }
    process.exitCode = exit;
  },
};
