// GPU allocations under the tracker, without a GPU: native/test/gpu_program.c calls each CUDA entry point
// of the device list (native/record/device_hooks.h) on the stub driver and runtime (libcuda.so.1,
// libcudart.so.12 and libnvidia-ml.so.1 built from native/test/stub_gpu.c and stub_cudart.c), found the
// three ways a program finds them: linked, dlsym in the library's handle, the driver's cuGetProcAddress.
// The stub's device 0 holds CLIPMEM_STUB_GPU_MEMORY bytes and fails past them with CUDA's own codes.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { preloadLibrary } from '../src/track/binaries';
import { listRecords, readRecord, type AllocationRecord } from '../src/track/record';
import { repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { trace } from './helpers/trace';

const gpuProgram = path.join(repoRoot, 'build', 'test-programs', 'gpu_program');
const stubDir = path.join(repoRoot, 'build', 'stub-gpu');
const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** The stub's device 0 sized `memory` bytes, `others` of them held by pid 4242 ("python train_clip.py"). */
function stubEnv(memory: number, others = 0): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CLIPMEM_STUB_GPU_MEMORY: String(memory),
    CLIPMEM_STUB_GPU_OTHERS: String(others),
    // NVML as the tracker loads it at a failure: the same file as the program's libcuda.so.1 (one state).
    CLIPMEM_NVML_LIBRARY: path.join(stubDir, 'libnvidia-ml.so.1'),
  };
}

/** gpu_program with the interposer preloaded; its one record. */
function run(
  args: string[],
  env: NodeJS.ProcessEnv,
): { stdout: string; status: number | null; record: AllocationRecord } {
  if (!fs.existsSync(gpuProgram)) throw new Error(`${gpuProgram} is not built: run npm install (CMake, a C compiler)`);
  const dir = scratchDir('clipmem-gpu-test-');
  const result = spawnSync(gpuProgram, args, {
    env: { ...env, LD_PRELOAD: preloadLibrary(), CLIPMEM_RECORD_DIR: dir },
    encoding: 'utf8',
  });
  const records = listRecords(dir);
  if (records.length !== 1) throw new Error(`expected one record in ${dir}, found ${records.length}: ${result.stderr}`);
  return { stdout: result.stdout, status: result.status, record: readRecord(records[0]!.file) };
}

// Each allocation function, how a program may find it, and the status name its failure must carry.
const runtime = ['direct', 'dlsym'];
const driver = ['direct', 'dlsym', 'proc'];
const cases: { fn: string; hows: string[]; pinned?: boolean; counted?: boolean }[] = [
  { fn: 'cudaMalloc', hows: runtime },
  { fn: 'cudaMallocManaged', hows: runtime },
  { fn: 'cudaMallocAsync', hows: runtime },
  { fn: 'cudaMallocHost', hows: runtime, pinned: true },
  { fn: 'cudaHostAlloc', hows: runtime, pinned: true },
  { fn: 'cuMemAlloc_v2', hows: driver },
  { fn: 'cuMemAllocManaged', hows: driver },
  { fn: 'cuMemAllocAsync', hows: driver },
  { fn: 'cuMemAllocFromPoolAsync', hows: driver },
  { fn: 'cuMemAllocHost_v2', hows: driver, pinned: true },
  { fn: 'cuMemCreate', hows: driver },
  { fn: 'cuMemAddressReserve', hows: driver, counted: false },
];

