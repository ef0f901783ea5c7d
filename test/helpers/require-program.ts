// Tests that run an external program say which one is missing and how to install it, before they start:
// never a spawn error, a null status or an assertion deep inside.
import type { ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The program's path on PATH (or the path itself when it has a slash and is executable), else undefined. */
export function findProgram(program: string): string | undefined {
  const candidates = program.includes('/')
    ? [program]
    : (process.env.PATH ?? '')
        .split(path.delimiter)
        .filter(Boolean)
        .map((dir) => path.join(dir, program));
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  });
}

/**
 * Fails the test with "install X (Debian: apt-get install X)" and throws, so that it stops there, when
 * the program is not on PATH; returns its path otherwise. E.g. requireProgram(t, 'chromium', 'apt-get install chromium').
 */
export function requireProgram(t: ExecutionContext, program: string, debianInstall: string): string {
  const found = findProgram(program);
  if (found) return found;
  const message = `this test needs ${program}, which is not on PATH: install it (Debian: ${debianInstall})`;
  t.fail(message);
  throw new Error(message);
}

/** A python3 that imports torch: the one on PATH, else Debian's (a pyenv python3 may come first). */
export function torchPython(t: ExecutionContext): string {
  for (const python of ['python3', '/usr/bin/python3']) {
    if (spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return python;
  }
  const message = 'this test needs PyTorch for python3: install it (Debian: apt-get install python3-torch)';
  t.fail(message);
  throw new Error(message);
}
