// The verdict's logic on given facts (the seed story's figures), the v2 and unreadable-file paths through
// the whole report, and what the probe costs the process it runs in.
import test from 'ava';
import * as path from 'node:path';
import type { AllocatorProbe } from '../src/probe/native';
import { runProbe } from '../src/probe/probe';
import { readHostMemory, readProcessStatus, countMappings } from '../src/probe/proc';
import { renderProbe } from '../src/probe/render';
import { readSlurmJob } from '../src/probe/slurm';
import { ProbeFacts, modelFit, verdict } from '../src/probe/verdict';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const fixtures = path.resolve(__dirname, '..', '..', 'test', 'fixtures');

function search(largest: number) {
  return { largest, failedAt: largest + 4096, errno: 'ENOMEM', error: 'Cannot allocate memory' };
}

// A 16 GiB host with strict overcommit (mode 2), already committed past its CommitLimit.
function sampleHost() {
  const host = path.join(fixtures, 'host');
  return readHostMemory({
    meminfo: path.join(host, 'meminfo'),
    sysctlDirectory: path.join(host, 'vm'),
    transparentHugepage: path.join(host, 'thp-enabled'),
  });
}

// The seed story: ulimit -v 4 GiB, VmSize 3.91 GiB, 92 MiB of address space left.
function seedStory(): ProbeFacts {
  const unlimited = { soft: 'unlimited', hard: 'unlimited' } as const;
  const vmSize = 4 * GiB - 92 * MiB;
  const allocator: AllocatorProbe = {
    malloc: search(92 * MiB),
    readWriteMapping: search(92 * MiB),
    reservation: search(92 * MiB),
    reservable: { total: 92 * MiB, blocks: 1, errno: 'ENOMEM', error: 'Cannot allocate memory' },
    pageSize: 4096,
  };
  return {
    limits: {
      as: { soft: 4 * GiB, hard: 4 * GiB },
      data: unlimited,
      rss: unlimited,
      stack: unlimited,
      memlock: unlimited,
      nproc: unlimited,
    },
    status: {
      vmSize,
      vmPeak: vmSize,
      vmRss: 650 * MiB,
      vmHwm: 650 * MiB,
      vmData: 3 * GiB,
      vmStk: 132 * 1024,
      threads: 40,
    },
    mappings: 1200,
    host: { ...sampleHost(), overcommitMemory: 0 },
    cgroups: { hierarchies: [], tightest: null, notes: [] },
    slurm: null,
    allocator,
  };
}

test('seed story: the address-space limit binds first, with the headroom in bytes and units', (t) => {
  const result = verdict(seedStory());
  t.is(
    result.summary,
    'address space: 3.91 GiB of RLIMIT_AS 4.00 GiB used, 92 MiB (96468992 bytes) left; largest mappable block 92 MiB (96468992 bytes)',
  );
  t.deepEqual(
    result.constraints.map((c) => c.name),
    ['address space', 'physical memory'],
  );
  t.deepEqual(result.notes, [
    "RLIMIT_AS soft = hard: only the job's launcher (scheduler, container, shell profile) can raise it",
  ]);
  const raisable = verdict({
    ...seedStory(),
    limits: { ...seedStory().limits, as: { soft: 4 * GiB, hard: 'unlimited' } },
    mappings: 65000,
  });
  t.deepEqual(raisable.notes, [
    'the RLIMIT_AS soft limit can be raised by this user up to the hard limit unlimited: ulimit -S -v unlimited',
    '65000 mappings of vm.max_map_count 65530: mmap fails with ENOMEM at the limit whatever the sizes',
  ]);
});

test('seed story: vit-b-32 fits neither via mmap nor via copy; the reasons name the limit', (t) => {
  const facts = seedStory();
  const fit = modelFit('vit-b-32', 'fp32', facts, verdict(facts).constraints);
  t.is(fit.weightBytes, 605110268);
  t.deepEqual(fit.largestTensor, { name: 'text_model.embeddings.token_embedding.weight', bytes: 101187584 });
  t.like(fit.viaMmap, {
    fits: false,
    needs: 605110268,
    available: 92 * MiB,
    limitedBy: 'largest PROT_NONE reservation under RLIMIT_AS',
  });
  t.like(fit.viaCopy, { fits: false, needs: 605110268, available: 92 * MiB, limitedBy: 'address space, RLIMIT_AS' });
  t.is(fit.training.needs, 4 * 605110268);
  t.is(fit.viaCopy.explanation, 'via copy does NOT fit: needs 577 MiB, 92 MiB available (address space, RLIMIT_AS)');
  // int8 weight-only: 1 byte per weight plus fp32 row scales and the fp32 small tensors.
  const int8 = modelFit('vit-b-32', 'int8', facts, verdict(facts).constraints);
  t.true(int8.weightBytes < 605110268 / 3);
  t.is(int8.training.needs, 4 * 605110268);
});

