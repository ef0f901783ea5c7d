// munmap of the middle or the tail of a tracked mapping subtracts exactly those bytes (V8 trims its
// reservations this way); a range over holes counts only the holes as unknown. mprotect moves bytes between
// reserved (PROT_NONE) and anonymous (V8 commits pages of its reservations this way), or file for a file
// mapping that was PROT_NONE.
import test from 'ava';
import { byPhase, traceProgram } from './helpers/trace';
import { scratchDir } from './helpers/scratch';

const KiB = 1024;

test('munmap of the middle, the tail, the whole of a 1 MiB mapping subtracts exactly the unmapped bytes; mprotect moves bytes between reserved and anonymous or file', (t) => {
  const dir = scratchDir('clipmem-munmap-');
  const { stdout, stderr, status, record } = traceProgram(['unmap-parts'], dir);
  t.is(status, 0, stderr);
  t.regex(stdout, /^munmap ok$/m);
  t.is(record.calls.munmap, 5);
  t.is(record.calls.mprotect, 3);
  t.deepEqual(byPhase(record), {
    start: { anon: 0, file: 0, reserved: 0 },
    mapped: { anon: 1024 * KiB, file: 0, reserved: 0 },
    'middle unmapped': { anon: 768 * KiB, file: 0, reserved: 0 },
    'tail unmapped': { anon: 512 * KiB, file: 0, reserved: 0 },
    'all unmapped': { anon: 0, file: 0, reserved: 0 },
    reserved: { anon: 0, file: 0, reserved: 1024 * KiB },
    committed: { anon: 256 * KiB, file: 0, reserved: 768 * KiB },
    decommitted: { anon: 128 * KiB, file: 0, reserved: 896 * KiB },
    'reservation unmapped': { anon: 0, file: 0, reserved: 0 },
    'file reserved': { anon: 0, file: 0, reserved: 16 * KiB },
    'file readable': { anon: 0, file: 16 * KiB, reserved: 0 },
    'file unmapped': { anon: 0, file: 0, reserved: 0 },
  });
  // The last munmap covered the two 256 KiB holes left by the first two: only those are unknown.
  t.is(record.counters.unmappedUnknown, 512 * KiB);
  t.is(record.counters.anonPeak - record.phases[0]!.anon, 1024 * KiB);
  t.is(record.counters.reservedPeak, 1024 * KiB);
});
