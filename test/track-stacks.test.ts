// Stacks a user can act on (`clip-mem trace`): native names that are true on a stripped library, and
// Python frames of the failing thread.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { allocProgram, trace } from './helpers/trace';
import { fixtures, repoRoot } from './helpers/paths';
import { findProgram, torchPython } from './helpers/require-program';
import { elideTemplates } from '../src/track/symbolize';

const strippedLibrary = path.join(repoRoot, 'build', 'test-programs', 'libclipmem_stripped.so');

test('stripped library: the static function between two exported ones is not named after either', (t) => {
  const { report } = trace(['--limit-as', '64M'], [allocProgram, 'stripped', strippedLibrary, String(256 << 20)]);
  const failure = report.failures.find((f) => f.fn === 'malloc' && f.size === 256 << 20);
  t.truthy(failure, JSON.stringify(report.failures.map((f) => [f.fn, f.size])));
  const stack = failure!.stack;
  // Innermost first: the static middle function, then the exported ones that called it.
  t.regex(stack[0]!, /^\/.*libclipmem_stripped\.so\+0x[0-9a-f]+$/, stack.join('\n'));
  t.regex(stack[1]!, /^stripped_first \(.*libclipmem_stripped\.so\+0x[0-9a-f]+\)$/);
  t.regex(stack[2]!, /^stripped_last \(.*libclipmem_stripped\.so\+0x[0-9a-f]+\)$/);
});

test('C++ names in the terminal: template arguments elided, operators kept', (t) => {
  t.is(
    elideTemplates(
      'std::__detail::_Map_base<int, std::pair<int const, long>, true>::operator[](int const&) (libc10.so+0x10)',
    ),
    'std::__detail::_Map_base<…>::operator[](int const&) (libc10.so+0x10)',
  );
  t.is(
    elideTemplates(
      'std::basic_ostream<char>& std::operator<< <std::char_traits<char> >(std::basic_ostream<char>&, char const*)',
    ),
    'std::basic_ostream<…>& std::operator<< <…>(std::basic_ostream<…>&, char const*)',
  );
  t.is(elideTemplates('c10::alloc_cpu(unsigned long)'), 'c10::alloc_cpu(unsigned long)');
});

