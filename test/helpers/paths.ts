// Paths the tests share: the repo root and its fixtures. The tests read only what is in the repository
// (test/fixtures); the team's shared CLIP facts (../shared/clip beside the repo, or two levels up from a
// git worktree under wt/) are used only to check the copies against them, and for the real CLIP
// vocabulary, which its README says must not be copied into the project.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const fixtures = path.join(repoRoot, 'test', 'fixtures');
export const referenceDir = path.join(fixtures, 'reference');
/** Copies of ../shared/clip/*.tensors.tsv (gzipped). */
export const clipFixturesDir = path.join(fixtures, 'clip');

/** ../shared/clip where it exists beside the repository, else undefined (a clone on its own). */
export const sharedClipDir: string | undefined = [
  path.resolve(repoRoot, '..', 'shared', 'clip'),
  path.resolve(repoRoot, '..', '..', 'shared', 'clip'),
].find((dir) => fs.existsSync(dir));

/** A file under test/fixtures as text; a name ending in .gz is gunzipped. */
export function readFixture(relative: string): string {
  const data = fs.readFileSync(path.join(fixtures, relative));
  return (relative.endsWith('.gz') ? zlib.gunzipSync(data) : data).toString('utf8');
}
