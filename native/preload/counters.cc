// The heap counters' slow parts: folding a thread's slot, peaks, and the timeline samples.
#include "preload/counters.h"

#include "preload/proc.h"
#include "record/ring.h"

namespace clipmem {

namespace {
constexpr uint64_t kSampleIntervalNs = 10 * 1000 * 1000;
constexpr uint64_t kMinSampleGapNs = 1000 * 1000;
int64_t last_sample_total = 0;
}  // namespace
uint64_t last_sample_ns = 0;

int64_t mapped_total() { return load(record->heap_current) + load(record->anon_mapped) + load(record->file_mapped); }

void take_sample(uint64_t now) {
  uint64_t sequence;
  ClipmemSample* sample = claim_ring_entry(&record->samples_total, timeline, CLIPMEM_TIMELINE_CAPACITY, &sequence);
  sample->time_ns = now;
  sample->heap_current = load(record->heap_current);
  sample->anon_mapped = load(record->anon_mapped);
  sample->file_mapped = load(record->file_mapped);
  sample->reserved_mapped = load(record->reserved_mapped);
  read_statm(&sample->vm_size, &sample->rss);
  sample->phase_index = load(record->current_phase);
  int64_t device_live = 0;
  for (int i = 0; i < CLIPMEM_DEVICE_CAPACITY; ++i) device_live += load(devices[i].live);
  sample->device_live = device_live;
  publish_ring_entry(sample, sequence);
  raise_peak(record->vm_peak, sample->vm_size);
  raise_peak(record->rss_peak, sample->rss);
}

void maybe_sample() {
  uint64_t now = now_ns();
  uint64_t last = load(last_sample_ns);
  int64_t total = mapped_total();
  int64_t change = total - load(last_sample_total);
  if (change < 0) change = -change;
  if (now - last < kMinSampleGapNs) return;
  if (now - last < kSampleIntervalNs && change < kSampleChangeBytes) return;
  if (!__atomic_compare_exchange_n(&last_sample_ns, &last, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  store(last_sample_total, total);
  Guard g;
  ErrnoKeeper keep;
  take_sample(now);
}

void fold(ClipmemThreadSlot* slot) {
  int64_t delta = slot == shared_slot() ? __atomic_exchange_n(&slot->heap_delta, int64_t(0), __ATOMIC_RELAXED)
                                        : load(slot->heap_delta);
  if (slot != shared_slot()) store(slot->heap_delta, int64_t(0));
  int64_t current = add(record->heap_current, delta);
  raise_peak(record->heap_peak, current);
  if (slot != shared_slot()) reset_countdowns(slot);
  maybe_sample();
}

__attribute__((noinline)) void heap_grew(ClipmemThreadSlot* slot) {
  int64_t delta = load(slot->heap_delta);
  if (delta > kFoldBytes) return fold(slot);
  raise_peak(record->heap_peak, load(record->heap_current) + delta);
  reset_countdowns(slot);
}

__attribute__((noinline)) void heap_shrank(ClipmemThreadSlot* slot) {
  if (load(slot->heap_delta) < -kFoldBytes) return fold(slot);
  reset_countdowns(slot);
}

}  // namespace clipmem
