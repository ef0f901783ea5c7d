// Loads the C++ addon built by `npm install` (cmake-js, or node-gyp via binding.gyp). Each capability
// module under src/ declares the typed slice of the addon it uses; this file only finds the binary.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const packageRoot = path.resolve(__dirname, '..', '..', '..');

const candidates = [
  path.join(packageRoot, 'build', 'Release', 'clip_mem.node'),
  path.join(packageRoot, 'build', 'Debug', 'clip_mem.node'),
];

let cached: Record<string, unknown> | undefined;

export function loadAddon<T>(): T {
  if (!cached) {
    const found = candidates.find((file) => fs.existsSync(file));
    if (!found) {
      throw new Error(
        `clip-mem's native addon is not built (looked for ${candidates.join(', ')}). ` +
          'Run `npm install` (or `npx cmake-js compile --out build`) in the package directory; it needs cmake and g++.',
      );
    }
    cached = require(found) as Record<string, unknown>;
  }
  return cached as T;
}
