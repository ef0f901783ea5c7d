// Run results in the shape `clip-mem run --json` writes, as input for the renderers' and compare's
// tests: basic-ops passed; clip-load-copy failed under RLIMIT_AS at the token embedding (the seed's
// failure). Round figures chosen so the tests can assert exact rendered text; real runs are tested in
// test/run.test.ts.
import type { RunResults, ScenarioResult } from '../../src/report/result';
import { RUN_SCHEMA } from '../../src/report/result';

const MiB = 1024 * 1024;

function scenario(fields: Partial<ScenarioResult> & Pick<ScenarioResult, 'name' | 'status'>): ScenarioResult {
  return {
    kind: 'scenario',
    schema: RUN_SCHEMA,
    wallMs: 900,
    exit: { code: 0, signal: null },
    timedOut: false,
    error: null,
    memory: {
      rssBefore: 60 * MiB,
      rssAfter: 70 * MiB,
      rssPeak: 75 * MiB,
      vmSizeBefore: 900 * MiB,
      vmSizeAfter: 910 * MiB,
      vmSizePeak: 920 * MiB,
      heapPeak: 5 * MiB,
      anonPeak: 20 * MiB,
      filePeak: 0,
      increase: 10 * MiB,
    },
    failure: null,
    failureCount: 0,
    lastPhase: '',
    diagnosis: { cause: 'none', evidence: [] },
    analysis: {
      resource: 'address space (RLIMIT_AS)',
      required: 920 * MiB,
      available: 1300 * MiB,
      deficit: 0,
      basis: 'VmSize peak',
    },
    fixes: [],
    figures: {},
    timeline: [0, 200, 400, 600, 800].map((tMs, i) => ({
      tMs,
      rss: (60 + 3 * i) * MiB,
      vmSize: (900 + 5 * i) * MiB,
      heap: i * MiB,
      phase: '',
    })),
    command: `clip-mem run ${fields.name} --limit-as 1300M`,
    ...fields,
  };
}

export function sampleResults(): RunResults {
  return {
    header: {
      kind: 'run',
      schema: RUN_SCHEMA,
      startedAt: '2026-11-28T13:00:00.000Z',
      command: 'clip-mem run basic-ops clip-load-copy --limit-as 1300M --json run.json',
      options: {
        model: 'vit-b-32',
        dtype: 'fp32',
        batch: 2,
        largeBatch: 32,
        backend: 'onnxruntime',
        threads: 2,
        limits: { as: 1300 * MiB },
        timeoutMs: 600000,
        scenarios: ['basic-ops', 'clip-load-copy'],
        jobs: 1,
      },
      environment: {
        clipMemVersion: '0.1.0',
        node: 'v20.19.0',
        platform: 'linux',
        arch: 'x64',
        cpus: 2,
        hostname: 'test',
        memTotal: 24 * 1024 * MiB,
        memAvailable: 20 * 1024 * MiB,
        inherited: { as: null, data: null, cgroupMem: null },
      },
    },
    scenarios: [
      scenario({ name: 'basic-ops', status: 'passed' }),
      scenario({
        name: 'clip-load-copy',
        status: 'failed',
        exit: { code: 1, signal: null },
        error: 'Cannot allocate memory',
        failure: {
          fn: 'malloc',
          size: 101187584,
          errno: 12,
          errnoName: 'ENOMEM',
          phase: 'load text_model.embeddings.token_embedding.weight',
          vmSize: 1250 * MiB,
          vmData: 400 * MiB,
          rss: 90 * MiB,
          tMs: 700,
          stack: ['malloc', 'node::ArrayBuffer::Allocate'],
        },
        failureCount: 1,
        lastPhase: 'load text_model.embeddings.token_embedding.weight',
        diagnosis: { cause: 'address-space', evidence: ['VmSize 1.22 GiB + 96.5 MiB > RLIMIT_AS 1.27 GiB'] },
        analysis: {
          resource: 'address space (RLIMIT_AS)',
          required: 1250 * MiB + 101187584,
          available: 1300 * MiB,
          deficit: 1250 * MiB + 101187584 - 1300 * MiB,
          basis: 'VmSize at the failure + the failed request',
        },
        fixes: [
          {
            kind: 'load-path',
            text: 'load by mmap: it needs no copy of the weights',
            command: 'clip-mem run clip-load --limit-as 1300M',
          },
        ],
      }),
    ],
    end: {
      kind: 'end',
      schema: RUN_SCHEMA,
      finishedAt: '2026-11-28T13:00:02.000Z',
      passed: 1,
      failed: 1,
      wallMs: 2000,
    },
  };
}
