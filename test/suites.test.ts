// `npm run test:unit` and `npm run test:e2e` together run every test file, each exactly once: every
// test/<name>.test.ts, and every dist/test/<name>.test.js built from one, is in exactly one list of
// test/suites.json (which ava.unit.config.mjs and ava.e2e.config.mjs read).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './helpers/paths';

const suites = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test', 'suites.json'), 'utf8')) as Record<
  'unit' | 'e2e',
  string[]
>;

/** Test names under dir: "cgroup" for cgroup.test.ts, "a/b" for a/b.test.ts; fixtures left out. */
function testNames(dir: string, suffix: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((file) => file.endsWith(suffix) && !file.split(path.sep).includes('fixtures'))
    .map((file) => file.slice(0, -suffix.length).split(path.sep).join('/'))
    .sort();
}

function suitesOf(name: string): string[] {
  return (['unit', 'e2e'] as const).flatMap((suite) => suites[suite].filter((n) => n === name).map(() => suite));
}

test('every test file is in exactly one of the unit and e2e suites', (t) => {
  const sources = testNames(path.join(repoRoot, 'test'), '.test.ts');
  t.true(sources.includes('suites'));
  const built = testNames(path.join(repoRoot, 'dist', 'test'), '.test.js');
  const stale = built.filter((name) => !sources.includes(name));
  t.deepEqual(stale, [], `dist/test has tests with no test/*.test.ts (stale build output? remove dist and rebuild)`);
  for (const name of new Set([...sources, ...built])) {
    const found = suitesOf(name);
    t.is(
      found.length,
      1,
      `test/${name}.test.ts is in ${found.length ? found.join(' and ') : 'neither suite'}: list it once, under "unit" or "e2e", in test/suites.json`,
    );
  }
  const unknown = [...suites.unit, ...suites.e2e].filter((name) => !sources.includes(name));
  t.deepEqual(unknown, [], 'test/suites.json names tests that do not exist');
});
