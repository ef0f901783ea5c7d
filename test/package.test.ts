// The npm package as a cluster user gets it: packed with the prebuilt binaries built as `prepack` builds them
// (scripts/prebuild.js), every shipped binary under the glibc floor, and the tarball installed into an empty
// directory with no compiler on PATH, where native-probe, trace and run work from the prebuilds alone.
// docs/install.md.
import test from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceReport } from '../src/report/trace-report';
import { repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { schemaErrors } from './helpers/schema';
import { allocProgram } from './helpers/trace';

/** The newest glibc symbol version a shipped binary may reference (docs/install.md). */
const GLIBC_FLOOR = [2, 17];
/** What a shipped binary may link: the C library's own parts, never a C++ runtime. */
const ALLOWED_NEEDED = ['libc.so.6', 'libm.so.6', 'libpthread.so.0', 'libdl.so.2', 'librt.so.1'];
const TARGET = `${process.platform}-${process.arch}`;
const PREBUILT = /^prebuilt linux-x64, glibc >= 2\.17, zig [\d.]+$/;

function check(result: SpawnSyncReturns<string>, what: string): string {
  if (result.status !== 0) throw new Error(`${what} failed (${result.status}): ${result.stderr}${result.stdout}`);
  return result.stdout;
}

// npm's own variables (set when the tests run under `npm test`) would steer the install inside the test.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));

interface DynamicSymbol {
  name: string;
  /** GLIBC_2.14 for a reference bound to a version, null for none. */
  version: string | null;
  bind: string;
  undefined: boolean;
}

function dynamicSymbols(binary: string): DynamicSymbol[] {
  const table = check(spawnSync('readelf', ['-W', '--dyn-syms', binary], { encoding: 'utf8' }), 'readelf');
  return table
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => /^\d+:$/.test(fields[0] ?? '') && fields[7])
    .map((fields) => {
      const [name, version] = fields[7]!.split(/@+/);
      return { name: name!, version: version ?? null, bind: fields[4]!, undefined: fields[6] === 'UND' };
    });
}

interface Packed {
  tarball: string;
  size: number;
  unpackedSize: number;
  files: string[];
  /** The tarball extracted: package/... */
  extracted: string;
}

let packed: Packed | undefined;
function pack(): Packed {
  if (packed) return packed;
  check(spawnSync(process.execPath, ['scripts/prebuild.js'], { cwd: repoRoot, encoding: 'utf8' }), 'prebuild');
  const dir = scratchDir('clip-mem-pack-');
  // prepack's prebuild ran just above; `prepare` (tsc) already ran for the tests to exist.
  const out = check(
    spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: cleanEnv,
    }),
    'npm pack',
  );
  const [info] = JSON.parse(out) as {
    filename: string;
    size: number;
    unpackedSize: number;
    files: { path: string }[];
  }[];
  const tarball = path.join(dir, info!.filename);
  check(spawnSync('tar', ['xzf', tarball, '-C', dir], { encoding: 'utf8' }), 'tar');
  packed = {
    tarball,
    size: info!.size,
    unpackedSize: info!.unpackedSize,
    files: info!.files.map((f) => f.path),
    extracted: path.join(dir, 'package'),
  };
  return packed;
}

test('the package ships the prebuilds, the sources to build from, and no tests, fixtures or build trees', (t) => {
  const { files, size, unpackedSize } = pack();
  t.log(`package: ${(size / 2 ** 20).toFixed(2)} MiB packed, ${(unpackedSize / 2 ** 20).toFixed(2)} MiB unpacked`);
  for (const file of ['clip_mem.napi.glibc.node', 'libclipmem_preload.so', 'clipmem-exec', 'prebuild.json']) {
    t.true(files.includes(`prebuilds/${TARGET}/${file}`), file);
  }
  for (const file of [
    'CMakeLists.txt',
    'native/preload/CMakeLists.txt',
    'native/record/hooks.h',
    'scripts/install.js',
  ]) {
    t.true(files.includes(file), file);
  }
  const unwanted = files.filter((file) =>
    /^(test|build|\.cache|dist\/test|dist\/scripts|native\/test|node_modules)\/|\.js\.map$|\.tgz$/.test(file),
  );
  t.deepEqual(unwanted, []);
  t.true(size < 3 * 2 ** 20, `packed size ${size}`);
});

