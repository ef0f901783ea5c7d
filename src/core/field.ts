// A measured value, or why it could not be measured. The report prints "unknown: <why>" in place of a
// value it could not read, and goes on: one unreadable file never hides the rest of the report.
import * as fs from 'node:fs';

export type Unknown = `unknown: ${string}`;
export type Field<T> = T | Unknown;
/** A limit in bytes (or a count), or no limit at all. */
export type Limit = number | 'unlimited';

export function unknown(why: string): Unknown {
  return `unknown: ${why}`;
}

export function isUnknown(value: unknown): value is Unknown {
  return typeof value === 'string' && value.startsWith('unknown: ');
}

export function known<T>(value: Field<T>): T | undefined {
  return isUnknown(value) ? undefined : (value as T);
}

/**
 * The JSON form of a report that holds readings. JSON has one spelling for a value that could not be
 * measured, `null`, in every command; why it could not be measured goes to `unknowns`, keyed by the field's
 * path ("process.vmData", "cgroups.groups.0.peak"). Strings in lists (notes) are messages and stay text.
 */
export function unknownsAsNull(value: unknown): { json: unknown; unknowns: Record<string, string> } {
  const unknowns: Record<string, string> = {};
  const walk = (v: unknown, at: string, inList: boolean): unknown => {
    if (isUnknown(v) && !inList) {
      unknowns[at] = v.slice('unknown: '.length);
      return null;
    }
    if (Array.isArray(v)) return v.map((item, i) => walk(item, `${at}.${i}`, true));
    if (v && typeof v === 'object') {
      return Object.fromEntries(
        Object.entries(v).map(([key, item]) => [key, walk(item, at ? `${at}.${key}` : key, false)]),
      );
    }
    return v;
  };
  return { json: walk(value, '', false), unknowns };
}

/** "ENOENT (no such file or directory)" from a Node system error, else the error's message. */
export function describeError(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && typeof e.syscall === 'string') {
    const detail = /^[A-Z]+: ([^,]+),/.exec(e.message)?.[1];
    return detail ? `${e.code} (${detail})` : e.code;
  }
  return e && e.message ? e.message : String(error);
}

/** The file's text, or "unknown: <file>: <why>". */
export function readText(file: string): Field<string> {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    return unknown(`${file}: ${describeError(error)}`);
  }
}

/** Applies `parse` to a field's value; a parse error names the file and what it found. */
export function parseField<T>(text: Field<string>, file: string, parse: (text: string) => T | undefined): Field<T> {
  if (isUnknown(text)) return text;
  const value = parse(text);
  return value === undefined ? unknown(`${file}: cannot read "${text.trim().slice(0, 60)}"`) : value;
}

/** A whole non-negative number of bytes or events, as the kernel writes it. */
export function parseCount(text: string): number | undefined {
  const trimmed = text.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : undefined;
}
