// Chooses the tfjs backend for the CLIP model and names the memory limits each backend runs into.
//
// API:
//   selectTfjsBackend(candidates?)  -> Promise<TfjsBackendChoice>: the first candidate that is installed
//       and initialises becomes tfjs's backend (default order tensorflow-gpu, tensorflow, wasm, cpu); the
//       choice says which one runs and why each earlier one was skipped. Later calls return the same choice,
//       or throw when their candidates do not include it (tfjs has one backend per process).
//   TfjsMemoryError { failure, diagnosisCause, requestedBytes }: what a tfjs allocation failure was (wasm
//       heap full, no address space for wasm, an ArrayBuffer the OS refused), with the tracker's cause
//       name where the failure alone decides it.
//   asTfjsMemoryError(error)       -> TfjsMemoryError | undefined: classifies an error thrown by tfjs.
//
// tfjs-node and tfjs-node-gpu are optionalDependencies that often fail to install (no prebuilt
// libtensorflow for the platform): they are required lazily, and their absence is a reason, not an error.
// @tensorflow/tfjs, not tfjs-core alone: the bundle registers the gradients and the cpu backend.
import * as tf from '@tensorflow/tfjs';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import { formatBytes } from '../../core/units';

/** Backends in tfjs's own names: `tensorflow` is libtensorflow through tfjs-node (or -gpu, with CUDA). */
export type TfjsBackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export const defaultTfjsBackendOrder: readonly TfjsBackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export interface TfjsBackendChoice {
  /** The backend that runs. */
  readonly name: TfjsBackendName;
  /** The npm package that provides it. */
  readonly package: string;
  /** How it runs, e.g. "SIMD, single-threaded" for wasm. */
  readonly detail: string;
  /** Every candidate tried before it, with the reason it was not used. */
  readonly skipped: readonly { readonly name: TfjsBackendName; readonly reason: string }[];
}

// ES2022's lib has no WebAssembly types; these two are all this file touches.
declare const WebAssembly: { Memory: new (descriptor: { initial: number }) => unknown; RuntimeError: new () => Error };

const packages: Record<TfjsBackendName, string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
  wasm: '@tensorflow/tfjs-backend-wasm',
  cpu: '@tensorflow/tfjs-backend-cpu',
};

let chosen: Promise<TfjsBackendChoice> | undefined;

/**
 * Makes the first usable candidate tfjs's backend for this process (tfjs has one global backend).
 * Throws, listing every reason, when none initialises.
 */
export async function selectTfjsBackend(
  candidates: readonly TfjsBackendName[] = defaultTfjsBackendOrder,
): Promise<TfjsBackendChoice> {
  chosen ??= trySelect(candidates);
  const choice = await chosen;
  if (!candidates.includes(choice.name)) {
    throw new Error(
      `tfjs already runs on ${choice.name} in this process (chosen by an earlier call), and tfjs has one backend per ` +
        `process: ${candidates.join(', ')} cannot run here. Use a new process.`,
    );
  }
  return choice;
}

