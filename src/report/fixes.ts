// Fixes for a failed scenario, each with numbers computed for this model and this limit, and the memory
// analysis row (required / available / deficit) they are computed from. A fix is offered only when the
// measured numbers support it: a smaller dtype only when its weights fit in the headroom measured before
// loading, MALLOC_ARENA_MAX only when the arenas it would give back cover the deficit, and so on.
import * as fs from 'node:fs';
import { describeLayout, type WeightFormat } from '../clip/config';
import { readSafetensorsHeader } from '../clip/safetensors';
import type { LimitKind, Limits } from '../core/limits';
import { formatBytes } from '../core/units';
import { estimatePhase, type PhaseEstimate } from '../estimate/estimate';
import { EstimateUnavailable } from '../estimate/model';
import { loadRuntimeRecord } from '../estimate/store';
import { SCENARIO_CATALOG, catalogEntry } from '../scenarios/catalog';
import { ARENA_HEAP_BYTES } from '../scenarios/child-protocol';
import { commandLine } from '../scenarios/command-line';
import type { RunOptions, ScenarioOptions } from '../scenarios/scenario';
import { gpuFixes } from './gpu-fixes';
import type { Environment, Fix, MemoryAnalysis, ScenarioResult } from './result';

const MiB = 1024 * 1024;

/**
 * Fraction of slack kept between a predicted need and the limit before a fix is called one that fits:
 * the loaders' own buffers, allocator rounding and the runtime's growth are not in the weight bytes.
 */
const SAFETY = 0.1;

const floorMiB = (bytes: number) => Math.floor(bytes / MiB) * MiB;

const roundUpMiB = (bytes: number) => Math.ceil(bytes / MiB) * MiB;
const exact = (bytes: number) => `${bytes.toLocaleString('en-US')} B (${formatBytes(bytes)})`;

type Analysed = Pick<ScenarioResult, 'name' | 'status' | 'memory' | 'failure' | 'diagnosis' | 'figures' | 'command'>;

export function memoryAnalysis(result: Analysed, options: RunOptions, environment: Environment): MemoryAnalysis {
  const { limits } = options;
  const f = result.failure;
  const m = result.memory;
  const row = (resource: string, required: number | null, available: number | null, basis: string): MemoryAnalysis => ({
    resource,
    required,
    available,
    deficit: required !== null && available !== null ? Math.max(0, required - available) : null,
    basis,
  });
  switch (result.diagnosis.cause) {
    case 'address-space':
      return f && f.vmSize !== null
        ? row(
            'address space (RLIMIT_AS)',
            f.vmSize + f.size,
            limits.as ?? null,
            'VmSize at the failure + the failed request (a lower bound: what the rest of the work needs is not counted)',
          )
        : row('address space (RLIMIT_AS)', null, limits.as ?? null, 'the failure left no VmSize reading');
    case 'data-limit':
      return f && f.vmData !== null
        ? row(
            'data segment (RLIMIT_DATA)',
            f.vmData + f.size,
            limits.data ?? null,
            'VmData at the failure + the failed request (a lower bound: what the rest of the work needs is not counted)',
          )
        : row('data segment (RLIMIT_DATA)', null, limits.data ?? null, 'the failure left no VmData reading');
    case 'cgroup-oom-kill':
      return {
        resource: 'cgroup memory',
        required: m.rssPeak,
        available: limits.mem ?? null,
        deficit: null,
        basis: 'RSS when killed: a lower bound, the next allocation did not fit',
      };
  }
  if (limits.as !== undefined) return row('address space (RLIMIT_AS)', m.vmSizePeak, limits.as, 'VmSize peak');
  if (limits.mem !== undefined) {
    // The cgroup counts its own charge (anonymous memory + page cache it brought in), not shared pages.
    if (m.cgroupPeak == null) return row('cgroup memory', m.rssPeak, limits.mem, 'RSS peak');
    const cached = m.checkpointCached ?? 0;
    const analysis = row('cgroup memory', m.cgroupPeak, limits.mem, 'cgroup charge peak');
    // Below a MiB (a header's readahead when clip-mem checked the checkpoint) it changes nothing to say.
    if (cached >= 2 ** 20) {
      // A warm page cache: the checkpoint's pages were charged to whoever read them first, not to this
      // cgroup. A cold start (another node, after a reboot) is charged for them too.
      const cold = m.cgroupPeak + cached;
      analysis.note =
        `the ${formatBytes(cached)} of the checkpoint already in the page cache were charged elsewhere, not in this ` +
        `figure; a cold start that reads them all is charged up to ${formatBytes(cold)}, which ${cold > limits.mem ? 'does NOT fit' : 'fits'}`;
    }
    return analysis;
  }
  if (limits.data !== undefined)
    return row(
      'data segment (RLIMIT_DATA)',
      null,
      limits.data,
      'no VmData peak is measured; file mappings are not data',
    );
  return row('host RAM (MemAvailable)', m.rssPeak, environment.memAvailable, 'RSS peak');
}

