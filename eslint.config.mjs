// ESLint for the TypeScript sources, tests and scripts; Prettier owns the layout (npm run lint runs both).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'test/fixtures/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // `_name` marks a value destructured only to leave it out.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // require() stays where a module is loaded only when needed: optional runtimes (tfjs-node, sharp,
      // onnxruntime), the native addon found at run time, and package.json.
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  {
    // ava's config files are ES modules run by Node.
    files: ['*.mjs'],
    languageOptions: { globals: { URL: 'readonly' } },
  },
  {
    files: ['bin/*.js', 'scripts/*.js', '*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { require: 'readonly', module: 'writable', process: 'readonly', __dirname: 'readonly' },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