async function trySelect(candidates: readonly TfjsBackendName[]): Promise<TfjsBackendChoice> {
  if (candidates.length === 0) throw new Error('selectTfjsBackend: name at least one backend to try');
  const skipped: { name: TfjsBackendName; reason: string }[] = [];
  for (const name of candidates) {
    const reason = await initialise(name);
    if (reason === undefined) return { name, package: packages[name], detail: await describe(name), skipped };
    skipped.push({ name, reason });
  }
  chosen = undefined;
  throw new Error(`No tfjs backend initialised: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/** Returns undefined when `name` is now tfjs's backend, else why it is not. */
async function initialise(name: TfjsBackendName): Promise<string | undefined> {
  if (name === 'tensorflow' || name === 'tensorflow-gpu') {
    // Either package registers the `tensorflow` backend on the shared tfjs-core when it loads; tfjs-node-gpu
    // may already have registered it (and skipped itself for want of CUDA).
    if (name === 'tensorflow-gpu' || !tf.findBackendFactory('tensorflow')) {
      try {
        // A half-installed package (no native binding) registers its kernels before failing: keep its
        // hundreds of "already registered" warnings off the terminal.
        await quietly(() => require(packages[name]));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        return code === 'MODULE_NOT_FOUND'
          ? `${packages[name]} is not installed`
          : `${packages[name]} failed to load: ${message(error)}`;
      }
    }
    if (!(await setQuietly('tensorflow'))) return `the tensorflow backend of ${packages[name]} did not initialise`;
    if (name === 'tensorflow-gpu' && !usesGpu()) return `${packages[name]} loaded but found no CUDA device`;
    return undefined;
  }
  if (name === 'wasm') {
    // V8 reserves ~10 GiB of address space for a wasm memory; under a smaller RLIMIT_AS the wasm module
    // fails deep inside emscripten with a misleading "serve the .wasm file" message, so test it first.
    const reservation = wasmReservationFailure();
    if (reservation) return reservation;
    tfWasm.setWasmPaths(wasmDirectory());
  }
  if (!(await setQuietly(name))) return `the ${name} backend did not initialise`;
  if (name === 'wasm') guardWasmMalloc(tf.backend() as tfWasm.BackendWasm);
  return undefined;
}

interface WasmModule {
  HEAPU8: Uint8Array;
  asm: { malloc(bytes: number): number };
  _malloc(bytes: number): number;
}

/**
 * tfjs-backend-wasm does not check malloc: when the heap cannot grow, a null pointer flows into the
 * kernels and the process later traps at random ("memory access out of bounds", "remainder by zero",
 * "Aborted()"). Checking here turns that into a TfjsMemoryError at the allocation itself, before tfjs
 * has registered anything, so the backend stays usable (a smaller batch can run in the same process).
 */
function guardWasmMalloc(backend: tfWasm.BackendWasm): void {
  const module = backend.wasm as unknown as WasmModule;
  const malloc = module.asm.malloc; // the raw export (module._malloc is a lazy stub that replaces itself)
  module._malloc = (bytes: number): number => {
    // wasm's malloc takes a 32-bit size: a larger request would wrap around to a small block.
    if (bytes > 0xffffffff) throw wasmHeapFull(bytes, module.HEAPU8.length);
    const pointer = malloc(bytes);
    if (pointer === 0 && bytes > 0) throw wasmHeapFull(bytes, module.HEAPU8.length);
    return pointer;
  };
}

function wasmHeapFull(bytes: number, heapBytes: number): TfjsMemoryError {
  return new TfjsMemoryError(
    'wasm-heap',
    'js-heap',
    `the tfjs wasm heap cannot grow to allocate ${bytes} bytes (${formatBytes(bytes)}) for a tensor: wasm32 ` +
      `memory stops at 4 GiB and the heap is ${formatBytes(heapBytes)} already. Use a smaller batch or model, ` +
      `or install @tensorflow/tfjs-node(-gpu), whose tensors are not limited to 4 GiB`,
    bytes,
    undefined,
  );
}

function wasmDirectory(): string {
  return (
    require('node:path').dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + '/'
  );
}

function wasmReservationFailure(): string | undefined {
  try {
    new WebAssembly.Memory({ initial: 1 });
    return undefined;
  } catch (error) {
    return (
      `no address space for WebAssembly memory (${message(error)}): V8 reserves about 10 GiB of virtual ` +
      `address space for each wasm memory, so the wasm backend needs RLIMIT_AS (ulimit -v) of more than ~10.5 GiB`
    );
  }
}

function usesGpu(): boolean {
  // tfjs-node-gpu falls back to the CPU silently when CUDA is missing; its binding says which it uses.
  const binding = (tf.backend() as unknown as { binding?: { isUsingGpuDevice?: () => boolean } }).binding;
  return binding?.isUsingGpuDevice?.() ?? true;
}

/** tf.setBackend logs its own failure and the cpu backend prints an install banner: keep both off stdout. */
async function setQuietly(name: string): Promise<boolean> {
  const ok = await quietly(() => tf.setBackend(name));
  if (ok && name === 'cpu') (tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
  return ok;
}

async function quietly<T>(work: () => T | Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    return await work();
  } finally {
    console.warn = warn;
  }
}

async function describe(name: TfjsBackendName): Promise<string> {
  if (name === 'wasm') {
    const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) as boolean;
    const threads = tfWasm.getThreadsCount();
    return `${simd ? 'SIMD' : 'no SIMD'}, ${threads > 1 ? `${threads} threads` : 'single-threaded (tfjs-backend-wasm has no threads in Node)'}, heap at most 4 GiB`;
  }
  if (name === 'cpu') return 'pure JavaScript, single-threaded';
  return name === 'tensorflow-gpu' ? 'libtensorflow with CUDA' : 'libtensorflow on the CPU';
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The limit a tfjs allocation ran into. */
export type TfjsMemoryFailure =
  /** wasm32 linear memory cannot grow past 4 GiB: the heap of the wasm backend is full. */
  | 'wasm-heap'
  /** V8 could not reserve address space for a WebAssembly memory (RLIMIT_AS). */
  | 'wasm-address-space'
  /** The OS refused an ArrayBuffer (cpu backend tensors, or reading data back). */
  | 'array-buffer';

export class TfjsMemoryError extends Error {
  constructor(
    readonly failure: TfjsMemoryFailure,
    /** The tracker's diagnosis cause when this failure alone decides it; an ArrayBuffer refusal needs its evidence. */
    readonly diagnosisCause: 'js-heap' | 'address-space' | undefined,
    message: string,
    /** The allocation that failed, when known. */
    readonly requestedBytes: number | undefined,
    /** The error tfjs threw. */
    cause: unknown,
  ) {
    super(message, { cause });
    this.name = 'TfjsMemoryError';
  }
}

/** Classifies an error from a tfjs call; undefined when it is not a memory failure. */
export function asTfjsMemoryError(error: unknown): TfjsMemoryError | undefined {
  if (error instanceof TfjsMemoryError) return error;
  const text = message(error);
  if (tf.getBackend() === 'wasm' && error instanceof WebAssembly.RuntimeError && text.startsWith('Aborted(')) {
    // An allocation inside a kernel (XNNPACK's packing, its workspace) failed: emscripten aborts.
    return new TfjsMemoryError(
      'wasm-heap',
      'js-heap',
      `the tfjs wasm backend aborted (${text}), most likely because its heap could not grow: wasm32 memory stops at ` +
        `4 GiB. The wasm module is unusable now: start a new process with a smaller batch or model, ` +
        `or install @tensorflow/tfjs-node(-gpu), whose tensors are not limited to 4 GiB`,
      undefined,
      error,
    );
  }
  if (error instanceof RangeError && /WebAssembly\.(Memory|instantiate)|Wasm memory/.test(text)) {
    return new TfjsMemoryError(
      'wasm-address-space',
      'address-space',
      `no address space for WebAssembly memory: ${text}`,
      undefined,
      error,
    );
  }
  if (error instanceof RangeError && text.includes('Array buffer allocation failed')) {
    return new TfjsMemoryError(
      'array-buffer',
      undefined,
      `the OS refused memory for a tensor's ArrayBuffer (${text}); run under \`clip-mem trace\` to see the limit it hit`,
      undefined,
      error,
    );
  }
  return undefined;
}
