// Temporary directories for one test file, removed once its tests are done, passed or failed: a run of
// the suite leaves nothing in the system's temporary directory (Chromium profiles alone are ~5 MB each).
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const made: string[] = [];

// Registered when a test file first imports this module, before its tests start.
test.after.always('remove the scratch directories', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A new empty directory under the system's temporary directory, e.g. scratchDir('clip-mem-report-'). */
export function scratchDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}