test(`every shipped binary loads with glibc ${GLIBC_FLOOR.join('.')} and brings its C++ runtime inside`, (t) => {
  const { extracted, files } = pack();
  const binaries = files
    .filter((file) => file.startsWith('prebuilds/'))
    .map((file) => path.join(extracted, file))
    .filter((file) => fs.readFileSync(file).subarray(0, 4).equals(Buffer.from('\x7fELF', 'latin1')));
  t.true(binaries.length >= 3);
  for (const binary of binaries) {
    // readelf reads every architecture's ELF (objdump only the host's): the symbol table with each
    // reference's version, and the libraries it needs.
    const symbols = dynamicSymbols(binary);
    const name = path.relative(extracted, binary);
    const versions = [...new Set(symbols.map((symbol) => symbol.version).filter((v): v is string => v !== null))];
    const glibc = versions.filter((v) => v.startsWith('GLIBC_')).map((v) => v.slice(6).split('.').map(Number));
    const above = glibc.filter((v) => v[0]! > GLIBC_FLOOR[0]! || (v[0] === GLIBC_FLOOR[0] && v[1]! > GLIBC_FLOOR[1]!));
    t.deepEqual(above, [], `${name} needs a newer glibc`);
    t.deepEqual(
      versions.filter((v) => /^(GLIBCXX|CXXABI|GCC)_/.test(v)),
      [],
      `${name} references libstdc++ or libgcc_s`,
    );
    // A reference the floor's glibc lacks is left without a version: it must be weak (checked before use),
    // or Node's own (the addon's napi_*).
    t.deepEqual(
      symbols
        .filter((s) => s.undefined && s.version === null && s.bind === 'GLOBAL' && !/^(napi|node_api)_/.test(s.name))
        .map((s) => s.name),
      [],
      `${name} references functions a glibc ${GLIBC_FLOOR.join('.')} may lack`,
    );
    const dynamic = check(spawnSync('readelf', ['-d', binary], { encoding: 'utf8' }), 'readelf -d');
    const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[(\S+)\]/g)].map((m) => m[1]!);
    t.deepEqual(
      needed.filter((lib) => !ALLOWED_NEEDED.includes(lib)),
      [],
      `${name} links ${needed.join(', ')}`,
    );
  }
  // The C++ runtime linked into them is not visible to the process that loads them: the addon exports only
  // what Node looks up, and the tracker only its hooks (none of them C++, unwinder or runtime symbols).
  for (const dir of fs.readdirSync(path.join(extracted, 'prebuilds'))) {
    const exported = (file: string) =>
      dynamicSymbols(path.join(extracted, 'prebuilds', dir, file))
        .filter((s) => !s.undefined)
        .map((s) => s.name);
    t.deepEqual(exported('clip_mem.napi.glibc.node').sort(), [
      'napi_register_module_v1',
      'node_api_module_get_api_version_v1',
    ]);
    const tracker = exported('libclipmem_preload.so');
    t.true(tracker.includes('malloc') && tracker.includes('mmap') && tracker.includes('free'), dir);
    t.deepEqual(
      tracker.filter((symbol) => /^(_Z|_Unwind|__cxa|__gxx|unw_)/.test(symbol)),
      [],
    );
  }
});

/** A PATH holding only links to the tools the installed package may use: no cmake, cc, c++, g++, make. */
function toolPath(dir: string): string {
  const tools = path.join(dir, 'tools');
  fs.mkdirSync(tools);
  for (const tool of ['npm', 'sh', 'bash', 'env', 'python3']) {
    const found = check(spawnSync('bash', ['-c', `command -v ${tool}`], { encoding: 'utf8' }), `find ${tool}`).trim();
    fs.symlinkSync(tool === 'python3' ? '/usr/bin/python3' : found, path.join(tools, tool));
  }
  fs.symlinkSync(process.execPath, path.join(tools, 'node'), 'file');
  return tools;
}

