// `clip-mem compare BASE.json NEW.json`: the regression gate for scripted runs.
import type { CommandModule } from 'yargs';
import { jsonTarget, withJsonOption, writeJson, type JsonArgs } from '../options';
import { formatBytes, parseBytes } from '../../core/units';
import { compareRuns, parseGrowth } from '../../report/compare';
import { readResults } from '../../report/result';

interface CompareArgs extends JsonArgs {
  base: string;
  new: string;
  'max-growth': string;
  'min-bytes': string;
  'min-ms': number;
}

function show(value: number | null, unit: 'bytes' | 'ms'): string {
  if (value === null) return '?';
  return unit === 'bytes' ? formatBytes(value) : `${(value / 1000).toFixed(2)} s`;
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare <base> <new>',
  describe: 'Compare two `run --json` files per scenario and figure; exit 1 when memory or time grew past the bound',
  builder: (yargs) =>
    withJsonOption(yargs, 'the comparison')
      .positional('base', {
        type: 'string',
        demandOption: true,
        describe: 'the reference run (JSONL from `clip-mem run --json`)',
      })
      .positional('new', { type: 'string', demandOption: true, describe: 'the run to check against it' })
      .option('max-growth', {
        type: 'string',
        default: '5%',
        describe: 'allowed growth of each figure, e.g. 5% or 0.05',
      })
      .option('min-bytes', {
        type: 'string',
        default: '1M',
        describe: 'memory growth smaller than this never fails (noise floor)',
      })
      .option('min-ms', {
        type: 'number',
        default: 50,
        describe: 'time growth smaller than this many ms never fails (noise floor)',
      })
      .example('$0 compare base.json new.json --max-growth 5%', 'fail (exit 1) if any scenario grew more than 5%')
      .epilogue(
        'Figures compared: wall time, RSS peak, VmSize peak, tracked heap / anonymous / file-mapping peaks, memory increase. ' +
          'A scenario that passed in BASE and fails in NEW, or is missing from NEW, also fails the gate. Exit 0: no regression; 1: regression.',
      ),
  handler: (args) => {
    const maxGrowth = parseGrowth(args['max-growth']);
    const comparison = compareRuns(readResults(args.base), readResults(args.new), {
      maxGrowth,
      minBytes: parseBytes(args['min-bytes']),
      minMs: args['min-ms'],
    });
    if (jsonTarget(args) !== null) {
      writeJson(args, { maxGrowth, ...comparison });
    } else {
      const lines = [
        `${'scenario'.padEnd(16)}${'figure'.padEnd(12)}${'base'.padStart(11)}${'new'.padStart(11)}${'growth'.padStart(9)}`,
      ];
      for (const f of comparison.figures) {
        const growth = f.growth === null ? '' : `${f.growth >= 0 ? '+' : ''}${(f.growth * 100).toFixed(1)}%`;
        lines.push(
          `${f.scenario.padEnd(16)}${f.figure.padEnd(12)}${show(f.base, f.unit).padStart(11)}${show(f.next, f.unit).padStart(11)}${growth.padStart(9)}${f.regressed ? '  REGRESSION' : ''}`,
        );
      }
      lines.push('');
      if (comparison.regressions.length)
        lines.push(
          `FAIL: ${comparison.regressions.length} regression(s) past ${(maxGrowth * 100).toFixed(1)}%:`,
          ...comparison.regressions.map((r) => `  ${r}`),
        );
      else lines.push(`OK: no figure grew more than ${(maxGrowth * 100).toFixed(1)}%`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    process.exitCode = comparison.regressions.length ? 1 : 0;
  },
};
