// The shell examples of README.md and docs/*.md, parsed so that test/docs.test.ts can run them.
//
// An example is a line starting with "$ " inside a fenced block; the lines after it, up to the next "$ "
// line or the end of the block, are its documented output. HTML comments on the lines right before the
// fence mark the block:
//   <!-- not run: REASON -->   too slow or needs what a test machine may lack: only its options are checked
//   <!-- pending: REASON -->   uses what this branch does not implement yet: skipped (listed as a todo)
//   <!-- exit: N -->           the exit status it documents (default 0)
//   <!-- check: first-line --> only the first documented output line is checked (machine-dependent output)
// In documented output, a line "..." stands for any number of lines, and "..." inside a line for any text.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface DocExample {
  file: string;
  /** 1-based line of the "$ " line. */
  line: number;
  /** The command as documented, continuation lines joined. */
  command: string;
  output: string[];
  notRun?: string;
  pending?: string;
  exit: number;
  firstLineOnly: boolean;
}

const MARKER = /^<!--\s*(not run|pending|exit|check):\s*(.*?)\s*-->$/;

export function parseExamples(file: string, text = fs.readFileSync(file, 'utf8')): DocExample[] {
  const lines = text.split('\n');
  const examples: DocExample[] = [];
  let markers: Record<string, string> = {};
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const marker = MARKER.exec(line.trim());
    if (marker) {
      markers[marker[1]!] = marker[2]!;
      continue;
    }
    if (!line.startsWith('```')) {
      if (line.trim()) markers = {};
      continue;
    }
    // A fenced block: collect its "$ " commands and their output.
    let current: DocExample | undefined;
    for (i++; i < lines.length && !lines[i]!.startsWith('```'); i++) {
      const inner = lines[i]!;
      if (inner.startsWith('$ ')) {
        let command = inner.slice(2);
        const at = i + 1;
        while (command.endsWith('\\') && i + 1 < lines.length)
          command = command.slice(0, -1) + ' ' + lines[++i]!.trim();
        current = {
          file,
          line: at,
          command: command.trim(),
          output: [],
          notRun: markers['not run'],
          pending: markers.pending,
          exit: markers.exit !== undefined ? Number(markers.exit) : 0,
          firstLineOnly: markers.check === 'first-line',
        };
        examples.push(current);
      } else if (current) {
        current.output.push(inner);
      }
    }
    markers = {};
  }
  return examples;
}

/** The documented command as bash runs it from the repo root: `clip-mem` (or `npx clip-mem`) is the repo's bin. */
export function shellCommand(command: string): string {
  return command.replace(/(^|[\s;(&|])(?:npx )?clip-mem(?=\s|$|\))/g, '$1node bin/clip-mem.js');
}

/** The clip-mem subcommand and the --options an example uses (options after a bare `--` are the traced program's). */
export function optionsOf(command: string): { subcommand: string | undefined; options: string[] } {
  const words = command.split(/\s+/);
  const at = words.findIndex((w) => /^(\()?clip-mem$/.test(w));
  if (at < 0) return { subcommand: undefined, options: [] };
  const rest = words.slice(at + 1);
  const end = rest.indexOf('--');
  const own = end < 0 ? rest : rest.slice(0, end);
  return {
    subcommand: own[0] && !own[0].startsWith('-') ? own[0] : undefined,
    options: own.filter((w) => /^--[a-z]/.test(w)).map((w) => w.split('=')[0]!),
  };
}

const UNITS = '(?:B|KiB|MiB|GiB|TiB)';

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A word of documented output as a pattern: anything with a digit stands for any word, sizes for any unit. */
function wordPattern(word: string): string {
  if (/\d/.test(word)) return '\\S+';
  const unit = /^(B|KiB|MiB|GiB|TiB)([),;:]*)$/.exec(word);
  if (unit) return UNITS + escape(unit[2]!);
  return escape(word);
}

/** One documented output line as a pattern for one (trimmed) line of real output. */
export function linePattern(line: string): RegExp {
  const parts = line
    .trim()
    .split('...')
    .map((part) => part.trim().split(/\s+/).filter(Boolean).map(wordPattern).join('\\s+'));
  return new RegExp(`^${parts.join('.*')}$`);
}

/**
 * Checks real output against the documented lines, in order (other lines may come between them).
 * Returns the first documented line that is not found, or undefined when all are.
 */
export function missingLine(documented: string[], actual: string, firstLineOnly: boolean): string | undefined {
  const real = actual.split('\n').map((l) => l.trim());
  let wanted = documented.filter((l) => l.trim() && l.trim() !== '...');
  if (firstLineOnly) wanted = wanted.slice(0, 1);
  let from = 0;
  for (const line of wanted) {
    const pattern = linePattern(line);
    const at = real.findIndex((l, i) => i >= from && pattern.test(l));
    if (at < 0) return line;
    from = at + 1;
  }
  return undefined;
}

export function docFiles(root: string): string[] {
  const docs = path.join(root, 'docs');
  return [
    path.join(root, 'README.md'),
    ...fs
      .readdirSync(docs)
      .filter((f) => f.endsWith('.md'))
      .sort()
      .map((f) => path.join(docs, f)),
  ];
}