test('the tarball installs offline with no compiler on PATH and runs from its prebuilds', (t) => {
  const { tarball } = pack();
  const app = scratchDir('clip-mem-install-');
  // onnxruntime-node's documented switch: its install step would fetch CUDA libraries (docs/install.md).
  const env = { ...cleanEnv, PATH: toolPath(app), ONNXRUNTIME_NODE_INSTALL: 'skip' };
  for (const compiler of ['cmake', 'cc', 'c++', 'g++', 'gcc', 'make']) {
    t.is(spawnSync('bash', ['-c', `command -v ${compiler}`], { env }).status, 1, `${compiler} is not on PATH`);
  }
  fs.writeFileSync(path.join(app, 'package.json'), '{ "name": "app", "private": true }\n');
  const install = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
    cwd: app,
    env,
    encoding: 'utf8',
  });
  check(install, 'npm install');
  t.notRegex(install.stdout + install.stderr, /Unknown (project )?config|ERR!|cmake/i);

  const installed = path.join(app, 'node_modules', 'clip-mem');
  const clipMem = (args: string[]) =>
    spawnSync(path.join(app, 'node_modules', '.bin', 'clip-mem'), args, { cwd: app, env, encoding: 'utf8' });
  // npm may skip a dependency's install script (allowScripts): the package works without it, and where it
  // runs, it finds the prebuild and compiles nothing.
  const script = spawnSync(process.execPath, [path.join(installed, 'scripts', 'install.js')], {
    env,
    encoding: 'utf8',
  });
  t.is(script.status, 0, script.stderr);
  t.regex(
    script.stdout,
    /^clip-mem: native binaries: prebuilt linux-x64, .* \(prebuilds\/linux-x64\); nothing to compile\n$/,
  );
  t.false(fs.existsSync(path.join(installed, 'build')));

  const version = clipMem(['--version']);
  t.is(version.status, 0, version.stderr);
  const [, native] = /^\d+\.\d+\.\d+ \((.*)\)\n$/.exec(version.stdout) ?? [];
  t.regex(native ?? version.stdout, PREBUILT);

  const probe = clipMem(['native-probe']);
  t.is(probe.status, 0, probe.stderr);
  t.regex(
    probe.stdout.split('\n')[0]!,
    /^clip-mem native-probe \d+\.\d+\.\d+ \(prebuilt linux-x64, glibc >= 2\.17, zig [\d.]+\): pid \d+/,
  );

  // The tracker from the prebuild, in a C program and in python3, each failing under --limit-as.
  const traced = (limit: string, command: string[]) => {
    const json = path.join(app, `trace-${path.basename(command[0]!)}.json`);
    const result = clipMem(['trace', '--limit-as', limit, '--json', json, '--', ...command]);
    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
    t.is(schemaErrors('trace', report), '');
    return { status: result.status, report };
  };
  const c = traced('64M', [allocProgram, 'probes']);
  t.is(c.status, 0);
  t.true(c.report.tracked);
  const base = 256 * 2 ** 20;
  t.deepEqual(
    c.report.failures.map((f) => [f.fn, f.size, f.errnoName]),
    [
      ['malloc', base + 1, 'ENOMEM'],
      ['calloc', base + 2, 'ENOMEM'],
      ['realloc', base + 3, 'ENOMEM'],
      ['posix_memalign', base + 4, 'ENOMEM'],
      ['aligned_alloc', base + 4096 * 2, 'ENOMEM'],
      ['mmap', base + 5, 'ENOMEM'],
      ['mremap', base + 6 * 4096, 'ENOMEM'],
      ['pthread_create', base + 7 * 4096, 'EAGAIN'],
    ],
  );
  const python = traced('300M', ['python3', '-c', 'bytearray(1 << 30)']);
  t.is(python.status, 1);
  t.true(python.report.tracked);
  t.deepEqual(
    python.report.failures.filter((f) => f.size >= 2 ** 30).map((f) => [f.fn, f.size, f.errnoName]),
    [['malloc', 2 ** 30 + 1, 'ENOMEM']], // bytearray keeps a trailing NUL
  );
  t.is(python.report.diagnosis.cause, 'address-space');

  const run = clipMem(['run', 'clip-load', '--model', 'tiny']);
  t.is(run.status, 0, run.stderr);
  t.regex(run.stdout, /PASS clip-load/);
  t.regex(run.stdout, /^1 passed, 0 failed$/m);

  // Where no prebuild matches (here: the prebuilds taken away) and nothing can compile, both the install
  // step and the tool say what to install.
  fs.renameSync(path.join(installed, 'prebuilds'), path.join(app, 'prebuilds-aside'));
  const noPrebuild = spawnSync(process.execPath, [path.join(installed, 'scripts', 'install.js')], {
    env,
    encoding: 'utf8',
  });
  t.is(noPrebuild.status, 1);
  t.regex(noPrebuild.stderr, /no prebuilt binary matches this system \(linux-x64; it ships no prebuilt binaries\)/);
  t.regex(noPrebuild.stderr, /- cmake \(>= 3\.15\)\n\s+- a C\+\+17 compiler/);
  t.regex(noPrebuild.stderr, /apt-get install cmake g\+\+/);
  const missing = clipMem(['native-probe']);
  t.not(missing.status, 0);
  t.regex(missing.stderr, /native addon \(clip_mem\.node\) is missing: .* Build it: node \S+scripts\/install\.js/);
  t.regex(clipMem(['--version']).stdout, /\(native binaries missing: /);
});
