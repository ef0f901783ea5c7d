// native-probe on real processes: under prlimit, in a cgroup this test creates, with the stub GPU library.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NATIVE_PROBE_SCHEMA } from '../src/probe/probe';
import { readCgroups } from '../src/probe/cgroup';
import { removeCgroup } from '../src/track/cgroup';
import { spawnSync } from 'node:child_process';
import { probeJson, repoRoot, runNativeProbe, schemaErrors, stubGpuLibrary } from './helpers/probe-cli';
import { requireProgram } from './helpers/require-program';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
// VmSize and VmData are read once, before the allocator probe; V8's threads map and unmap pages meanwhile
// (measured: -20 KiB to +132 KiB between the read and the probe; V8's sweeper frees 256 KiB pages), so
// bounds drawn from them allow 8 MiB, still far inside the 64 MiB band the lower bound leaves.
const procDrift = 8 * MiB;

test('the human report prints every section, the verdict last', (t) => {
  const run = runNativeProbe(['--model', 'tiny']);
  t.is(run.status, 0, run.stderr);
  const headings = run.stdout
    .split('\n')
    .filter((line) => /^\d\. /.test(line))
    .map((line) => line.slice(0, 2));
  t.deepEqual(headings, ['1.', '2.', '3.', '4.', '5.', '6.', '7.', '8.']);
  t.regex(run.stdout, /\n8\. Verdict\n {2}binds first: .+; largest mappable block /);
  t.regex(
    run.stdout,
    /model tiny \(fp32, 179 KiB; largest tensor .*\):\n {4}via mmap fits: .*\n {4}via copy fits: .*\n {4}training \(AdamW/,
  );
});

test('--json follows the versioned schema in schema/', (t) => {
  const report = probeJson(['--model', 'tiny']);
  t.is(report.schema, NATIVE_PROBE_SCHEMA);
  t.is(schemaErrors(report), '');
  t.is(report.models[0]!.weightBytes, 183564);
});

test('native-probe starts light: no ML runtime (onnxruntime, tfjs, sharp) is loaded for it', (t) => {
  // The probe must stay fast (scripts/bench-probe): command modules load their runtimes in their handlers.
  const script =
    "require('./dist/src/cli/main.js').main(['native-probe', '--json']).then(() => process.stderr.write(JSON.stringify(" +
    'Object.keys(require.cache).filter((f) => /node_modules\\/(onnxruntime-node|onnxruntime-common|@tensorflow|sharp)\\//.test(f)))))';
  const run = spawnSync(process.execPath, ['-e', script], { cwd: repoRoot, encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.deepEqual(JSON.parse(run.stderr), []);
});

test('unknown options and models are usage errors (exit 2)', (t) => {
  const option = runNativeProbe(['--bogus']);
  t.is(option.status, 2);
  t.regex(option.stderr, /Unknown argument: bogus/);
  const model = runNativeProbe(['--model', 'vit-z-99']);
  t.is(model.status, 2);
  t.regex(model.stderr, /--model: "vit-z-99" is neither a CLIP preset/);
});

test('under prlimit --as=2147483648: RLIMIT_AS exact, reservable = limit - VmSize within 5%, verdict names it', (t) => {
  requireProgram(t, 'prlimit', 'apt-get install util-linux');
  const limit = 2147483648;
  const report = probeJson(['--model', 'vit-b-32'], { wrapper: ['prlimit', `--as=${limit}`] });
  t.deepEqual(report.limits.as, { soft: limit, hard: limit });
  t.is(schemaErrors(report), '');
  const expected = limit - (report.process.vmSize as number);
  const reservable = report.allocator.reservable.total;
  t.true(Math.abs(reservable - expected) <= 0.05 * expected, `reservable ${reservable}, limit - VmSize ${expected}`);
  t.is(report.allocator.reservable.errno, 'ENOMEM');
  t.true(report.allocator.reservation.largest <= expected + procDrift);
  t.like(report.verdict.bindsFirst, { name: 'address space', source: 'RLIMIT_AS', limit, headroom: expected });
  t.regex(report.verdict.summary, /^address space: \d+ MiB of RLIMIT_AS 2\.00 GiB used, /);
  // 577 MiB of weights fit in ~1.3 GiB; 4x for AdamW does not.
  t.true(report.models[0]!.viaCopy.fits);
  t.false(report.models[0]!.training.fits);
  t.is(report.models[0]!.training.needs, 4 * 605110268);
  t.regex(report.models[0]!.training.limitedBy, /RLIMIT_AS|reservable address space/);
});

test('under an rlimit, --model says whose headroom it measured: its own Node process, not a fresh program', (t) => {
  requireProgram(t, 'prlimit', 'apt-get install util-linux');
  const run = runNativeProbe(['--model', 'vit-b-32'], { wrapper: ['prlimit', '--as=2147483648'] });
  t.is(run.status, 0, run.stderr);
  t.regex(
    run.stdout,
    /whose headroom: this probe's own Node process \(RLIMIT_AS 2\.00 GiB, \d+ MiB of it used by Node itself\); a program starting fresh under the same limit has 2\.00 GiB less its own start-up use instead: measure it with clip-mem trace --limit-as 2147483648 -- <program>/,
  );
  // Without a per-process limit there is nothing to say.
  t.notRegex(runNativeProbe(['--model', 'vit-b-32']).stdout, /whose headroom/);
});

test('under prlimit --data=1G: RLIMIT_DATA shown, the largest malloc respects it, verdict names it', (t) => {
  requireProgram(t, 'prlimit', 'apt-get install util-linux');
  const limit = GiB;
  const report = probeJson([], { wrapper: ['prlimit', `--data=${limit}`] });
  t.deepEqual(report.limits.data, { soft: limit, hard: limit });
  const headroom = limit - (report.process.vmData as number);
  t.true(
    report.allocator.malloc.largest <= headroom + procDrift,
    `malloc ${report.allocator.malloc.largest}, DATA headroom ${headroom}`,
  );
  t.true(
    report.allocator.malloc.largest > headroom - 64 * MiB,
    `malloc ${report.allocator.malloc.largest}, DATA headroom ${headroom}`,
  );
  t.is(report.allocator.malloc.errno, 'ENOMEM');
  t.true(report.allocator.readWriteMapping.largest <= headroom + procDrift);
  // Reservations are not data: the address space stays open far beyond the limit.
  t.true(report.allocator.reservation.largest > 4 * limit);
  t.like(report.verdict.bindsFirst, { name: 'data segment', source: 'RLIMIT_DATA', limit });
  const human = runNativeProbe([], { wrapper: ['prlimit', `--data=${limit}`] });
  t.regex(human.stdout, /RLIMIT_DATA\s+1\.00 GiB \(1073741824\)\s+1\.00 GiB \(1073741824\)/);
  t.regex(human.stdout, /binds first: data segment: .* of RLIMIT_DATA 1\.00 GiB used/);
});

// A v1 memory cgroup under our own, with a 700 MiB limit; skipped (with the reason) where cgroups are read-only.
function cgroupV1Parent(): { directory: string } | { skip: string } {
  const v1 = readCgroups().hierarchies.find((h) => h.version === 1);
  if (!v1) return { skip: 'no cgroup v1 memory hierarchy here' };
  const directory = v1.groups[0]!.directory;
  const trial = path.join(directory, `clip-mem-write-check-${process.pid}`);
  try {
    fs.mkdirSync(trial);
    fs.rmdirSync(trial);
  } catch (error) {
    return { skip: `cannot create a cgroup under ${directory}: ${(error as Error).message}` };
  }
  return { directory };
}

const parent = cgroupV1Parent();
const cgroupTest = 'directory' in parent ? test.serial : test.serial.skip;
cgroupTest(
  `in a v1 cgroup with a 700 MiB limit: the limit is reported and named in the verdict${'skip' in parent ? ` (skipped: ${parent.skip})` : ''}`,
  (t) => {
    const { directory } = parent as { directory: string };
    const name = `clip-mem-probe-test-${process.pid}`;
    const group = path.join(directory, name);
    fs.mkdirSync(group);
    try {
      fs.writeFileSync(path.join(group, 'memory.limit_in_bytes'), String(700 * MiB));
      // The shell moves itself into the group, then becomes the probe.
      const script = `echo $$ > ${group}/cgroup.procs && exec "$0" "$@"`;
      const report = probeJson([], { wrapper: ['sh', '-c', script] });
      const tightest = report.cgroups.tightest!;
      t.is(tightest.version, 1);
      t.is(tightest.limit, 700 * MiB);
      t.true(tightest.path.endsWith(`/${name}`), tightest.path);
      t.is(report.cgroups.hierarchies[0]!.groups[0]!.path, tightest.path);
      t.like(report.verdict.bindsFirst, { name: 'cgroup memory', limit: 700 * MiB });
      t.regex(
        report.verdict.summary,
        new RegExp(`^cgroup memory: .* of cgroup v1 memory.limit_in_bytes of .*/${name} 700 MiB used`),
      );
    } finally {
      removeCgroup(group); // the kernel refuses an rmdir for a moment after the last task left: retried
    }
    t.false(fs.existsSync(group));
  },
);

test('with the stub NVML/CUDA library: its devices and figures appear', (t) => {
  const env = { CLIP_MEM_NVML_LIBRARY: stubGpuLibrary, CLIP_MEM_CUDA_LIBRARY: stubGpuLibrary };
  const { gpu } = probeJson([], { env });
  t.is(gpu.nvml.unavailable, undefined);
  t.is(schemaErrors(probeJson([], { env })), '');
  t.is(gpu.nvml.driverVersion, '999.99.stub');
  t.deepEqual(gpu.nvml.devices![0], {
    index: 0,
    name: 'clip-mem stub GPU 0 (40 GiB)',
    total: 40 * GiB,
    used: 3 * GiB,
    free: 37 * GiB,
    processes: [{ pid: 4242, name: 'python train_clip.py', used: 2.5 * GiB }],
  });
  t.is(gpu.nvml.devices![1]!.total, 16 * GiB);
  t.is(gpu.cuda.driverVersion, 12040);
  t.deepEqual(
    gpu.cuda.devices!.map((d) => [d.ordinal, d.free, d.total]),
    [
      [0, 37 * GiB - 300 * MiB, 40 * GiB],
      [1, 15 * GiB + 200 * MiB, 16 * GiB],
    ],
  );
  const human = runNativeProbe([], { env }).stdout;
  t.regex(
    human,
    /NVML \(.*libclipmem_stub_gpu\.so\): driver 999\.99\.stub, 2 device\(s\)\n {4}GPU 0 clip-mem stub GPU 0 \(40 GiB\): total 40\.00 GiB, used 3\.00 GiB, free 37\.00 GiB\n {6}pid 4242 python train_clip\.py: 2\.50 GiB/,
  );
  t.regex(
    human,
    /CUDA driver \(.*\): version 12\.4, 2 device\(s\)\n {4}device 0 clip-mem stub GPU 0 \(40 GiB\): cuMemGetInfo free 36\.71 GiB of 40\.00 GiB/,
  );
});

test('without the GPU libraries: "not available" with the reason, and the report still prints', (t) => {
  const env = {
    CLIP_MEM_NVML_LIBRARY: '/nonexistent/libnvidia-ml.so.1',
    CLIP_MEM_CUDA_LIBRARY: '/nonexistent/libcuda.so.1',
  };
  const { gpu } = probeJson([], { env });
  t.is(gpu.nvml.library, '/nonexistent/libnvidia-ml.so.1');
  t.regex(gpu.nvml.unavailable!, /cannot open shared object file: No such file or directory/);
  t.is(gpu.nvml.devices, undefined);
  t.regex(gpu.cuda.unavailable!, /cannot open shared object file/);
  const run = runNativeProbe([], { env });
  t.is(run.status, 0);
  t.regex(run.stdout, /NVML \(\/nonexistent\/libnvidia-ml\.so\.1\): not available: .*cannot open shared object file/);
  t.regex(run.stdout, /CUDA driver \(\/nonexistent\/libcuda\.so\.1\): not available: /);
  t.regex(run.stdout, /8\. Verdict/);
});

const pidsMount = '/sys/fs/cgroup/pids';
const pidsWritable =
  fs.existsSync(path.join(pidsMount, 'cgroup.procs')) && fs.statSync(pidsMount).uid === process.getuid?.();
(pidsWritable ? test.serial : test.serial.skip)(
  "in a pids cgroup allowing 60 tasks: the limit and the group in `tasks`; /dev/shm's size in `sharedMemory`",
  (t) => {
    const group = path.join(pidsMount, `clip-mem-probe-test-${process.pid}`);
    fs.mkdirSync(group);
    try {
      fs.writeFileSync(path.join(group, 'pids.max'), '60');
      const script = `echo $$ > ${group}/cgroup.procs && exec "$0" "$@"`;
      const report = probeJson([], { wrapper: ['sh', '-c', script] });
      t.deepEqual(report.tasks, {
        cgroup: `/${path.basename(group)}`,
        limit: 60,
        limitedAt: `/${path.basename(group)}`,
        refused: 0,
      });
      const shm = fs.statfsSync('/dev/shm');
      if (shm.type === 0x01021994) t.is(report.sharedMemory!.size, shm.blocks * shm.bsize);
      else t.is(report.sharedMemory, null);
      const text = runNativeProbe([], { wrapper: ['sh', '-c', script] }).stdout;
      t.regex(text, new RegExp(`pids +60 tasks \\(pids\\.max\\) in /${path.basename(group)}, 0 refused so far`));
    } finally {
      removeCgroup(group);
    }
  },
);
