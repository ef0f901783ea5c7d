// The live-heap profile on real processes: a C program (native/test/holder_program.c) whose hold_big holds
// 200 MiB while grow_steps grows in 1 MiB steps until the memory runs out. The report names both, with
// estimated bytes within 10% of what each printed it held; `--pprof` writes a profile.proto that decodes
// against pprof's schema with the report's totals.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import * as protobuf from 'protobufjs';
import type { TraceHeapMoment } from '../src/report/heap-profile';
import { fixtures, repoRoot } from './helpers/paths';
import { scratchDir } from './helpers/scratch';
import { trace } from './helpers/trace';

const holderProgram = path.join(repoRoot, 'build', 'test-programs', 'holder_program');
const MiB = 2 ** 20;

/** The bytes each function printed it held last (the truth the estimates are checked against). */
function truth(stdout: string): { holdBig: number; growSteps: number } {
  const last = (name: string) => Number([...stdout.matchAll(new RegExp(`^${name} (\\d+)$`, 'gm'))].pop()?.[1] ?? NaN);
  return { holdBig: last('hold_big'), growSteps: last('grow_steps') };
}

function holder(moment: TraceHeapMoment, fn: string) {
  const found = moment.holders.find((h) => h.site.startsWith(`${fn} (`));
  if (!found) throw new Error(`no holder ${fn} in ${moment.holders.map((h) => h.site).join('; ')}`);
  return found;
}

function within10Percent(t: { true: (v: boolean, m?: string) => void }, estimate: number, real: number, what: string) {
  t.true(Math.abs(estimate - real) <= 0.1 * real, `${what}: estimated ${estimate} bytes, held ${real}`);
}

