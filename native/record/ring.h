// The seqlock of the record's rings (failures, timeline samples, phase markers): the writer side used by the
// tracker (native/preload/counters.cc, failure.cc, lifecycle.cc), the reader side by the addon
// (native/addon/record.cc), one protocol. An entry's `sequence` reads 0 while it is (re)written, then the 1-based
// number it was claimed with; a reader copies the entry and keeps the copy only if the sequence read the same before
// and after. Limit: two writers a whole ring apart (one stalled while `capacity` others are written) can interleave on
// one entry; the rings are sized so that this takes thousands of entries written during one stall.
#pragma once
#include <stdint.h>
#include <string.h>

namespace clipmem {

// Claims the next entry of a ring whose entries-ever count is *total; *sequence gets its 1-based number.
template <class Entry>
Entry* claim_ring_entry(uint64_t* total, Entry* ring, uint64_t capacity, uint64_t* sequence) {
  *sequence = __atomic_add_fetch(total, uint64_t(1), __ATOMIC_RELAXED);
  Entry* entry = &ring[(*sequence - 1) % capacity];
  __atomic_store_n(&entry->sequence, uint64_t(0), __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);  // the 0 is visible before any field changes
  return entry;
}

template <class Entry>
void publish_ring_entry(Entry* entry, uint64_t sequence) {
  __atomic_store_n(&entry->sequence, sequence, __ATOMIC_RELEASE);
}

// Copies entry number `sequence` out of `shared`; false if it is being written or was rewritten meanwhile.
template <class Entry>
bool read_ring_entry(const Entry& shared, uint64_t sequence, Entry* copy) {
  if (__atomic_load_n(&shared.sequence, __ATOMIC_ACQUIRE) != sequence) return false;
  memcpy(static_cast<void*>(copy), &shared, sizeof(Entry));
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&shared.sequence, __ATOMIC_RELAXED) == sequence;
}

// Calls visit(copy, sequence) for each published entry among the latest `capacity` of `total`, in order.
template <class Entry, class Visit>
void for_each_ring_entry(const Entry* ring, uint64_t capacity, uint64_t total, Visit visit) {
  uint64_t first = total > capacity ? total - capacity + 1 : 1;
  for (uint64_t sequence = first; sequence <= total; ++sequence) {
    Entry copy;
    if (read_ring_entry(ring[(sequence - 1) % capacity], sequence, &copy)) visit(copy, sequence);
  }
}

}  // namespace clipmem
