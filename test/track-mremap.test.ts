// mremap, counted to the byte: MREMAP_DONTUNMAP moves the pages but leaves the old range mapped; a range that
// starts inside a mapping leaves its head and tail tracked with their kind; growing and shrinking in place.
import test from 'ava';
import { byPhase, traceProgram } from './helpers/trace';
import { scratchDir } from './helpers/scratch';

const KiB = 1024;

test('a 1 MiB mapping moved with MREMAP_DONTUNMAP leaves 2 MiB mapped, and the tracker counts 2 MiB', (t) => {
  const { status, stdout, stderr, record } = traceProgram(['dontunmap'], scratchDir('clipmem-mremap-'));
  t.is(status, 0, stderr);
  t.regex(stdout, /^mremap ok$/m);
  t.is(record.calls.mremap, 1);
  t.is(record.counters.anonMapped, 2 * 2 ** 20);
  t.is(record.counters.unmappedUnknown, 0);
});

test('mremap of ranges inside mappings: heads and tails stay tracked, moved bytes keep their kind, in-place resizes are exact', (t) => {
  const { status, stdout, stderr, record } = traceProgram(['remap-parts'], scratchDir('clipmem-mremap-'));
  t.is(status, 0, stderr);
  t.regex(stdout, /^mremap ok$/m);
  t.is(record.calls.mremap, 4);
  t.deepEqual(byPhase(record), {
    start: { anon: 0, file: 0, reserved: 0 },
    mapped: { anon: 1024 * KiB, file: 0, reserved: 0 },
    // [768 KiB, 1 MiB) grew to 768 KiB where it was.
    'tail grown in place': { anon: 1536 * KiB, file: 0, reserved: 0 },
    'destination reserved': { anon: 1536 * KiB, file: 0, reserved: 1024 * KiB },
    // [256, 512) KiB left the region (head and tail stay) and landed, grown to 512 KiB, over reserved bytes.
    'middle moved': { anon: 1792 * KiB, file: 0, reserved: 512 * KiB },
    'moved shrunk in place': { anon: 1408 * KiB, file: 0, reserved: 512 * KiB },
    // 256 KiB copied out of the grown tail; the old range stays mapped.
    'part copied with DONTUNMAP': { anon: 1664 * KiB, file: 0, reserved: 512 * KiB },
    'all unmapped': { anon: 0, file: 0, reserved: 0 },
  });
  // The final munmaps covered the hole the move left (256 KiB) and the shrink left (384 KiB): only those are unknown.
  t.is(record.counters.unmappedUnknown, 640 * KiB);
  t.is(record.counters.anonPeak - record.phases[0]!.anon, 2048 * KiB);
  t.is(record.counters.reservedPeak, 1024 * KiB);
  // Every sample the process wrote is read back, whole, in order (the timeline ring did not wrap).
  t.deepEqual(
    record.timeline.map((s) => s.sequence),
    Array.from({ length: record.samplesTotal }, (_, i) => i + 1),
  );
});