test('sample host files: meminfo, overcommit sysctls, THP are read to the byte', (t) => {
  const host = sampleHost();
  t.deepEqual(host, {
    memTotal: 16 * GiB,
    memAvailable: 650 * MiB,
    swapTotal: 0,
    swapFree: 0,
    commitLimit: 8 * GiB,
    committedAs: 12 * GiB,
    overcommitMemory: 2,
    overcommitRatio: 50,
    overcommitKbytes: 0,
    maxMapCount: 65530,
    transparentHugepage: 'never',
  });
  // overcommit_memory = 2 makes CommitLimit a limit: already over it here.
  const facts = {
    ...seedStory(),
    host,
    limits: { ...seedStory().limits, as: { soft: 'unlimited' as const, hard: 'unlimited' as const } },
  };
  t.like(verdict(facts).bindsFirst, { name: 'commit limit', headroom: 0 });
});

test('unreadable files: each field says "unknown: <why>" and the report still prints', (t) => {
  const status = readProcessStatus('/nonexistent/status');
  t.is(status.vmSize, 'unknown: /nonexistent/status: ENOENT (no such file or directory)');
  t.is(countMappings('/nonexistent/maps'), 'unknown: /nonexistent/maps: ENOENT (no such file or directory)');
  const host = readHostMemory({
    meminfo: '/nonexistent/meminfo',
    sysctlDirectory: '/nonexistent',
    transparentHugepage: '/nonexistent/thp',
  });
  t.regex(host.memAvailable as string, /^unknown: \/nonexistent\/meminfo: ENOENT/);
  t.regex(host.transparentHugepage, /^unknown: /);
  const report = runProbe({ cgroupSources: { procSelfCgroup: '/nonexistent/cgroup' } });
  const text = renderProbe(report);
  t.regex(
    text,
    /no memory cgroup found\n {2}tightest: no group has a memory limit\n {2}note: unknown: \/nonexistent\/cgroup: ENOENT/,
  );
  t.regex(text, /8\. Verdict\n {2}binds first: /);
});

test('cgroup v2 sample tree: the tightest ancestor (/slurm/job_42, 700 MiB) binds first in the report', (t) => {
  const root = path.join(fixtures, 'cgroup-v2');
  const report = runProbe({
    cgroupSources: {
      procSelfCgroup: path.join(root, 'proc-self-cgroup'),
      mountinfo: path.join(root, 'mountinfo'),
      root,
    },
  });
  t.like(report.verdict.bindsFirst, {
    name: 'cgroup memory',
    source: 'cgroup v2 memory.max of /slurm/job_42',
    limit: 734003200,
    used: 713031680,
    headroom: 20971520,
  });
  const text = renderProbe(report);
  t.regex(text, / {2}v2 \/slurm\/job_42\n {6}limit\s+700 MiB \(734003200\)\s+high\s+650 MiB\s+swap limit\s+0 B\n/);
  t.regex(text, /oom events\s+1\s+oom kills\s+1/);
  t.regex(
    text,
    /binds first: cgroup memory: 680 MiB of cgroup v2 memory.max of \/slurm\/job_42 700 MiB used, 20 MiB \(20971520 bytes\) left/,
  );
});

test('Slurm variables: memory per node, per CPU, per GPU in bytes; malformed values say why', (t) => {
  t.is(readSlurmJob({}), null);
  t.deepEqual(
    readSlurmJob({ SLURM_JOB_ID: '7', SLURM_MEM_PER_CPU: '2048', SLURM_CPUS_ON_NODE: '4', SLURM_MEM_PER_GPU: '8G' }),
    {
      jobId: '7',
      stepId: null,
      memPerNode: null,
      memPerCpu: 2 * GiB,
      memPerGpu: 'unknown: SLURM_MEM_PER_GPU="8G" is not a count of MiB',
      cpusOnNode: 4,
      scontrol: null,
      cgroup: null,
    },
  );
  const facts = {
    ...seedStory(),
    limits: { ...seedStory().limits, as: { soft: 'unlimited' as const, hard: 'unlimited' as const } },
  };
  facts.slurm = readSlurmJob({ SLURM_JOB_ID: '7', SLURM_MEM_PER_CPU: '200', SLURM_CPUS_ON_NODE: '4' });
  t.like(verdict(facts).bindsFirst, {
    name: 'Slurm job memory',
    source: 'SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE',
    limit: 800 * MiB,
  });
});

test("the probe changes this process's RSS by less than 5 MiB", (t) => {
  runProbe(); // first run: loads the addon and warms the code paths
  const before = readProcessStatus().vmRss as number;
  const report = runProbe({ models: ['vit-b-32'] });
  const after = readProcessStatus().vmRss as number;
  t.true(after - before < 5 * MiB, `VmRSS ${before} -> ${after}`);
  t.true(report.allocator.reservable.total > 0);
});