function weightBytes(model: string, format: WeightFormat): number {
  return describeLayout(model, format).totals.totalBytes;
}

/** The scenario's own reproducible command with some options changed (the other options and limits kept). */
function rerun(
  name: string,
  options: RunOptions,
  change: Partial<Omit<RunOptions, 'limits'>> & { limits?: Limits },
): string {
  return commandLine([name], { ...options, ...change, limits: { ...options.limits, ...change.limits } });
}

/** How the scenario's work loads the weights, when loading them is its work (see the catalog). */
const loadsOf = (result: Analysed) => catalogEntry(result.name).loads;

/**
 * What a loading scenario needs in all: the VmSize it started from plus every weight byte (by copy), or
 * plus the whole file (by mmap: the mapping covers the header too).
 */
function loadingNeed(
  result: Analysed,
  scenario: ScenarioOptions,
  format: WeightFormat,
  overhead: number,
): number | null {
  if (result.memory.vmSizeBefore === null) return null;
  return result.memory.vmSizeBefore + loadedBytes(result, scenario, format) + overhead;
}

/**
 * Address space a copy load may reserve besides its weights: glibc gives each thread that allocates its
 * own arena heap (64 MiB reserved), and the threads that had none when loading began (V8's) start
 * allocating while it loads. At most one heap for each of them; at least what the load had reserved
 * besides its weights when it failed (VmSize then, less VmSize before and the tensors already read).
 */
function copyLoadOverhead(result: Analysed, scenario: ScenarioOptions): number {
  if (loadsOf(result) !== 'copy' || result.memory.vmSizeBefore === null) return 0;
  const threads = Number(result.figures.otherThreadsBefore ?? 0);
  const heaps = Number(result.figures.mallocArenaHeapsBefore ?? 0);
  const allowance = Math.max(0, threads - heaps) * ARENA_HEAP_BYTES;
  const f = result.failure;
  if (!f || f.vmSize == null) return allowance;
  const read = tensorBytesAt(scenario.checkpoint, f.phase)?.read ?? 0;
  return Math.max(allowance, f.vmSize - result.memory.vmSizeBefore - read);
}

function loadedBytes(result: Analysed, scenario: ScenarioOptions, format: WeightFormat): number {
  return loadsOf(result) === 'mmap' ? fs.statSync(scenario.checkpoint).size : weightBytes(scenario.model, format);
}

/**
 * `phaseNeed`: the VmSize the estimate predicts for the whole failing phase, when it stands behind one.
 * Without it a non-loading scenario knows only the failed allocation's need, a lower bound.
 */
