// Leftovers of runs whose clip-mem was killed (SIGKILL, a crash) before its cleanup: cgroups and record
// directories carry their creator's pid in their name, and the next run removes those whose creator is gone.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** True while a process with this pid exists (EPERM: it exists, another user's). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The entries of `directory` whose name matches `pattern` (its first group: the creating pid) and whose
 * creator is gone, as full paths; none when the directory cannot be read.
 */
export function staleEntries(directory: string, pattern: RegExp): string[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(directory);
  } catch {
    return [];
  }
  return names
    .filter((name) => {
      const match = pattern.exec(name);
      return match !== null && !isAlive(Number(match[1]));
    })
    .map((name) => path.join(directory, name));
}