test('identical stacks counted once: the first and the largest shown in full', (t) => {
  const { report, stderr } = trace(['--limit-as', '64M'], [allocProgram, 'repeat']);
  const base = 256 * 2 ** 20;
  t.deepEqual(
    report.failures.map((f) => f.size),
    [base + 1, base + 3, base + 2, base + 4],
  );
  t.deepEqual(report.failureGroups, [
    { fn: 'malloc', count: 3, first: 0, largest: 1 },
    { fn: 'malloc', count: 1, first: 3, largest: 3 },
  ]);
  t.regex(
    stderr,
    /#1 malloc of 268435457 bytes .*\n(.*\n)*? {6}2 more failure\(s\) with this stack; the largest:\n {2}#2 malloc of 268435459 bytes .*\n(.*\n)*? {6}at the same stack as #1\n {2}#4 malloc of 268435460 bytes/,
  );
  t.notRegex(stderr, /#3 malloc/);
});

test('trace --model vit-b-32: the seed-sized failure is named as the token embedding', (t) => {
  const { report, stderr } = trace(
    ['--limit-as', '64M', '--model', 'vit-b-32'],
    [allocProgram, 'stripped', strippedLibrary, '101187584'],
  );
  const failure = report.failures.find((f) => f.size === 101187584)!;
  t.deepEqual(failure.tensors, [
    { name: 'text_model.embeddings.token_embedding.weight', shape: [49408, 512], storage: 'fp32' },
  ]);
  t.regex(stderr, /the size of text_model\.embeddings\.token_embedding\.weight \[49408, 512\] in fp32/);
});

const twoCallsDeep = path.join(fixtures, 'python', 'two_calls_deep.py');

/** The Python stack of the 1 GiB bytearray that fails in two_calls_deep.py, as trace --json reports it. */
function twoCallsDeepStack(python: string) {
  const { report } = trace(['--limit-as', '300M'], [python, twoCallsDeep]);
  const failure = report.failures.find((f) => f.size >= 2 ** 30);
  return { failure, report };
}

// Every CPython this machine has, besides python3 on PATH: pyenv's 3.8 to 3.13 where installed.
const pyenvRoot = process.env.PYENV_ROOT ?? path.join(os.homedir(), '.pyenv');
const pythons = [
  'python3',
  '/usr/bin/python3',
  ...(fs.existsSync(path.join(pyenvRoot, 'versions'))
    ? fs
        .readdirSync(path.join(pyenvRoot, 'versions'))
        .filter((v) => /^3\.(8|9|1[0-3])\.\d+$/.test(v))
        .map((v) => path.join(pyenvRoot, 'versions', v, 'bin', 'python3'))
    : []),
].filter((python, i, all) => {
  const found = findProgram(python);
  // python3 on PATH is often /usr/bin/python3 itself: each interpreter once.
  return (
    found &&
    all.findIndex((other) => findProgram(other) && fs.realpathSync(findProgram(other)!) === fs.realpathSync(found)) ===
      i
  );
});

for (const python of pythons) {
  test(`${python}: the Python frames of a failure two calls deep, with their lines`, (t) => {
    const { failure, report } = twoCallsDeepStack(python);
    t.truthy(failure, JSON.stringify(report.failures.map((f) => [f.fn, f.size])));
    t.like(failure!.python, { status: 'captured', omitted: 0, omittedAfter: null });
    t.deepEqual(failure!.python!.frames, [
      { file: twoCallsDeep, line: 3, function: 'inner' },
      { file: twoCallsDeep, line: 7, function: 'outer' },
      { file: twoCallsDeep, line: 11, function: '<module>' },
    ]);
    t.log(`Python ${failure!.python!.version}`);
  });
}

test('a program that is neither Python nor Node has no Python or JavaScript stack', (t) => {
  const { report } = trace(['--limit-as', '64M'], [allocProgram, 'repeat']);
  t.true(report.failures.length > 0);
  t.true(report.failures.every((f) => f.python === null && f.javascript === null));
});

const typedArrayProgram = path.join(fixtures, 'javascript', 'typed_array.js');

test("a Node program's 2 GiB typed array under --limit-as: the JavaScript frames Node printed, with their lines, said to come from there", (t) => {
  const { status, report, stderr } = trace(['--limit-as', '2000000000'], [process.execPath, typedArrayProgram]);
  t.is(status, 1);
  const failures = report.failures.filter((f) => f.size === 2 ** 31);
  t.true(failures.length > 0, JSON.stringify(report.failures.map((f) => [f.fn, f.size])));
  for (const f of failures) {
    t.is(f.javascript!.note, 'from the RangeError Node printed on stderr for this failure, not read at the allocation');
    t.deepEqual(f.javascript!.frames.slice(0, 2), [
      { function: 'makeTable', file: typedArrayProgram, line: 5, column: 10 },
      { function: 'main', file: typedArrayProgram, line: 16, column: 17 },
    ]);
  }
  t.regex(stderr, new RegExp(`at makeTable \\(${typedArrayProgram}:5:10\\) \\[JavaScript\\]`));
});

test('a Node program that catches the RangeError: no JavaScript frames, and it says why', (t) => {
  const { status, report } = trace(['--limit-as', '2000000000'], [process.execPath, typedArrayProgram, 'catch']);
  t.is(status, 3);
  const failures = report.failures.filter((f) => f.size === 2 ** 31);
  t.true(failures.length > 0);
  for (const f of failures)
    t.deepEqual(f.javascript, {
      frames: [],
      note: 'not available: Node printed no RangeError stack for it (the program caught the error)',
    });
  t.true(report.failures.every((f) => f.python === null));
});

test("PyTorch's torch.nn.Embedding(49408, 512) under a tight --limit-as: the script's line and torch's sparse.py", (t) => {
  const python = torchPython(t);
  const script = path.join(fixtures, 'python', 'torch_embedding.py');
  // The limit: what importing torch takes here, plus 48 MiB (less than the 97 MiB the embedding asks for).
  const probe = spawnSync(python, ['-c', "import torch; print(open('/proc/self/statm').read().split()[0])"], {
    encoding: 'utf8',
  });
  const limit = Number(probe.stdout.trim()) * 4096 + 48 * 2 ** 20;
  const { report, stderr } = trace(['--limit-as', String(limit)], [python, script]);
  const failure = report.failures.find((f) => f.size === 101187584);
  t.truthy(failure, JSON.stringify(report.failures.map((f) => [f.fn, f.size])));
  const frames = failure!.python!.frames;
  t.like(frames[0], { function: 'Embedding.__init__' });
  t.regex(frames[0]!.file, /\/torch\/nn\/modules\/sparse\.py$/);
  t.deepEqual(frames.slice(1), [
    { file: script, line: 7, function: 'build' },
    { file: script, line: 11, function: '<module>' },
  ]);
  // Python frames first, then the native ones under them.
  t.regex(
    stderr,
    new RegExp(
      `at Embedding\\.__init__ \\(.*sparse\\.py:\\d+\\) \\[Python\\]\\n.*at build \\(${script}:7\\) \\[Python\\]`,
    ),
  );
});

test('a Python stack deeper than the record keeps: the innermost 16 and the outermost 8 frames, the rest counted', (t) => {
  const script = path.join(fixtures, 'python', 'deep_recursion.py');
  const { report, stderr } = trace(['--limit-as', '300M'], ['python3', script]);
  const python = report.failures.find((f) => f.size >= 2 ** 30)!.python!;
  const down = (line: number) => ({ file: script, line, function: 'down' });
  t.deepEqual(python.frames, [
    down(5),
    ...Array.from({ length: 15 }, () => down(6)),
    ...Array.from({ length: 7 }, () => down(6)),
    { file: script, line: 10, function: '<module>' },
  ]);
  t.is(python.omitted, 41 + 1 - 24);
  t.is(python.omittedAfter, 16);
  t.regex(stderr, /deep_recursion\.py:6\) \[Python\]\n {6}\.\.\. 18 Python frame\(s\) left out\n {6}at down \(/);
});
