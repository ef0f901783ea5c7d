// `npm run test:unit`: package.json's ava options, over the unit test files listed in test/suites.json.
import { readFileSync } from 'node:fs';

const read = (file) => JSON.parse(readFileSync(new URL(file, import.meta.url), 'utf8'));
const { ava } = read('./package.json');
const { unit } = read('./test/suites.json');

export default { ...ava, files: unit.map((name) => `dist/test/${name}.test.js`) };
