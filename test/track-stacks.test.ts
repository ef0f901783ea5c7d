// Stacks a user can act on (`clip-mem trace`): native names that are true on a stripped library, and
// Python frames of the failing thread.
import test from 'ava';
import * as path from 'node:path';
import { allocProgram, trace } from './helpers/trace';
import { repoRoot } from './helpers/paths';
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
