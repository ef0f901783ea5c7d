// Writing a file so that a reader never sees half of it: a crash or a kill mid-write leaves the old
// content (or none), never a torn one. A write that fails says which file, why, and what to do.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describeError } from './field';

const remedies: Record<string, string> = {
  ENOSPC: 'the filesystem is full: free space there',
  EDQUOT: 'the disk quota is used up: free space there',
  EROFS: 'the filesystem is read-only',
  EACCES: 'it is not writable by this user',
  EPERM: 'it is not writable by this user',
};

/**
 * The error of a failed write, naming the file, the errno and the way out: another directory (clip-mem's
 * cache moves with CLIPMEM_CACHE).
 */
export function writeError(error: unknown, file: string): Error {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const remedy = remedies[code];
  return new Error(
    `cannot write ${file}: ${describeError(error)}` +
      (remedy ? `; ${remedy}, or write elsewhere (clip-mem's cache: set CLIPMEM_CACHE to another directory)` : ''),
  );
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir retries for ever where the kernel answers ENOENT
 * for an existing parent (a directory under /proc), so a bad cache path would hang instead of failing.
 */
export function makeDirectory(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); !fs.existsSync(at); at = path.dirname(at)) missing.unshift(at);
  for (const part of missing) fs.mkdirSync(part);
}

/** Writes `text` to `file` through a temporary file beside it and a rename. */
export function writeFileAtomic(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(temporary, text);
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw writeError(error, file);
  }
}
