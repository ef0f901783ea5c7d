import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');

test('--help lists the commands and exits 0', (t) => {
  const result = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
  t.is(result.status, 0, result.stderr);
  t.regex(result.stdout, /clip-mem <command>/);
});

test('a usage error exits 2 and says where help is', (t) => {
  const result = spawnSync(process.execPath, [bin, '--no-such-option'], { encoding: 'utf8' });
  t.is(result.status, 2);
  t.regex(result.stderr, /^clip-mem: .*\nRun `clip-mem --help`/);
});
