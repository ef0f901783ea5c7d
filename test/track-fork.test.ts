// Refusals of new processes and threads on real processes: a fork is recorded with what the child must
// commit, a pids cgroup's refusal is named as a task limit (not memory), and a refusal for lack of memory
// that no limit clip-mem reads explains is `unknown`, never `not-memory`.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TraceReport } from '../src/report/trace-report';
import { allocProgram, trace } from './helpers/trace';
import { repoRoot } from './helpers/paths';
import { schemaErrors } from './helpers/schema';
import { scratchDir } from './helpers/scratch';

const bin = path.join(repoRoot, 'bin', 'clip-mem.js');
const python = '/usr/bin/python3';
const pidsMount = '/sys/fs/cgroup/pids';

test('a fork is counted, and a refused one is recorded with the bytes the child must commit (VmData + VmStk)', (t) => {
  const forked = trace([], [allocProgram, 'fork', String(64 << 20)]);
  t.is(forked.status, 0, forked.stderr);
  t.is(forked.report.calls!.fork, 1);
  t.deepEqual(forked.report.failures, []);

  const refused = trace(['--fail', 'fork:nth=1'], [allocProgram, 'fork', String(64 << 20)]);
  t.is(refused.status, 1);
  const commits = Number(/^fork commits (\d+)$/m.exec(refused.stdout)![1]);
  t.true(commits > 64 << 20);
  const failure = refused.report.failures[0]!;
  t.deepEqual(
    [failure.fn, failure.size, failure.errno, failure.injected],
    ['fork', commits, 12, true],
    'the size is the figure the program read from /proc/self/status just before the fork',
  );
  t.is(refused.report.calls!.fork, 1);
  t.is(refused.report.diagnosis.cause, 'not-memory', 'an injected refusal is never blamed on a limit');
});

// With no huge page reserved, MAP_HUGETLB is refused with ENOMEM while ordinary memory is plentiful.
const hugePagesFree =
  Number(/^HugePages_Free:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) > 0 ||
  Number(fs.readFileSync('/proc/sys/vm/nr_overcommit_hugepages', 'utf8')) > 0;
(hugePagesFree ? test.skip : test)(
  'a MAP_HUGETLB mapping refused with ENOMEM, which no limit clip-mem reads explains: unknown, with what is missing',
  (t) => {
    const { status, report } = trace([], [allocProgram, 'hugetlb']);
    t.is(status, 1);
    t.deepEqual([report.failures[0]!.fn, report.failures[0]!.errno], ['mmap', 12]);
    t.is(report.diagnosis.cause, 'unknown');
    t.deepEqual(report.diagnosis.evidence.slice(0, 2), [
      'exited with code 1; why is not known: an allocation was refused as if memory ran out, and no limit clip-mem reads explains it',
      'mmap of an anonymous mapping, 2097152 bytes (2.0 MiB) failed with ENOMEM',
    ]);
    t.true(report.diagnosis.evidence.some((line) => line.startsWith('MAP_HUGETLB takes its pages from')));
    t.true(report.diagnosis.evidence.some((line) => line.startsWith('missing: what refused it: ')));
  },
);

/** A pids cgroup of its own with room for clip-mem's node and `limit` more tasks, removed after the test. */
function pidsGroup(name: string): { directory: string; remove: () => void } {
  const directory = path.join(pidsMount, `clipmem-test-${name}-${process.pid}`);
  fs.mkdirSync(directory);
  return {
    directory,
    remove: () => {
      for (let attempt = 0; attempt < 50; attempt++) {
        try {
          fs.rmdirSync(directory);
          return;
        } catch {
          spawnSync('sleep', ['0.1']);
        }
      }
    },
  };
}

/** `clip-mem trace` run inside the group, as in a container or a Slurm job with a pids limit. */
function traceInGroup(
  directory: string,
  limit: number,
  script: string,
): { status: number | null; report: TraceReport } {
  fs.writeFileSync(path.join(directory, 'pids.max'), String(limit));
  const json = path.join(scratchDir('clipmem-fork-'), 'trace.json');
  const enter = `echo $$ > ${directory}/cgroup.procs && exec "$@"`;
  const result = spawnSync(
    'sh',
    ['-c', enter, 'sh', process.execPath, bin, 'trace', '--json', json, '--', python, '-c', script],
    { cwd: repoRoot, encoding: 'utf8', timeout: 120000 },
  );
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as TraceReport;
  const errors = schemaErrors('trace', report);
  if (errors) throw new Error(`trace --json breaks schema/trace.schema.json: ${errors}`);
  return { status: result.status, report };
}

const pidsWritable = (() => {
  try {
    fs.accessSync(pidsMount, fs.constants.W_OK);
    return fs.existsSync(path.join(pidsMount, 'cgroup.procs'));
  } catch {
    return false;
  }
})();

(pidsWritable ? test : test.skip)(
  "a pids cgroup's limit refusing forks and threads: not-memory, naming the group and its limit",
  (t) => {
    // One group per run: the first run's children outlive it for a while, and would count in the second's.
    const group = pidsGroup('forks');
    t.teardown(group.remove);
    const groupPath = `/${path.basename(group.directory)}`;
    const limitText = `the pids cgroup ${groupPath} refused 1 new process(es) or thread(s) during the run (pids.events), at the limit of 60 tasks (pids.max)`;

    const forks = traceInGroup(
      group.directory,
      60,
      'import os, time\nfor i in range(200):\n    if os.fork() == 0:\n        time.sleep(2); os._exit(0)',
    );
    t.is(forks.status, 1);
    const fork = forks.report.failures.find((f) => f.fn === 'fork')!;
    t.is(fork.errno, 11);
    t.is(forks.report.diagnosis.cause, 'not-memory', forks.report.diagnosis.evidence.join('\n'));
    t.true(forks.report.diagnosis.evidence.includes(limitText), forks.report.diagnosis.evidence.join('\n'));

    const threadGroup = pidsGroup('threads');
    t.teardown(threadGroup.remove);
    const threads = traceInGroup(
      threadGroup.directory,
      60,
      'import threading, time\nfor i in range(200):\n    threading.Thread(target=time.sleep, args=(2,), daemon=True).start()',
    );
    t.is(threads.status, 1);
    t.is(threads.report.failures[0]!.fn, 'pthread_create');
    t.is(threads.report.diagnosis.cause, 'not-memory', threads.report.diagnosis.evidence.join('\n'));
    t.regex(
      threads.report.diagnosis.evidence[0]!,
      /^pthread_create of a thread with a .* stack failed with EAGAIN: the pids cgroup .* refused 1 new process\(es\) or thread\(s\) during the run \(pids\.events\), at the limit of 60 tasks \(pids\.max\); a limit on processes and threads, not memory$/,
    );
  },
);
