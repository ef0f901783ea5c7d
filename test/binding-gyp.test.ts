// binding.gyp builds the same addon as CMakeLists.txt for consumers without cmake: build it with npm's own
// node-gyp, offline, in a fresh directory holding only what binding.gyp needs, then compare it with the
// cmake-js build and call it.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { requireProgram } from './helpers/require-program';

const cmakeAddon = path.join(repoRoot, 'build', 'Release', 'clip_mem.node');

// The node-gyp npm uses for install scripts: npm hands its path to scripts it runs (`npm test`), else the
// copy bundled with the global npm.
function findNodeGyp(): string {
  const candidates: string[] = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' });
  if (npmRoot.status === 0) {
    candidates.push(path.join(npmRoot.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(path.join(repoRoot, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((file) => fs.existsSync(file));
  if (!found) {
    throw new Error(
      `node-gyp not found (looked at ${candidates.join(', ')}). It ships with npm; ` +
        'install npm (Debian: apt-get install npm) or `npm install -g node-gyp`.',
    );
  }
  return found;
}

// Headers of the running node, so node-gyp never downloads them: npm's `nodedir` setting, else the
// installation prefix of this node (Debian's nodejs puts them in /usr/include/node).
function findNodeDir(): string {
  const candidates = [process.env.npm_config_nodedir, path.resolve(process.execPath, '..', '..')].filter(
    (dir): dir is string => !!dir,
  );
  const found = candidates.find((dir) => fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h')));
  if (!found) {
    throw new Error(
      `node's headers not found (looked for include/node/node_api.h under ${candidates.join(', ')}). ` +
        'Install them (Debian: apt-get install libnode-dev) or set `npm config set nodedir <prefix>`.',
    );
  }
  return found;
}

type Shape = Record<string, string>;

function shapeOf(addon: Record<string, unknown>): Shape {
  return Object.fromEntries(
    Object.keys(addon)
      .sort()
      .map((name) => [name, typeof addon[name]]),
  );
}

test('binding.gyp builds the addon offline with node-gyp; same exports as the cmake-js build, and it works', (t) => {
  // node-gyp runs gyp (python3), make and the C++ compiler.
  requireProgram(t, 'python3', 'apt-get install python3');
  requireProgram(t, 'make', 'apt-get install make');
  requireProgram(t, 'g++', 'apt-get install g++');
  requireProgram(t, 'prlimit', 'apt-get install util-linux');
  t.true(fs.existsSync(cmakeAddon), `${cmakeAddon} missing: build it first (npx cmake-js compile --out build)`);
  const nodeGyp = findNodeGyp();
  const nodeDir = findNodeDir();

  const dir = scratchDir('clip-mem-gyp-');
  for (const entry of ['binding.gyp', 'package.json', 'native']) {
    fs.cpSync(path.join(repoRoot, entry), path.join(dir, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'), 'dir');

  const build = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, '-j', '2'], {
    cwd: dir,
    encoding: 'utf8',
    // node-gyp must not reach the network; its cache goes into the temporary directory.
    env: { ...process.env, HOME: dir, npm_config_devdir: path.join(dir, '.node-gyp'), npm_config_offline: 'true' },
  });
  t.is(build.status, 0, `node-gyp rebuild failed:\n${build.stdout}\n${build.stderr}`);
  const gypAddon = path.join(dir, 'build', 'Release', 'clip_mem.node');
  t.true(fs.existsSync(gypAddon), `node-gyp reported success but wrote no ${gypAddon}`);

  const cmakeExports = shapeOf(require(cmakeAddon) as Record<string, unknown>);
  const gypExports = shapeOf(require(gypAddon) as Record<string, unknown>);
  t.deepEqual(gypExports, cmakeExports);
  t.true(Object.keys(gypExports).length > 0);

  // One real call, in a child under a known address-space limit: the gyp build reads RLIMIT_AS exactly.
  const limit = 4 * 2 ** 30;
  const call = spawnSync(
    'prlimit',
    [
      `--as=${limit}`,
      process.execPath,
      '-e',
      `process.stdout.write(JSON.stringify(require(${JSON.stringify(gypAddon)}).readResourceLimits().as))`,
    ],
    { encoding: 'utf8' },
  );
  t.is(call.status, 0, call.stderr);
  t.deepEqual(JSON.parse(call.stdout), { soft: limit, hard: limit });
});
