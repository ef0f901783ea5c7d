#!/usr/bin/env node
// clip-mem's install step (package.json "install"; also run by hand where npm skipped it): nothing to do when
// the prebuilt binaries the package ships match this system and load; otherwise a build from source with
// cmake-js, and when cmake or a C++ compiler is missing, what to install. A repository checkout always builds:
// its tests run what it just compiled. docs/install.md.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function say(line) {
  process.stdout.write(`clip-mem: ${line}\n`);
}

// The loader itself (src/core/native.ts) decides what matches, once compiled: a checkout before `tsc` has none.
let native = null;
try {
  native = require(path.join(root, 'dist', 'src', 'core', 'native.js'));
} catch {
  // A repository checkout: it builds from source anyway.
}

function usablePrebuild() {
  if (!native || fs.existsSync(path.join(root, '.git'))) return null;
  try {
    const prebuild = native.matchingPrebuild();
    if (!prebuild) return null;
    require(path.join(prebuild.dir, 'clip_mem.napi.glibc.node'));
    return prebuild;
  } catch {
    return null;
  }
}

const onPath = (program) =>
  (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, program)));

function buildFromSource() {
  const compilers = process.env.CXX ? [process.env.CXX] : ['c++', 'g++', 'clang++'];
  const missing = [];
  if (!onPath('cmake')) missing.push('cmake (>= 3.15)');
  if (!compilers.some((compiler) => fs.existsSync(compiler) || onPath(compiler))) {
    missing.push(`a C++17 compiler (g++ >= 8 or clang++ >= 7; looked for ${compilers.join(', ')})`);
  }
  if (missing.length > 0) {
    process.stderr.write(
      [
        `clip-mem: no prebuilt binary matches this system (${process.platform}-${process.arch}` +
          `${native ? `; ${native.shippedPrebuilds()}` : ''}), and building from source needs what is not on PATH:`,
        ...missing.map((what) => `  - ${what}`),
        'Install them, then run this again (node ' + path.join(root, 'scripts', 'install.js') + '), e.g.:',
        '  Debian/Ubuntu: apt-get install cmake g++        RHEL/Rocky/Fedora: dnf install cmake gcc-c++',
        '  Alpine: apk add cmake g++ make                  conda: conda install -c conda-forge cmake cxx-compiler',
        '  a cluster with environment modules: module load cmake gcc',
        'docs/install.md has the details.',
        '',
      ].join('\n'),
    );
    return 1;
  }
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const result = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    process.stderr.write('clip-mem: the build from source failed (above); docs/install.md lists what it needs.\n');
  }
  return result.status ?? 1;
}

const prebuild = usablePrebuild();
if (prebuild) {
  say(`native binaries: ${prebuild.description} (${path.relative(root, prebuild.dir)}); nothing to compile`);
} else {
  process.exitCode = buildFromSource();
}
