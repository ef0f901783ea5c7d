// Writing a file so that a reader never sees half of it: a crash or a kill mid-write leaves the old
// content (or none), never a torn one.
import * as fs from 'node:fs';

/** Writes `text` to `file` through a temporary file beside it and a rename. */
export function writeFileAtomic(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, text);
  fs.renameSync(temporary, file);
}
