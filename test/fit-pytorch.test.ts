// `fit -- <command>` on the seed's own job: Debian's PyTorch building CLIP ViT-B/32. The limits it finds
// pass; 5% below them fails; the search stays within its bound of runs.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fixtures, repoRoot } from './helpers/paths';
import { schemaErrors } from './helpers/schema';
import { torchPython } from './helpers/require-program';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const script = path.join(fixtures, 'python', 'build_clip.py');

function cli(args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 900_000 });
}

for (const target of ['as', 'mem'] as const) {
  test(`--for ${target}: the limit found for PyTorch building CLIP ViT-B/32 passes, 5% below fails`, (t) => {
    t.timeout(20 * 60_000);
    const command = [torchPython(t), script];
    const result = cli(['fit', '--for', target, '--step', '16M', '--runs', '1', '--json', '-', '--', ...command]);
    t.is(result.status, 0, result.stderr);
    const fit = JSON.parse(result.stdout) as {
      outcome: string;
      recommended: number;
      runs: { passed: boolean; cause: string }[];
      maxRuns: number;
    };
    t.is(schemaErrors('fit', fit), '');
    t.is(fit.outcome, 'found');
    // The search's own bound, plus the top of the range and the repeat of both ends of the boundary.
    t.true(fit.runs.length <= fit.maxRuns + 3, `${fit.runs.length} runs, bound ${fit.maxRuns} + 3`);
    const option = target === 'as' ? '--limit-as' : '--limit-mem';
    const at = (bytes: number) => cli(['trace', option, String(Math.floor(bytes)), '--', ...command]);
    t.is(at(fit.recommended).status, 0);
    const below = at(fit.recommended * 0.95);
    t.not(below.status, 0);
    t.regex(below.stderr, target === 'as' ? /diagnosis: address-space/ : /diagnosis: cgroup-oom-kill/);
  });
}