test('killed by a 300M cgroup: at the kill, hold_big and grow_steps hold what they printed (within 10%); pprof decodes with the same totals', async (t) => {
  const dir = scratchDir('clipmem-heap-');
  const pprof = path.join(dir, 'heap.pb.gz');
  const html = path.join(dir, 'heap.html');
  const { status, report, stdout, stderr } = trace(
    ['--limit-mem', '300M', '--pprof', pprof, '--heap-html', html],
    [holderProgram, 'kill'],
  );
  t.is(status, 137);
  t.is(report.diagnosis.cause, 'cgroup-oom-kill');
  const real = truth(stdout);
  t.is(real.holdBig, 200 * MiB);
  t.true(real.growSteps >= 50 * MiB, `grow_steps held ${real.growSteps} bytes`);
  const main = report.heapProfile!.processes[0]!;
  t.is(main.pid, report.pid);
  t.true(main.killed);
  t.is(main.sampleMean, 512 * 1024);
  t.is(main.dropped, 0);
  const atKill = main.moments.find((m) => m.explains)!;
  t.is(atKill.moment, 'end');
  t.regex(holder(atKill, 'hold_big').site, /^hold_big \(.*holder_program\.c:\d+\)$/);
  within10Percent(t, holder(atKill, 'hold_big').bytes, real.holdBig, 'hold_big');
  within10Percent(t, holder(atKill, 'grow_steps').bytes, real.growSteps, 'grow_steps');
  t.is(holder(atKill, 'hold_big').fn, 'malloc');
  t.is(holder(atKill, 'hold_big').error, 0); // a 200 MiB block is sampled with probability 1
  t.true(holder(atKill, 'grow_steps').error > 0);
  // The peak was taken on the way up, within 1/64 of the end state's total.
  const peak = main.moments.find((m) => m.moment === 'peak')!;
  t.true(peak.totalBytes >= atKill.totalBytes * (1 - 1 / 64));
  t.is(report.heapProfile!.tree!.totalBytes, atKill.totalBytes);
  const evidence = report.diagnosis.evidence.find((e) => e.startsWith('at the kill: '));
  t.regex(evidence ?? '', /^at the kill: \d+(\.\d+)? MiB held by hold_big \(.*\), \d+(\.\d+)? MiB by grow_steps \(/);
  t.regex(stderr, /at the kill: .* estimated live\n +200 MiB \(\d+%\) malloc from hold_big/);

  // The page: icicle charts as inline SVG, no script; hovering hold_big's frame says its bytes.
  const page = fs.readFileSync(html, 'utf8');
  t.false(/<script/i.test(page));
  t.true(page.includes('<h3>at the kill: '));
  t.regex(page, /<svg [^>]*>/);
  const bigTitle = /<title>hold_big \([^<]*holder_program\.c:\d+\)\n([^<]*)<\/title>/.exec(page);
  t.is(bigTitle?.[1], `200 MiB (${Math.round(holder(atKill, 'hold_big').share * 100)}%)`);

  // The pprof file, decoded against pprof's own schema.
  const root = await protobuf.load(path.join(fixtures, 'profile.proto'));
  const Profile = root.lookupType('perftools.profiles.Profile');
  const decoded = Profile.toObject(Profile.decode(zlib.gunzipSync(fs.readFileSync(pprof))), {
    longs: Number,
    defaults: true,
  }) as {
    stringTable: string[];
    sampleType: { type: number; unit: number }[];
    sample: { locationId: number[]; value: number[]; label: { key: number; num: number }[] }[];
    location: { id: number; line: { functionId: number; line: number }[] }[];
    function: { id: number; name: number; filename: number }[];
    periodType: { type: number; unit: number };
    period: number;
  };
  const s = decoded.stringTable;
  t.is(s[0], '');
  t.deepEqual(
    decoded.sampleType.map((v) => [s[v.type], s[v.unit]]),
    [['inuse_space', 'bytes']],
  );
  t.deepEqual([s[decoded.periodType.type], s[decoded.periodType.unit], decoded.period], ['space', 'bytes', 512 * 1024]);
  const total = decoded.sample.reduce((sum, sample) => sum + sample.value[0]!, 0);
  t.is(total, atKill.totalBytes);
  const nameOf = (locationId: number) => {
    const location = decoded.location.find((l) => l.id === locationId)!;
    return s[decoded.function.find((f) => f.id === location.line[0]!.functionId)!.name];
  };
  const byLeaf = new Map(decoded.sample.map((sample) => [nameOf(sample.locationId[0]!), sample]));
  t.is(byLeaf.get('hold_big')!.value[0], holder(atKill, 'hold_big').bytes);
  t.is(byLeaf.get('grow_steps')!.value[0], holder(atKill, 'grow_steps').bytes);
  t.is(nameOf(byLeaf.get('hold_big')!.locationId[1]!), 'main');
  t.deepEqual(
    byLeaf.get('hold_big')!.label.map((l) => [s[l.key], l.num]),
    [['pid', report.pid]],
  );
});

test('a failed malloc under --limit-as: at failure #1, hold_big and grow_steps hold what they printed (within 10%)', (t) => {
  const { status, report, stdout } = trace(['--limit-as', '400M'], [holderProgram, 'fail']);
  t.is(status, 1);
  t.is(report.diagnosis.cause, 'address-space');
  t.is(report.failures[0]!.fn, 'malloc');
  t.is(report.failures[0]!.size, MiB);
  const held = Number(/^failed after (\d+) MiB$/m.exec(stdout)![1]) * MiB;
  t.is(truth(stdout).growSteps, held);
  const main = report.heapProfile!.processes[0]!;
  t.false(main.killed);
  const atFailure = main.moments.find((m) => m.explains)!;
  t.is(atFailure.moment, 'failure');
  t.is(atFailure.failure, 1);
  within10Percent(t, holder(atFailure, 'hold_big').bytes, 200 * MiB, 'hold_big');
  within10Percent(t, holder(atFailure, 'grow_steps').bytes, held, 'grow_steps');
  t.true(
    report.diagnosis.evidence.some((e) =>
      /^at failure #1: \d+(\.\d+)? MiB held by hold_big \(.*\), .* by grow_steps/.test(e),
    ),
    report.diagnosis.evidence.join('\n'),
  );
});
