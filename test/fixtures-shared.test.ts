// The tests read copies of the team's shared CLIP facts kept in test/fixtures; where ../shared/clip is
// beside the repository, the copies must be byte for byte what it holds.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readFixture, referenceDir, sharedClipDir } from './helpers/paths';

const title = 'test/fixtures/clip and test/fixtures/reference are identical to ../shared/clip';

(sharedClipDir ? test : test.skip)(
  sharedClipDir ? title : `${title} (skipped: no ../shared/clip beside the repository to compare with)`,
  (t) => {
    const shared = sharedClipDir!;
    for (const preset of ['vit-b-32', 'vit-b-16', 'vit-l-14']) {
      const name = `${preset}.tensors.tsv`;
      t.is(readFixture(`clip/${name}.gz`), fs.readFileSync(path.join(shared, name), 'utf8'), name);
    }
    const copies = fs.readdirSync(referenceDir);
    t.true(copies.length >= 6);
    for (const name of copies) {
      const copy = fs.readFileSync(path.join(referenceDir, name));
      t.true(copy.equals(fs.readFileSync(path.join(shared, 'reference', name))), `reference/${name}`);
    }
  },
);