function addressSpaceFixes(
  result: Analysed,
  options: RunOptions,
  scenario: ScenarioOptions,
  phaseNeed: number | null,
): Fix[] {
  const limit = options.limits.as;
  const f = result.failure;
  if (limit === undefined) return [];
  const fixes: Fix[] = [];
  const format = scenario.dtype as WeightFormat;
  const loading = loadsOf(result) !== undefined;
  const overhead = copyLoadOverhead(result, scenario);
  const need = loading ? loadingNeed(result, scenario, format, overhead) : f?.vmSize != null ? f.vmSize + f.size : null;
  if (need !== null) {
    const target = roundUpMiB(need * (1 + (loading ? SAFETY : 0)));
    const how = loading
      ? `loading ${scenario.model} ${format} needs VmSize ${formatBytes(result.memory.vmSizeBefore!)} before loading + ${exact(loadedBytes(result, scenario, format))} ${loadsOf(result) === 'mmap' ? 'for the file mapping' : 'of weights'}` +
        (overhead ? ` + up to ${formatBytes(overhead)} of glibc arena heaps its threads reserve while it loads` : '')
      : `this allocation alone needed VmSize ${formatBytes(f!.vmSize!)} + ${exact(f!.size)}; later steps may need more`;
    fixes.push({
      kind: 'raise-limit',
      text: `raise \`ulimit -v\` to at least ${target / 1024} KiB (${formatBytes(target)}): ${how}`,
      command: `ulimit -v ${target / 1024}   # then: ${rerun(result.name, options, { limits: { as: target } })}`,
    });
  }
  // A smaller weight format fits when its bytes, and what the load reserved besides, fit in what the
  // limit left above the VmSize before loading.
  if (result.memory.vmSizeBefore !== null && (loading || /^load /.test(f?.phase ?? ''))) {
    const headroom = limit - result.memory.vmSizeBefore - overhead;
    for (const smaller of (['fp16', 'int8'] as const).filter(
      (d) => d !== format && weightBytes(scenario.model, d) < weightBytes(scenario.model, format),
    )) {
      const bytes = weightBytes(scenario.model, smaller);
      if (bytes * (1 + SAFETY) <= headroom) {
        fixes.push({
          kind: 'dtype',
          text: `${smaller} weights need ${exact(bytes)}: they fit in the ${formatBytes(headroom)} of address space left above VmSize ${formatBytes(result.memory.vmSizeBefore)} under RLIMIT_AS ${formatBytes(limit)}, less what the load reserved besides its weights`,
          command: rerun(result.name, options, { dtype: smaller, limits: { as: floorMiB(limit) } }),
        });
        break;
      }
    }
  }
  // glibc gives each thread that allocates its own 64 MiB arena heap; capping them returns that space.
  // Only a need for the whole load or phase supports it: the failed allocation's alone is a lower bound
  // (tiny large-batch 4096 under 1700M: 31 MiB short at the failure, ~570 MiB short for the phase).
  // A copy load's need counts the heaps its threads may still reserve (copyLoadOverhead): the cap
  // returns those too.
  const heaps = Math.max(
    Number(result.figures.mallocArenaHeaps ?? 0),
    Number(result.figures.mallocArenaHeapsBefore ?? 0) + Math.floor(overhead / ARENA_HEAP_BYTES),
  );
  const wholeNeed = loading ? need : phaseNeed;
  const deficit = wholeNeed !== null ? wholeNeed - limit : null;
  if (heaps > 1 && deficit !== null && deficit > 0) {
    const returned = (heaps - 1) * ARENA_HEAP_BYTES;
    if (returned * (1 - SAFETY) >= deficit) {
      fixes.push({
        kind: 'malloc-arena-max',
        text: `MALLOC_ARENA_MAX=2 would return ~${formatBytes(returned)} of address space (${heaps} thread arena heaps of 64 MiB reserved, or to be reserved while loading; it keeps the main arena and one of them), more than the ${formatBytes(deficit)} missing`,
        command: `MALLOC_ARENA_MAX=2 ${rerun(result.name, options, { limits: { as: floorMiB(limit) } })}`,
      });
    }
  }
  return fixes;
}

/**
 * Where a copy load stood when it failed, in tensor bytes: those read before the tensor whose phase was in
 * force, and those left (that tensor and every one after it in the file; the loaders set the phase to the
 * tensor's name before reading it). Null when the phase names no tensor.
 */
function tensorBytesAt(checkpoint: string, phase: string): { read: number; left: number } | null {
  const entries = readSafetensorsHeader(checkpoint).entries;
  const at = entries.findIndex((e) => e.name === phase);
  const sum = (list: typeof entries) => list.reduce((total, e) => total + e.bytes, 0);
  return at < 0 ? null : { read: sum(entries.slice(0, at)), left: sum(entries.slice(at)) };
}

