// Keeps README.md and docs/*.md honest: the quick shell examples are run and their output checked against
// what the page shows (numbers and size units may differ, see test/helpers/doc-examples.ts); the slow ones
// are checked to use only a subcommand and options that exist; every option of every command is
// documented on its page; every diagnosis cause has its section; the install and test commands are real.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { causes } from '../src/diagnose';
import { docFiles, missingLine, optionsOf, parseExamples, shellCommand, type DocExample } from './helpers/doc-examples';
import { repoRoot } from './helpers/paths';

const COMMANDS = ['native-probe', 'trace', 'run', 'compare', 'estimate', 'fit', 'checkpoint', 'slurm'];
const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const relative = (file: string) => path.relative(repoRoot, file);

// The examples write checkpoints and the estimate's baseline: into a cache of their own, shown as the
// default the pages document.
const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-docs-'));
test.after.always(() => fs.rmSync(cache, { recursive: true, force: true }));
const env = { ...process.env, CLIPMEM_CACHE: cache, CLIP_MEM_CACHE: cache };

function shown(output: string): string {
  return output
    .split(cache)
    .join('~/.cache/clip-mem')
    .split(os.homedir() + '/')
    .join('~/');
}

const helpCache = new Map<string, string>();
function help(subcommand?: string): string {
  const key = subcommand ?? '';
  if (!helpCache.has(key)) {
    const args = subcommand ? [bin, subcommand, '--help'] : [bin, '--help'];
    const result = spawnSync(process.execPath, args, { encoding: 'utf8', env });
    helpCache.set(key, result.status === 0 ? result.stdout : '');
  }
  return helpCache.get(key)!;
}

const helpOptions = (subcommand: string) =>
  [...help(subcommand).matchAll(/^\s+(?:-\w, )?(--[a-z][\w-]*)/gm)].map((m) => m[1]!);

// The same command documented on two pages runs once.
const runs = new Map<string, Promise<{ status: number | null; output: string }>>();
function run(example: DocExample): Promise<{ status: number | null; output: string }> {
  if (!runs.has(example.command)) runs.set(example.command, runOnce(example.command));
  return runs.get(example.command)!;
}

function runOnce(command: string): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', `exec 2>&1; ${shellCommand(command)}`], {
      cwd: repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, output });
    });
  });
}

const examples = docFiles(repoRoot).flatMap((file) => parseExamples(file));

for (const example of examples) {
  const title = `${relative(example.file)}:${example.line}: $ ${example.command}`.slice(0, 160);
  if (example.pending) {
    test.todo(`${title} (pending: ${example.pending})`);
  } else if (example.notRun) {
    test(`${title} (not run: options checked)`, (t) => {
      const { subcommand, options } = optionsOf(example.command);
      t.truthy(subcommand, 'names a clip-mem subcommand');
      t.true(COMMANDS.includes(subcommand!), `${subcommand} is a command`);
      t.regex(help(), new RegExp(`clip-mem ${subcommand}\\b`));
      const known = helpOptions(subcommand!);
      for (const option of options) t.true(known.includes(option), `${subcommand} has ${option}`);
    });
  } else {
    test.serial(title, async (t) => {
      const { status, output } = await run(example);
      const real = shown(output);
      t.is(status, example.exit, `exit status; output:\n${real}`);
      const missing = missingLine(example.output, real, example.firstLineOnly);
      t.is(missing, undefined, `documented line not found in the output:\n${missing}\n--- output:\n${real}`);
    });
  }
}

test('every example is found, and most of them run', (t) => {
  const ran = examples.filter((e) => !e.notRun && !e.pending);
  t.true(examples.length >= 20, `${examples.length} examples`);
  t.true(ran.length >= 10, `${ran.length} run`);
});

for (const command of COMMANDS) {
  test(`docs/${command}.md documents every option of clip-mem ${command}`, (t) => {
    const page = fs.readFileSync(path.join(repoRoot, 'docs', `${command}.md`), 'utf8');
    const options = helpOptions(command);
    t.true(options.length > 2, `options of ${command} read from --help`);
    for (const option of options) t.true(page.includes(`\`${option}`), `${option} is documented`);
  });
}

test('docs/causes.md has a section for every diagnosis cause', (t) => {
  const page = fs.readFileSync(path.join(repoRoot, 'docs', 'causes.md'), 'utf8');
  for (const cause of causes) t.true(page.includes(`## \`${cause}\``), cause);
});

test("README's install, run and test commands are the package's", (t) => {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
  t.true(readme.split('\n').length < 200, 'README.md is under 200 lines');
  t.regex(readme, /^npm install\b/m);
  t.truthy(pkg.scripts.install, 'npm install builds the addon (scripts.install)');
  t.regex(readme, /^npx clip-mem native-probe\b/m);
  t.is(pkg.bin['clip-mem'], 'bin/clip-mem.js');
  t.regex(readme, /^npm test\b/m);
  t.truthy(pkg.scripts.test);
  // CI installs the system packages README lists (.ci/run).
  const ci = fs.readFileSync(path.join(repoRoot, '.ci', 'run'), 'utf8');
  const packages = /apt-get install -y -qq ([\w\s-]+?)\s*>/.exec(ci)?.[1]?.split(/\s+/) ?? [];
  t.true(packages.length > 0);
  for (const name of packages) t.regex(readme, new RegExp(`apt-get install -y [\\w\\s-]*\\b${name}\\b`));
});

test('links between the pages resolve', (t) => {
  // Written by other engineers at the same time; checked once they exist.
  const elsewhere = new Set(['ARCHITECTURE.md', path.join('docs', 'record-format.md')]);
  for (const file of docFiles(repoRoot)) {
    const text = fs.readFileSync(file, 'utf8');
    for (const [, target, anchor] of text.matchAll(/\]\(([^)#\s]+\.md)(?:#([^)]*))?\)/g)) {
      const resolved = path.resolve(path.dirname(file), target!);
      if (elsewhere.has(relative(resolved)) && !fs.existsSync(resolved)) continue;
      t.true(fs.existsSync(resolved), `${relative(file)} links to ${target}`);
      if (anchor && fs.existsSync(resolved)) {
        // GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens.
        const ids = [...fs.readFileSync(resolved, 'utf8').matchAll(/^#+ (.*)$/gm)].map((m) =>
          m[1]!
            .toLowerCase()
            .replace(/[^\w\- ]/g, '')
            .replace(/ /g, '-'),
        );
        t.true(ids.includes(anchor), `${relative(file)} links to ${target}#${anchor}`);
      }
    }
  }
});
