// The process tree of a traced run (issue 10): a row per process with its parent, command line, times,
// ending and the evidence for it, peaks; the tree's summed RSS against the cgroup's own peak; the Chrome
// trace / Perfetto file checked against the Trace Event Format; a PyTorch DataLoader worker OOM-killed,
// named with the pid PyTorch names; stale record directories of killed runs removed by the next run.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceReport } from '../src/report/trace-report';
import { repoRoot } from './helpers/paths';
import { requireProgram } from './helpers/require-program';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const python = '/usr/bin/python3';
const MiB = 2 ** 20;

function traceTree(options: string[], command: string[], env: NodeJS.ProcessEnv = {}) {
  const dir = scratchDir('clipmem-tree-');
  const json = path.join(dir, 'trace.json');
  const events = path.join(dir, 'run.trace.json');
  const result = spawnSync(
    process.execPath,
    [bin, 'trace', ...options, '--json', json, '--trace-events', events, '--', ...command],
    { cwd: repoRoot, encoding: 'utf8', timeout: 120000, env: { ...process.env, ...env } },
  );
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  const errors = schemaErrors('trace', report);
  if (errors) throw new Error(`trace --json breaks schema/trace.schema.json: ${errors}`);
  return { status: result.status, stderr: result.stderr, report, events: JSON.parse(fs.readFileSync(events, 'utf8')) };
}

/**
 * The Trace Event Format's rules (JSON object form) as chrome://tracing and ui.perfetto.dev read them:
 * traceEvents an array; each event a name, a phase, a timestamp in microseconds, pid and tid; a complete
 * event (X) its duration; a counter (C) numeric args; an instant (i) a scope g, p or t; metadata (M)
 * process_name / thread_name with args.name. Returns the problems.
 */
function traceEventProblems(file: unknown): string[] {
  const problems: string[] = [];
  const root = file as { traceEvents?: unknown; displayTimeUnit?: unknown };
  if (!root || typeof root !== 'object' || !Array.isArray(root.traceEvents)) return ['traceEvents is not an array'];
  if (root.displayTimeUnit !== undefined && !['ms', 'ns'].includes(root.displayTimeUnit as string))
    problems.push(`displayTimeUnit ${String(root.displayTimeUnit)}`);
  root.traceEvents.forEach((e: Record<string, unknown>, i: number) => {
    const bad = (why: string) => problems.push(`event ${i} (${JSON.stringify(e).slice(0, 120)}): ${why}`);
    if (typeof e.name !== 'string') bad('no name');
    if (typeof e.ph !== 'string' || !/^[BEXiICMbenstfPONDRc()]$/.test(e.ph)) bad('no valid ph');
    if (typeof e.ts !== 'number' || !Number.isFinite(e.ts) || e.ts < 0) bad('ts not a number of microseconds');
    if (!Number.isInteger(e.pid) || !Number.isInteger(e.tid)) bad('pid/tid not integers');
    if (e.args !== undefined && (typeof e.args !== 'object' || e.args === null)) bad('args not an object');
    if (e.ph === 'X' && (typeof e.dur !== 'number' || e.dur < 0)) bad('X without a duration');
    if (e.ph === 'C') {
      const values = Object.values((e.args ?? {}) as object);
      if (!values.length || values.some((v) => typeof v !== 'number')) bad('counter args not numbers');
    }
    if (e.ph === 'i' && !['g', 'p', 't'].includes(e.s as string)) bad('instant without scope g/p/t');
    if (e.ph === 'M') {
      if (
        !['process_name', 'thread_name', 'process_sort_index', 'thread_sort_index', 'process_labels'].includes(
          e.name as string,
        )
      )
        bad('unknown metadata');
      if (typeof (e.args as { name?: unknown })?.name !== 'string' && /_name$/.test(e.name as string))
        bad('no args.name');
    }
  });
  return problems;
}

type TraceEvent = {
  name: string;
  ph: string;
  ts: number;
  dur?: number;
  pid: number;
  s?: string;
  cat?: string;
  args?: Record<string, unknown>;
};