function dataLimitFixes(result: Analysed, options: RunOptions, scenario: ScenarioOptions): Fix[] {
  const limit = options.limits.data;
  const f = result.failure;
  if (limit === undefined) return [];
  const fixes: Fix[] = [];
  if (f?.vmData != null) {
    const left = loadsOf(result) === 'copy' ? (tensorBytesAt(scenario.checkpoint, f.phase)?.left ?? null) : null;
    const need = f.vmData + (left ?? f.size);
    const target = roundUpMiB(need * (left !== null ? 1 + SAFETY : 1));
    fixes.push({
      kind: 'raise-limit',
      text:
        `raise \`ulimit -d\` to at least ${target / 1024} KiB (${formatBytes(target)}): VmData ${formatBytes(f.vmData)} at the failure + ` +
        (left !== null
          ? `the ${exact(left)} of weights still to load from "${f.phase}" on (10% slack)`
          : `the failed ${exact(f.size)}; later steps may need more`),
      command: `ulimit -d ${target / 1024}   # then: ${rerun(result.name, options, { limits: { data: target } })}`,
    });
  }
  const mmapLoad = SCENARIO_CATALOG.find((s) => s.loads === 'mmap')!;
  if (loadsOf(result) === 'copy') {
    fixes.push({
      kind: 'load-path',
      text: `load by mmap (the ${mmapLoad.name} scenario): a read-only file mapping is not data, so RLIMIT_DATA does not count the weights at all`,
      command: rerun(mmapLoad.name, options, { limits: { data: floorMiB(limit) } }),
    });
  }
  return fixes;
}

function cgroupFixes(result: Analysed, options: RunOptions): Fix[] {
  const limit = options.limits.mem;
  if (limit === undefined) return [];
  const rss = result.memory.rssPeak;
  return [
    {
      kind: 'slurm-mem',
      text:
        `the job needs more than the ${formatBytes(limit)} cgroup limit it was killed at` +
        (rss !== null ? ` (RSS ${formatBytes(rss)} at the last reading)` : '') +
        `: in Slurm, ask for \`--mem\` above ${Math.ceil(limit / MiB)}M; \`clip-mem fit --limit-mem\` finds the size that passes`,
    },
  ];
}

/** What the limit that bound counts, predicted with its uncertainty added (the cautious figure). */
function needed(estimate: PhaseEstimate, cause: string): number | null {
  const u = estimate.uncertainty;
  if (cause === 'address-space') return estimate.predicted.vmSize + u.vmSize;
  if (cause === 'cgroup-oom-kill' || cause === 'data-limit') return estimate.predicted.rss + u.rss;
  return null;
}

/**
 * Fixes from `clip-mem estimate`'s prediction for this model, phase and batch: the largest smaller batch
 * that fits the limit, and the limit this batch needs; with the predicted need of the failing batch (the
 * address-space fixes weigh MALLOC_ARENA_MAX against it). Offered only when the runtime's baseline has
 * been measured (`clip-mem estimate` does it once), so every number is one the estimate stands behind.
 */
