// The tracker's native pieces, built next to the addon by the same CMake project (native/preload):
// the LD_PRELOAD interposer and clipmem-exec (sets limits, then execs the traced command).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../core/native';

function findBuilt(file: string, what: string): string {
  const candidates = ['Release', 'Debug'].map((config) => path.join(packageRoot, 'build', config, file));
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new Error(
      `clip-mem's ${what} is not built (looked for ${candidates.join(', ')}). ` +
        'Run `npm install` (or `npx cmake-js compile --out build`) in the package directory; it needs cmake and g++.',
    );
  }
  return found;
}

/** The interposer library to put in LD_PRELOAD. */
export function preloadLibrary(): string {
  return findBuilt('libclipmem_preload.so', 'allocation tracker (libclipmem_preload.so)');
}

/** The exec helper that applies rlimits and cgroup membership before exec. */
export function execHelper(): string {
  return findBuilt('clipmem-exec', 'exec helper (clipmem-exec)');
}
