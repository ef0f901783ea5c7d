// Paths the tests share: the repo root, its fixtures, and the team's shared CLIP facts (../shared/clip
// beside the repo; a git worktree under wt/ finds it one level further up).
import * as fs from 'node:fs';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const fixtures = path.join(repoRoot, 'test', 'fixtures');
export const referenceDir = path.join(fixtures, 'reference');

export const sharedClipDir =
  [path.resolve(repoRoot, '..', 'shared', 'clip'), path.resolve(repoRoot, '..', '..', 'shared', 'clip')].find((dir) =>
    fs.existsSync(dir),
  ) ?? path.resolve(repoRoot, '..', 'shared', 'clip');