for (const c of cases) {
  for (const how of c.hows) {
    test(`${c.fn} found ${how === 'direct' ? 'by linking' : how === 'dlsym' ? 'with dlsym' : 'through cuGetProcAddress'}: 256 MiB counted, the failure recorded byte-exact with CUDA's out-of-memory status`, (t) => {
      const memory = GiB;
      // Device memory fails past the device; pinned host memory past what malloc can give (2^50 bytes);
      // an address reservation past 16 times the device.
      const failing = c.pinned ? 2 ** 50 : c.counted === false ? 32 * GiB + 4096 : 768 * MiB + 1;
      const { stdout, status, record } = run([how, c.fn, String(256 * MiB), String(failing)], stubEnv(memory, 0));
      t.is(status, 0, stdout);
      t.is(stdout, `${c.fn} ${256 * MiB} -> 0\n${c.fn} ${failing} -> 2\n`);
      // Once, at the outermost API: the runtime's call into the driver is not counted again.
      const device = record.failures.filter((failure) => failure.gpu !== null);
      t.is(device.length, 1);
      const f = device[0]!;
      // The stub's pinned memory is malloc's: its own refusal is a host failure, recorded as such before it.
      t.deepEqual(
        record.failures.filter((failure) => failure.gpu === null).map((failure) => [failure.fn, failure.size]),
        c.pinned ? [['malloc', failing]] : [],
      );
      t.deepEqual([f.fn, f.size, f.errno], [c.fn, failing, 0]);
      const api = c.fn.startsWith('cuda') ? 'runtime' : 'driver';
      t.like(f.gpu, { api, status: 2, device: 0, totalBytes: memory });
      if (c.pinned) {
        t.is(record.pinnedPeak, 256 * MiB);
        t.is(record.pinnedCurrent, 0, 'freed by cudaFreeHost / cuMemFreeHost');
        t.like(f.gpu, { freeBytes: memory, trackedBytes: 0 });
      } else if (c.counted === false) {
        t.like(f.gpu, { freeBytes: memory, trackedBytes: 0, processBytes: 0 });
      } else {
        // The stub's NVML lists this process with its 256 MiB; the tracker counted the same.
        t.like(f.gpu, { freeBytes: 768 * MiB, processBytes: 256 * MiB, trackedBytes: 256 * MiB });
        t.deepEqual(record.devices, [
          {
            ordinal: 0,
            live: 0,
            peak: 256 * MiB,
            allocations: 1,
            frees: 1,
            failures: 1,
            largest: 256 * MiB,
            totalBytes: memory,
          },
        ]);
      }
      t.is(record.deviceUntracked, 0);
      t.true(f.stack.length > 0 && f.stack.every((frame) => !(frame.module ?? '').includes('clipmem_preload')));
    });
  }
}

test("the tracker's dlsym is a tail call: dlsym(RTLD_NEXT) from the program finds the next object after the program, as without it", (t) => {
  const { stdout, status } = run(['rtld-next'], stubEnv(GiB));
  t.is(stdout, 'rtld-next same\n');
  t.is(status, 0);
});

test('trace: cudaMalloc past the device with nobody else on it is this process’s own use; fixes: a smaller batch, 16-bit weights', (t) => {
  const { status, report, stdout } = trace(
    [],
    [gpuProgram, 'direct', 'cudaMalloc', String(600 * MiB), String(512 * MiB)],
    stubEnv(GiB),
  );
  t.is(status, 0);
  t.regex(stdout, /^cudaMalloc 536870912 -> 2$/m);
  const f = report.failures[0]!;
  t.deepEqual(
    [f.fn, f.size, f.gpu?.statusName, f.gpu?.status],
    ['cudaMalloc', 512 * MiB, 'cudaErrorMemoryAllocation', 2],
  );
  t.is(report.diagnosis.cause, 'gpu-memory');
  t.is(
    report.diagnosis.evidence[0],
    'GPU 0: 600 MiB used of 1.00 GiB + 512 MiB requested = 1.09 GiB ' +
      '(cudaMalloc of 536870912 bytes (512 MiB), cudaErrorMemoryAllocation); this process 600 MiB, others 0 B',
  );
  t.is(report.diagnosis.gpu?.culprit, 'own-use');
  t.deepEqual(
    report.gpuFixes.map((fix) => fix.kind),
    ['batch', 'dtype'],
  );
  t.regex(report.gpuFixes[0]!.text, /this process holds 600 MiB of GPU 0; the run needs 88 MiB less on GPU 0/);
  // The timeline follows the GPU bytes: a sample at the 600 MiB allocation, and one at its free.
  const gpuBytes = report.timeline.map((sample) => sample.gpu);
  t.true(gpuBytes.includes(600 * MiB));
  t.is(gpuBytes[gpuBytes.length - 1], 0);
  t.deepEqual(report.gpu?.devices[0], {
    ordinal: 0,
    live: 0,
    peak: 600 * MiB,
    allocations: 1,
    frees: 1,
    failures: 1,
    largest: 600 * MiB,
    totalBytes: GiB,
  });
});

