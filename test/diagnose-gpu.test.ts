// GPU out-of-memory diagnoses from facts as a traced run reports them: the device's arithmetic, the
// culprit, and PyTorch's own message (1.x and 2.x wordings) read as evidence.
import test from 'ava';
import { cudaErrorName } from '../src/core/cuda-error';
import { diagnose, explainFailure, type FailureFacts, type GpuFacts } from '../src/diagnose';
import { readFrameworkOom } from '../src/diagnose/gpu';
import { gpuFixes } from '../src/report/gpu-fixes';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

function gpuFailure(gpu: Partial<GpuFacts>, size = 2 * GiB): FailureFacts {
  return {
    fn: 'cudaMalloc',
    size,
    errno: 0,
    gpu: {
      api: 'runtime',
      status: 2,
      device: 0,
      totalBytes: 80 * GiB,
      freeBytes: GiB,
      processBytes: 61 * GiB,
      trackedBytes: 60 * GiB,
      otherProcesses: [],
      ...gpu,
    },
  };
}

test('CUDA status names: the runtime and the driver spell the same out-of-memory code differently', (t) => {
  t.is(cudaErrorName('runtime', 2), 'cudaErrorMemoryAllocation');
  t.is(cudaErrorName('driver', 2), 'CUDA_ERROR_OUT_OF_MEMORY');
  t.is(cudaErrorName('driver', 12345), 'CUresult 12345');
});

test("the issue's arithmetic: used of total + requested, this process and the others", (t) => {
  const d = diagnose({
    exit: { code: 1, signal: null },
    limits: {},
    failures: [gpuFailure({ otherProcesses: [{ pid: 77, name: 'jupyter', bytes: 17 * GiB }] })],
  });
  t.is(d.cause, 'gpu-memory');
  t.is(
    d.evidence[0],
    'GPU 0: 79.00 GiB used of 80.00 GiB + 2.00 GiB requested = 81.00 GiB ' +
      '(cudaMalloc of 2147483648 bytes (2.00 GiB), cudaErrorMemoryAllocation); this process 61.00 GiB, others 18.00 GiB',
  );
  t.is(d.evidence[1], 'other processes on GPU 0: pid 77 (jupyter) 17.00 GiB');
  t.is(d.gpu?.culprit, 'other-processes');
});

test('without NVML per process, this process is what the tracker counted, and says so', (t) => {
  const d = explainFailure(gpuFailure({ processBytes: null }), {});
  t.regex(d!.evidence[0]!, /this process 60\.00 GiB \(its allocations the tracker counted\), others 19\.00 GiB$/);
  t.is(d!.gpu?.culprit, 'own-use');
  t.deepEqual(
    gpuFixes(d!.gpu!, 'python train.py').map((f) => f.kind),
    ['batch', 'dtype'],
  );
});

test('a status other than out-of-memory is not a memory shortage', (t) => {
  const d = explainFailure(gpuFailure({ status: 1 }), {});
  t.is(d?.cause, 'not-memory');
  t.is(
    d?.evidence[0],
    'cudaMalloc of 2147483648 bytes (2.00 GiB), cudaErrorInvalidValue: not a shortage of device memory',
  );
});

test("PyTorch 1.x's message: capacity, allocated, free, reserved (reserved minus allocated is the cache's idle part)", (t) => {
  const oom = readFrameworkOom(
    'RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity; 14.56 GiB ' +
      'already allocated; 5.44 MiB free; 14.70 GiB reserved in total by PyTorch) If reserved memory is >> allocated ' +
      'memory try setting max_split_size_mb to avoid fragmentation.',
  );
  t.deepEqual(oom, {
    framework: 'pytorch',
    triedBytes: 20 * MiB,
    device: 0,
    capacityBytes: Math.floor(15.78 * GiB),
    freeBytes: Math.floor(5.44 * MiB),
    processBytes: null,
    otherProcesses: [],
    allocatedBytes: Math.floor(14.56 * GiB),
    reservedUnallocatedBytes: Math.floor(14.7 * GiB) - Math.floor(14.56 * GiB),
    allowedBytes: null,
  });
});

test("PyTorch 1.x's message under a memory fraction names what is allowed", (t) => {
  const oom = readFrameworkOom(
    'CUDA out of memory. Tried to allocate 1.00 GiB (GPU 1; 15.78 GiB total capacity; 7.00 GiB already allocated; ' +
      '8.00 GiB free; 7.89 GiB allowed; 7.10 GiB reserved in total by PyTorch)',
  );
  t.is(oom?.device, 1);
  t.is(oom?.allowedBytes, Math.floor(7.89 * GiB));
});

test("PyTorch 2.x's message: the other processes it names, this process, and the fragmentation fix", (t) => {
  const output =
    'Traceback (most recent call last):\n' +
    'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB ' +
    'of which 1.00 GiB is free. Process 4242 has 10.00 GiB memory in use. Including non-PyTorch memory, this process ' +
    'has 68.00 GiB memory in use. Of the allocated memory 60.00 GiB is allocated by PyTorch, and 7.50 GiB is reserved ' +
    'by PyTorch but unallocated. If reserved but unallocated memory is large try setting ' +
    'PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\n';
  const d = diagnose({ exit: { code: 1, signal: null }, limits: {}, failures: [], output });
  t.is(d.cause, 'gpu-memory');
  t.is(d.gpu?.culprit, 'fragmentation');
  t.deepEqual(d.gpu?.otherProcesses, [{ pid: 4242, name: '', bytes: 10 * GiB }]);
  t.is(d.gpu?.processBytes, 68 * GiB);
  t.deepEqual(gpuFixes(d.gpu!, 'python train.py'), [
    {
      kind: 'allocator-config',
      text:
        "PyTorch's cache holds 7.50 GiB reserved but unallocated, in blocks too small for 2.00 GiB: expandable " +
        'segments let it grow blocks instead of splitting them',
      command: 'PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py',
    },
  ]);
});