test('three processes under --limit-mem: a row each, the summed RSS peak within 5% of the cgroup peak, and a valid Perfetto trace', (t) => {
  requireProgram(t, python, 'apt-get install python3');
  // Two children exec'd (no pages shared with the parent), each like the parent touching 150 MiB and holding it.
  const touch = "b = b'\\1' * (150 << 20)\nimport time; time.sleep(1)";
  const script =
    `import subprocess, sys\ntouch = ${JSON.stringify(touch)}\n` +
    'kids = [subprocess.Popen([sys.executable, "-c", touch]) for _ in range(2)]\nexec(touch)\n' +
    'print(" ".join(str(k.pid) for k in kids), flush=True)\nsys.exit(max(k.wait() for k in kids) + 4)';
  const { status, report, events, stderr } = traceTree(['--limit-mem', '1G'], [python, '-c', script]);
  t.is(status, 4, stderr);
  const kids = report.processes.filter((p) => !p.main);
  t.is(report.processes.length, 3);
  const main = report.processes[0]!;
  t.true(main.main);
  t.is(main.pid, report.pid);
  t.deepEqual(main.ending, {
    how: 'exited',
    code: 4,
    signal: null,
    by: null,
    cgroup: null,
    evidence: 'exit status',
    text: 'exited 4',
  });
  for (const kid of kids) {
    t.is(kid.ppid, report.pid);
    t.regex(kid.command!, /^\/usr\/bin\/python3 -c b = b'\\1' \* \(150 << 20\)/);
    t.true(kid.tracked);
    t.is(kid.ending.how, 'exited');
    t.true(kid.peaks.rss! >= 150 * MiB, `RSS peak ${kid.peaks.rss}`);
    t.true(kid.startMs! <= kid.endMs!);
    for (const s of kid.timeline) t.true(s.rss === null || s.rss <= kid.peaks.rss!);
  }
  t.regex(stderr, new RegExp(`pid ${kids[0]!.pid} \\(parent ${report.pid}\\) /usr/bin/python3 -c b = b'\\\\1'`));
  const tree = report.tree;
  const cgroupPeak = report.cgroup!.peak!;
  t.true(tree.rssPeak! >= 3 * 150 * MiB, `summed ${tree.rssPeak}`);
  t.true(
    Math.abs(tree.rssPeak! - cgroupPeak) <= 0.05 * cgroupPeak,
    `summed ${tree.rssPeak} vs cgroup peak ${cgroupPeak}`,
  );
  t.true(tree.largest!.rss >= 150 * MiB && tree.largest!.rss < tree.rssPeak! / 2);
  t.regex(stderr, /tree: summed RSS peak .* largest single process: pid \d+, RSS .*; the cgroup's own peak/);

  t.deepEqual(traceEventProblems(events), []);
  const list = events.traceEvents as TraceEvent[];
  for (const p of report.processes) {
    t.true(list.some((e) => e.ph === 'M' && e.name === 'process_name' && e.pid === p.pid));
    t.true(list.some((e) => e.ph === 'X' && e.cat === 'process' && e.pid === p.pid));
    for (const name of ['RSS', 'VmSize', 'heap'])
      t.true(
        list.some((e) => e.ph === 'C' && e.name === name && e.pid === p.pid),
        name,
      );
  }
  const summed = list.filter((e) => e.name === 'tree RSS (summed)').map((e) => e.args!.bytes as number);
  t.is(Math.max(...summed), tree.rssPeak!);
});

test("descendants' exit codes from their records: exit() from a return, sys.exit, os._exit in a forked child, a shell's exit", (t) => {
  requireProgram(t, python, 'apt-get install python3');
  // Each parent reaps at once, so a poll seldom sees the zombie: the code must come from the record.
  const script = [
    'import os, subprocess, sys',
    'subprocess.run([sys.executable, "-c", "import sys; sys.exit(6)"])',
    'subprocess.run(["/bin/sh", "-c", "exit 9"])',
    'pid = os.fork()',
    'if pid == 0: os._exit(5)',
    'os.waitpid(pid, 0)',
  ].join('\n');
  const { status, report } = traceTree([], [python, '-c', script]);
  t.is(status, 0);
  const codes = report.processes
    .filter((p) => !p.main)
    .map((p) => {
      t.is(p.ending.how, 'exited');
      t.is(p.ending.text, `exited ${p.ending.code}`);
      t.regex(p.ending.evidence, /^(the record's exit mark|zombie \/proc\/PID\/stat)$/);
      return p.ending.code;
    });
  t.deepEqual(codes.sort(), [5, 6, 9]);
});

test('an orphan killed by a signal after its parent exited: clip-mem adopted it (child subreaper) and read how it ended', (t) => {
  // The inner sh outlives the outer one, which exits at once: it is handed to clip-mem, not to init (which
  // would reap it unseen), and its wait status is read from /proc/PID/stat before clip-mem reaps it.
  const { status, report } = traceTree([], ['sh', '-c', 'sh -c "sleep 0.5; kill -TERM \\$\\$" & exit 0']);
  t.is(status, 0);
  const orphan = report.processes.find((p) => p.command === 'sh -c sleep 0.5; kill -TERM $$');
  t.truthy(orphan, JSON.stringify(report.processes.map((p) => p.command)));
  t.deepEqual(orphan!.ending, {
    how: 'killed',
    code: null,
    signal: 'SIGTERM',
    by: null,
    cgroup: null,
    evidence: 'zombie /proc/PID/stat',
    text: 'killed by SIGTERM, sender not known',
  });
  t.deepEqual(report.outlived, []);
});

test('clip-mem --timeout kills a tree: every process killed by clip-mem, from the processes alive then; the Markdown and HTML reports say the same', (t) => {
  const dir = scratchDir('clipmem-tree-docs-');
  const markdown = path.join(dir, 'trace.md');
  const html = path.join(dir, 'trace.html');
  const { status, report, events } = traceTree(
    ['--timeout', '3', '--markdown', markdown, '--html', html],
    ['sh', '-c', 'sleep 30 & sleep 31; wait'],
  );
  t.is(status, 137);
  const sleeps = report.processes.filter((p) => /^sleep 3[01]$/.test(p.command ?? ''));
  t.is(sleeps.length, 2, JSON.stringify(report.processes.map((p) => p.command)));
  for (const p of [report.processes[0]!, ...sleeps]) {
    t.is(p.ending.how, 'killed');
    t.is(p.ending.signal, 'SIGKILL');
    t.is(p.ending.by, 'clip-mem');
    t.is(p.ending.text, "killed by clip-mem's --timeout");
  }
  t.deepEqual(traceEventProblems(events), []);
  t.is((events.traceEvents as TraceEvent[]).filter((e) => e.ph === 'i' && e.cat === 'kill').length, 3);

  // A row per process in both documents, with how it ended and the evidence; the tree charted in the HTML.
  const md = fs.readFileSync(markdown, 'utf8');
  const page = fs.readFileSync(html, 'utf8');
  t.true(md.startsWith('# clip-mem trace: sh -c sleep 30 & sleep 31; wait\n'));
  t.regex(md, new RegExp(`^pid ${report.pid} timed out after 3 s, killed by clip-mem`, 'm'));
  for (const p of report.processes) {
    t.regex(
      md,
      new RegExp(`^\\| ${p.pid} \\| .*\\| killed by clip-mem's --timeout \\| ${p.ending.evidence} \\|$`, 'm'),
    );
    t.true(page.includes(`<td>${p.pid}</td>`), `pid ${p.pid} in the HTML`);
  }
  t.regex(md, /^## Timeline$/m);
  t.is((page.match(/<polyline class="series-tree"/g) ?? []).length, 1);
  t.is((page.match(/<polyline class="series-process"/g) ?? []).length, report.processes.length);
  t.is((page.match(/<line class="failure"/g) ?? []).length, 3);
  t.notRegex(page, /<script/);
});

test('a Pool whose worker is OOM-killed hangs until --timeout: the worker OOM-killed, every other process killed by clip-mem', (t) => {
  requireProgram(t, python, 'apt-get install python3');
  const script = [
    'from multiprocessing import Pool',
    'def work(i):',
    "    if i == 1: b = b'\\1' * (400 << 20)",
    '    return i',
    'with Pool(4) as pool: print(pool.map(work, range(4)))',
  ].join('\n');
  const { status, report } = traceTree(['--limit-mem', '200M', '--timeout', '6'], [python, '-c', script]);
  t.is(status, 137);
  t.is(report.ending, 'timed out after 6 s, killed by clip-mem');
  t.true(report.processes.length >= 5, JSON.stringify(report.processes.map((p) => p.pid)));
  const oomKilled = report.processes.filter((p) => p.ending.by === 'kernel OOM killer');
  const others = report.processes.filter((p) => p.ending.by !== 'kernel OOM killer');
  if (report.kernelLog === undefined) {
    t.is(oomKilled.length, 1);
    t.not(oomKilled[0]!.pid, report.pid);
    t.is(oomKilled[0]!.ppid, report.pid);
    t.true(oomKilled[0]!.peaks.rss! > 150 * MiB, `RSS ${oomKilled[0]!.peaks.rss}`);
  }
  for (const p of others) t.is(p.ending.text, "killed by clip-mem's --timeout", `pid ${p.pid}: ${p.ending.text}`);
});

test("a DataLoader worker OOM-killed: its row names PyTorch's pid, killed by the kernel OOM killer in the run's cgroup", (t) => {
  const torch = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
  if (torch.status !== 0)
    return t.fail('this test needs PyTorch for /usr/bin/python3 (Debian: apt-get install python3-torch)');
  const script = [
    'import torch',
    'from torch.utils.data import DataLoader, Dataset, get_worker_info',
    'class Touching(Dataset):',
    '    def __len__(self): return 4',
    '    def __getitem__(self, i):',
    '        if get_worker_info().id == 1: bytearray(b"\\1" * (1 << 30))',
    '        return torch.zeros(1)',
    'for batch in DataLoader(Touching(), batch_size=1, num_workers=2): pass',
  ].join('\n');
  const { status, report, stderr } = traceTree(['--limit-mem', '600M'], [python, '-c', script]);
  t.is(status, 1);
  const named = /DataLoader worker \(pid (\d+)\) is killed by signal: Killed/.exec(stderr);
  t.truthy(named, stderr.slice(-3000));
  const worker = report.processes.find((p) => p.pid === Number(named![1]));
  t.truthy(worker, JSON.stringify(report.processes.map((p) => p.pid)));
  t.is(worker!.ppid, report.pid);
  t.is(report.processes.length, 3);
  if (report.kernelLog !== undefined) {
    t.log(`kernel log unreadable: ${report.kernelLog}; the kill is not attributed`);
    return;
  }
  t.is(worker!.ending.by, 'kernel OOM killer');
  t.is(worker!.ending.signal, 'SIGKILL');
  t.regex(worker!.ending.cgroup!, /clipmem-\d+-\d+$/);
  t.regex(worker!.ending.evidence, /kernel log$/);
  t.true(worker!.peaks.rss! > 300 * MiB, `worker RSS peak ${worker!.peaks.rss}`);
  t.regex(stderr, new RegExp(`pid ${worker!.pid} \\(parent ${report.pid}\\) .*OOM-killed by the kernel in cgroup`));
});

test('record directories of killed clip-mem runs are removed by the next trace; a live run keeps its own', (t) => {
  const tmp = scratchDir('clipmem-tree-tmp-');
  const gone = spawnSync('true').pid!; // exited: its pid names a dead creator
  const stale = path.join(tmp, `clipmem-record-${gone}-AbC123`);
  const retired = path.join(tmp, `clipmem-record-${gone}-XyZ789-done`);
  const live = path.join(tmp, `clipmem-record-${process.pid}-LiVe12`);
  for (const dir of [stale, retired, live]) {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, '1.0.rec'), Buffer.alloc(4096));
  }
  const { status, report } = traceTree([], ['true'], { TMPDIR: tmp });
  t.is(status, 0);
  t.true(report.tracked);
  t.false(fs.existsSync(stale));
  t.false(fs.existsSync(retired));
  t.true(fs.existsSync(live));
  t.deepEqual(fs.readdirSync(tmp), [path.basename(live)]); // and the run's own is gone too
});

test('300 short processes under --limit-mem 100M pass; their records cost the cgroup only the pages written, reported beside the peak', (t) => {
  const { status, stderr, report } = traceTree(
    ['--limit-mem', '100M'],
    ['sh', '-c', 'for i in $(seq 300); do /bin/true; done'],
  );
  t.is(status, 0, stderr);
  t.is(report.diagnosis.cause, 'none');
  t.true(report.tree.rssPeak! < 20 * MiB, `summed RSS ${report.tree.rssPeak}`);
  // A record file is 4.1 MiB; a /bin/true writes a few pages of it. Read-ahead on a write fault once brought
  // whole records into the page cache (the cgroup's peak hit 100 MiB for 3.6 MiB of RSS).
  const records = report.tree.recordsPageCache!;
  t.true(records > 0 && records <= 301 * 64 * 1024, `records' page cache ${records}`);
  t.true(report.cgroup!.peak! < report.tree.rssPeak! + records + 16 * MiB, `cgroup peak ${report.cgroup!.peak}`);
  // Each record reserves 4.1 MiB on disk while its process runs; once the process is gone what it never
  // wrote is given back, so 300 of them held ~1.2 GiB at once before, and now a few live ones and pages.
  t.true(report.tree.recordsDiskPeak! < 100 * MiB, `records' disk peak ${report.tree.recordsDiskPeak}`);
  t.regex(
    stderr,
    /the cgroup's own peak [\d.]+ [KM]iB; clip-mem's records: [\d.]+ [KM]iB of page cache, at most [\d.]+ [KM]iB of disk/,
  );
});
