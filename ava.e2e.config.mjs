// `npm run test:e2e`: package.json's ava options, over the e2e test files listed in test/suites.json.
import { readFileSync } from 'node:fs';

const read = (file) => JSON.parse(readFileSync(new URL(file, import.meta.url), 'utf8'));
const { ava } = read('./package.json');
const { e2e } = read('./test/suites.json');

export default { ...ava, files: e2e.map((name) => `dist/test/${name}.test.js`) };