function estimatedFixes(
  result: Analysed,
  options: RunOptions,
  scenario: ScenarioOptions,
): { fixes: Fix[]; need: number | null } {
  const none = { fixes: [], need: null };
  const { estimatedAs: phase, batchOption } = catalogEntry(result.name);
  const cause = result.diagnosis.cause;
  const kind: LimitKind | undefined =
    cause === 'address-space'
      ? 'as'
      : cause === 'cgroup-oom-kill'
        ? 'mem'
        : cause === 'data-limit'
          ? 'data'
          : undefined;
  const limit = kind && options.limits[kind];
  if (!phase || !batchOption || !kind || limit === undefined) return none;
  const record = loadRuntimeRecord(scenario.threads);
  if (!record.baseline) return none;
  const batch = scenario[batchOption];
  const at = (b: number) =>
    estimatePhase(
      scenario.config,
      {
        model: scenario.model,
        dtype: scenario.dtype as WeightFormat,
        batch: b,
        phase,
        optimizer: 'adamw',
      },
      record,
    );
  const failing = at(batch);
  // An uncalibrated VmSize misses what malloc reserves as the batch grows (tiny large-batch 4096: 1.80 GiB
  // predicted, 2.17 GiB measured, and "batch 3415 fits 1700M" failed): only a calibrated one is offered.
  // RSS uncalibrated stays on the safe side of a cgroup's charge (tiny batch 2459: 400 MiB predicted, 322 MiB charged).
  if (cause === 'address-space' && failing.uncertainty.scope === 'uncalibrated') {
    // Calibrating this phase at this batch and a quarter of it measures what the model misses, here.
    const command = `clip-mem estimate --calibrate --model ${options.model} --dtype ${options.dtype} --threads ${options.threads} --phase ${phase} --calibrate-batches ${Math.max(1, Math.floor(batch / 4))},${batch}`;
    return {
      fixes: [
        {
          kind: 'calibrate',
          text: `for the batch that fits under ${formatBytes(limit)}, calibrate the estimate first (uncalibrated, it misses what malloc reserves as the batch grows), then run this scenario again`,
          command,
        },
      ],
      need: null,
    };
  }
  const current = needed(failing, cause);
  // An estimate that says the failing batch fits is wrong for this case: it supports no fix.
  if (current === null || current <= limit) return none;
  const fixes: Fix[] = [];
  const counted = cause === 'address-space' ? 'VmSize' : 'RSS';
  const how =
    failing.uncertainty.scope !== 'uncalibrated'
      ? `${counted}, uncertainty included`
      : `${counted}, not calibrated: \`clip-mem estimate --calibrate\` narrows it`;
  {
    const what =
      cause === 'address-space' ? '`ulimit -v`' : cause === 'data-limit' ? '`ulimit -d`' : 'the memory limit';
    const target = roundUpMiB(current);
    fixes.push({
      kind: cause === 'cgroup-oom-kill' ? 'slurm-mem' : 'raise-limit',
      text:
        `${phase} at batch ${batch} is predicted to need ${formatBytes(current)} (${how}): ` +
        (cause === 'cgroup-oom-kill'
          ? `in Slurm, \`--mem\` at least ${target / MiB}M`
          : `raise ${what} to at least ${formatBytes(target)}`),
      command: rerun(result.name, options, { limits: { [kind]: target } }),
    });
  }
  // The largest smaller batch predicted to fit (predictions grow with the batch: bisect).
  let lo = 0;
  let hi = batch;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const need = needed(at(mid), cause);
    if (need !== null && need <= limit) lo = mid;
    else hi = mid;
  }
  if (lo === 0 && batch > 1) {
    const need = needed(at(1), cause);
    if (need !== null && need <= limit) lo = 1;
  }
  if (lo >= 1 && lo < batch) {
    fixes.push({
      kind: 'batch',
      text: `batch ${lo} is predicted to need ${formatBytes(needed(at(lo), cause)!)} (${how}): it fits under ${formatBytes(limit)}; batch ${lo + 1} would not`,
      command: rerun(result.name, options, { [batchOption]: lo, limits: { [kind]: floorMiB(limit) } }),
    });
  }
  return { fixes, need: cause === 'address-space' ? current : null };
}

function measuredFixes(
  result: Analysed,
  options: RunOptions,
  scenario: ScenarioOptions,
  phaseNeed: number | null,
): Fix[] {
  switch (result.diagnosis.cause) {
    case 'address-space':
      return addressSpaceFixes(result, options, scenario, phaseNeed);
    case 'data-limit':
      return dataLimitFixes(result, options, scenario);
    case 'cgroup-oom-kill':
      return cgroupFixes(result, options);
    case 'gpu-memory':
      return result.diagnosis.gpu ? gpuFixes(result.diagnosis.gpu, result.command) : [];
    default:
      return [];
  }
}

/** The fixes the numbers support, for one failed scenario; none for a passing one. */
export function proposeFixes(result: Analysed, options: RunOptions, scenario: ScenarioOptions): Fix[] {
  if (result.status === 'passed') return [];
  let estimated: ReturnType<typeof estimatedFixes> = { fixes: [], need: null };
  try {
    estimated = estimatedFixes(result, options, scenario);
  } catch (error) {
    // The estimate cannot stand behind a figure here: only the fixes read off the measurements remain.
    // Anything else is a bug, and hiding it would hide fixes the user should have had.
    if (!(error instanceof EstimateUnavailable)) throw error;
  }
  // A predicted need for the whole phase replaces the lower bound read off one failed allocation.
  const replaced = new Set<string>(
    estimated.fixes.map((f) => f.kind).filter((kind) => kind === 'raise-limit' || kind === 'slurm-mem'),
  );
  return [
    ...measuredFixes(result, options, scenario, estimated.need).filter((f) => !replaced.has(f.kind)),
    ...estimated.fixes,
  ];
}