test('trace: cuMemAlloc through cuGetProcAddress on a device another process fills is the other process; the fix names it', (t) => {
  const { report } = trace(
    [],
    [gpuProgram, 'proc', 'cuMemAlloc_v2', String(128 * MiB), String(512 * MiB)],
    stubEnv(GiB, 640 * MiB),
  );
  const f = report.failures[0]!;
  t.deepEqual([f.fn, f.size, f.gpu?.statusName], ['cuMemAlloc_v2', 512 * MiB, 'CUDA_ERROR_OUT_OF_MEMORY']);
  t.deepEqual(f.gpu?.otherProcesses, [{ pid: 4242, bytes: 640 * MiB, name: 'python train_clip.py' }]);
  t.is(report.diagnosis.cause, 'gpu-memory');
  t.is(
    report.diagnosis.evidence[0],
    'GPU 0: 768 MiB used of 1.00 GiB + 512 MiB requested = 1.25 GiB ' +
      '(cuMemAlloc_v2 of 536870912 bytes (512 MiB), CUDA_ERROR_OUT_OF_MEMORY); this process 128 MiB, others 640 MiB',
  );
  t.is(report.diagnosis.evidence[1], 'other processes on GPU 0: pid 4242 (python train_clip.py) 640 MiB');
  t.is(report.diagnosis.gpu?.culprit, 'other-processes');
  t.deepEqual(report.gpuFixes, [
    {
      kind: 'free-gpu',
      text: 'free GPU 0: pid 4242 (python train_clip.py) holds 640 MiB; stop it, or run on another GPU (CUDA_VISIBLE_DEVICES)',
    },
  ]);
});

// PyTorch 2.x's message, as its caching allocator prints it after its cudaMalloc failed.
const pytorchMessage = (reservedUnallocated: string) =>
  'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of ' +
  '1024.00 MiB of which 424.00 MiB is free. Including non-PyTorch memory, this process has 600.00 MiB memory in use. ' +
  `Of the allocated memory 50.00 MiB is allocated by PyTorch, and ${reservedUnallocated} is reserved by PyTorch but ` +
  'unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ' +
  'to avoid fragmentation.';

test("trace: PyTorch's message showing more reserved-but-unallocated than requested is fragmentation; the fix sets expandable segments", (t) => {
  const script = `echo '${pytorchMessage('550.00 MiB')}' >&2; exec ${gpuProgram} direct cudaMalloc ${600 * MiB} ${512 * MiB}`;
  const { report } = trace([], ['sh', '-c', script], stubEnv(GiB));
  t.is(report.diagnosis.cause, 'gpu-memory');
  t.is(report.diagnosis.gpu?.culprit, 'fragmentation');
  t.is(
    report.diagnosis.gpu?.framework?.triedBytes,
    512 * MiB,
    "PyTorch's 'Tried to allocate' equals the recorded bytes",
  );
  t.true(
    report.diagnosis.evidence.includes(
      'PyTorch\'s message: "Tried to allocate 512 MiB", 50 MiB allocated by PyTorch, 550 MiB reserved by PyTorch but unallocated',
    ),
  );
  t.is(report.gpuFixes.length, 1);
  t.is(report.gpuFixes[0]!.kind, 'allocator-config');
  t.is(
    report.gpuFixes[0]!.command,
    `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True sh -c '${script.replace(/'/g, `'\\''`)}'`,
  );
});

test("trace: PyTorch refusing past its per-process memory fraction, with no device failure recorded, is the framework's limit", (t) => {
  const message =
    'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB ' +
    'of which 60.00 GiB is free. Including non-PyTorch memory, this process has 19.00 GiB memory in use. Of the ' +
    'allocated memory 18.00 GiB is allocated by PyTorch, with 19.79 GiB allowed; and 100.00 MiB is reserved by ' +
    'PyTorch but unallocated.';
  const { report } = trace([], ['sh', '-c', `echo '${message}' >&2; exit 1`], stubEnv(GiB));
  t.is(report.failuresTotal, 0);
  t.is(report.diagnosis.cause, 'gpu-memory');
  t.is(report.diagnosis.gpu?.culprit, 'framework-limit');
  t.is(report.diagnosis.gpu?.framework?.allowedBytes, Math.floor(19.79 * GiB));
  t.is(report.gpuFixes[0]!.kind, 'memory-fraction');
});
