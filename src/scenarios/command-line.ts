// The `clip-mem run` command line that reproduces a run, built from its options (never by editing text):
// the reports print it, and fixes print it with the options they change.
import { LIMIT_KINDS, LIMIT_OPTIONS, limitText } from '../core/limits';
import { catalogEntry } from './catalog';
import type { RunOptions } from './scenario';

/** The run's options as a command line; `outputs` appends the report options (e.g. " --json run.json"). */
export function commandLine(names: readonly string[], options: RunOptions, outputs = ''): string {
  const parts = [
    'clip-mem run',
    ...names,
    `--model ${options.model}`,
    `--dtype ${options.dtype}`,
    `--batch ${options.batch}`,
  ];
  if (names.some((name) => catalogEntry(name).batchOption === 'largeBatch')) {
    parts.push(`--large-batch ${options.largeBatch}`);
  }
  parts.push(`--backend ${options.backend}`, `--threads ${options.threads}`);
  // How many ran at once changes their times (not their memory): said when there was more than one.
  if (names.length > 1) parts.push(`--jobs ${options.jobs}`);
  for (const kind of LIMIT_KINDS) {
    const bytes = options.limits[kind];
    if (bytes !== undefined) parts.push(`${LIMIT_OPTIONS[kind]} ${limitText(bytes)}`);
  }
  return parts.join(' ') + outputs;
}
