// Finds clip-mem's native binaries (the addon, the LD_PRELOAD tracker, its exec helper) and loads the addon.
// Each capability module under src/ declares the typed slice of the addon it uses; this file only finds it.
// A build from source (build/Release: `npm install` in the repository, or scripts/install.js where no prebuilt
// binary matches) wins; else the binaries the npm package ships in prebuilds/<platform>-<arch>/
// (scripts/prebuild.js), when this system's glibc is at least the one they were built against. docs/install.md.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const packageRoot = path.resolve(__dirname, '..', '..', '..');

export interface NativeBinaries {
  origin: 'source' | 'prebuilt';
  dir: string;
  /** One line for `--version` and native-probe's header. */
  description: string;
}

/** What prebuilds/<target>/prebuild.json says (written by scripts/prebuild.js). */
interface PrebuildInfo {
  target: string;
  libc: 'glibc';
  glibc: string;
  compiler: string;
}

const ADDON_FILE = { source: 'clip_mem.node', prebuilt: 'clip_mem.napi.glibc.node' } as const;
const sourceDirs = ['Release', 'Debug'].map((config) => path.join(packageRoot, 'build', config));
export const prebuildsDir = path.join(packageRoot, 'prebuilds');
const target = `${process.platform}-${process.arch}`;

/** This process's glibc version ("2.36"), or null where the C library is not glibc (musl). */
function glibcVersion(): string | null {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ?? null;
}

const atLeast = (version: string, floor: string) => {
  const [a, b] = [version, floor].map((v) => v.split('.').map(Number));
  for (let i = 0; i < Math.max(a!.length, b!.length); i++) {
    if ((a![i] ?? 0) !== (b![i] ?? 0)) return (a![i] ?? 0) > (b![i] ?? 0);
  }
  return true;
};

function readPrebuild(dir: string): PrebuildInfo | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'prebuild.json'), 'utf8')) as PrebuildInfo;
  } catch {
    return null;
  }
}

/** The shipped binaries for this platform, when this system can load them. */
export function matchingPrebuild(): NativeBinaries | null {
  const dir = path.join(prebuildsDir, target);
  const info = readPrebuild(dir);
  const glibc = info ? glibcVersion() : null;
  if (!info || !glibc || !atLeast(glibc, info.glibc)) return null;
  return { origin: 'prebuilt', dir, description: `prebuilt ${info.target}, glibc >= ${info.glibc}, ${info.compiler}` };
}

/** What the package ships, for the messages when nothing matches (here and scripts/install.js). */
export function shippedPrebuilds(): string {
  const infos = (fs.existsSync(prebuildsDir) ? fs.readdirSync(prebuildsDir) : [])
    .map((name) => readPrebuild(path.join(prebuildsDir, name)))
    .filter((info): info is PrebuildInfo => info !== null);
  return infos.length > 0
    ? `it ships prebuilt binaries for ${infos.map((info) => `${info.target} (glibc >= ${info.glibc})`).join(', ')}`
    : 'it ships no prebuilt binaries';
}

let found: NativeBinaries | null | undefined;

/** Where the native binaries are, or null when neither a build from source nor a matching prebuild exists. */
export function nativeBinaries(): NativeBinaries | null {
  if (found === undefined) {
    const built = sourceDirs.find((dir) => fs.existsSync(path.join(dir, ADDON_FILE.source)));
    found = built
      ? { origin: 'source', dir: built, description: `built from source, ${path.relative(packageRoot, built)}` }
      : matchingPrebuild();
  }
  return found;
}

/** The path of one native binary (`what` names it in the error when there is none). */
export function nativeFile(file: string, what: string): string {
  const binaries = nativeBinaries();
  if (!binaries) {
    const glibc = glibcVersion();
    throw new Error(
      `clip-mem's ${what} is missing: it was not built from source (${sourceDirs.join(', ')}) and no prebuilt ` +
        `binary matches this system (${target}, ${glibc ? `glibc ${glibc}` : 'not glibc'}; ${shippedPrebuilds()}). ` +
        `Build it: node ${path.join(packageRoot, 'scripts', 'install.js')} (needs cmake and a C++17 compiler; ` +
        'it says what to install when they are missing; docs/install.md).',
    );
  }
  return path.join(binaries.dir, file === ADDON_FILE.source ? ADDON_FILE[binaries.origin] : file);
}

/** clip-mem's version, from its package.json. */
export function toolVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version as string;
  } catch {
    return 'unknown';
  }
}

/** Which native binaries this installation runs, for `--version` and native-probe's header. */
export function nativeDescription(): string {
  return nativeBinaries()?.description ?? 'native binaries missing: neither built from source nor a matching prebuild';
}

let cached: Record<string, unknown> | undefined;

export function loadAddon<T>(): T {
  cached ??= require(nativeFile(ADDON_FILE.source, 'native addon (clip_mem.node)')) as Record<string, unknown>;
  return cached as T;
}
