// The heap counters: each thread counts into its own slot of the record without atomics (it is the only
// writer), and folds its slot into the shared heap_current every kFoldBytes. The fast path's pieces are
// here, inline (always_inline where they must be): moved out of line, every malloc would pay a call.
#pragma once
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/state.h"

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// Heap bytes a thread accumulates before folding them into the shared counter.
constexpr int64_t kFoldBytes = 1 << 20;

// A change of mapped (or GPU) bytes that calls for a sample sooner than the 10 ms pace.
constexpr int64_t kSampleChangeBytes = 64 << 20;

// When the last sample was taken (counters.cc): initialize() starts the clock.
extern uint64_t last_sample_ns;

int64_t mapped_total();
// Appends a sample to the timeline ring (reads /proc/self/statm).
void take_sample(uint64_t now);
// Called after counters changed by a fold or a mapping: a sample every 10 ms of activity, or sooner after
// a change of 64 MiB, never closer than 1 ms.
void maybe_sample();
// Moves a slot's heap_delta into the shared heap_current (and its peak).
void fold(ClipmemThreadSlot* slot);
// An own slot's heap_delta passed its grow_limit: a new peak, or time to fold.
__attribute__((noinline)) void heap_grew(ClipmemThreadSlot* slot, int64_t delta);

inline ClipmemThreadSlot* shared_slot() { return &slots[CLIPMEM_THREAD_SLOTS - 1]; }

// The heap_delta above which an own slot's next allocation may set a new peak (or must fold): the room
// between the peak and the folded heap, at most the fold size. Other threads' folds make it stale,
// which costs at most one extra check or misses less than their unfolded bytes (the documented bound).
inline int64_t grow_limit_now(int64_t delta) {
  int64_t room = load(record->heap_peak) - load(record->heap_current);
  if (room < delta) room = delta;
  return room < kFoldBytes ? room : kFoldBytes;
}

__attribute__((always_inline)) inline ClipmemThreadSlot* my_slot() {
  ClipmemThreadSlot* slot = tls.slot;
  if (LIKELY(slot)) return slot;
  uint32_t index = __atomic_fetch_add(&record->slots_used, 1u, __ATOMIC_RELAXED);
  if (index >= CLIPMEM_THREAD_SLOTS - 1) {
    store(record->slots_used, uint32_t(CLIPMEM_THREAD_SLOTS));
    slot = shared_slot();
  } else {
    slot = &slots[index];
    store(slot->tid, int32_t(syscall(SYS_gettid)));
    store(slot->grow_limit, grow_limit_now(0));
  }
  tls.slot = slot;
  refresh_fast();
  return slot;
}

inline void bump(uint64_t& counter, ClipmemThreadSlot* slot) {
  if (UNLIKELY(slot == shared_slot()))
    add(counter, uint64_t(1));
  else
    store(counter, load(counter) + 1);
}

// The fast path counts into this thread's own slot, of which it is the only writer: no lock prefix.
// An increment is one add to memory, written as asm because relaxed atomics compile to a load, an add
// and a store; its store is one aligned 8-byte write, which a reader never sees torn.
__attribute__((always_inline)) inline void bump_own(uint64_t& counter) {
#if defined(__x86_64__)
  asm volatile("addq $1, %0" : "+m"(counter));
#else
  store(counter, load(counter) + 1);
#endif
}
__attribute__((always_inline)) inline void count_fast(ClipmemThreadSlot* slot, int fn, uint64_t requested) {
  bump_own(slot->calls[fn]);
  bump_own(slot->histogram[uint64_t(clipmem_histogram_bucket(requested))]);
}
// An allocation only compares the new delta with the slot's grow_limit; a free only checks the fold.
__attribute__((always_inline)) inline bool grows_past_limit(ClipmemThreadSlot* slot, int64_t bytes, int64_t* delta) {
  *delta = load(slot->heap_delta) + bytes;
  store(slot->heap_delta, *delta);
  return UNLIKELY(*delta > slot->grow_limit);  // only this thread reads or writes it: a plain load
}
__attribute__((always_inline)) inline bool shrinks_past_fold(ClipmemThreadSlot* slot, int64_t bytes) {
  int64_t delta = load(slot->heap_delta) - bytes;
  store(slot->heap_delta, delta);
  return UNLIKELY(delta < -kFoldBytes);
}

__attribute__((always_inline)) inline void count_heap(int fn, size_t requested, int64_t bytes) {
  ClipmemThreadSlot* slot = my_slot();
  bump(slot->calls[fn], slot);
  if (fn != CLIPMEM_FN_FREE) bump(slot->histogram[clipmem_histogram_bucket(requested)], slot);
  int64_t delta;
  if (UNLIKELY(slot == shared_slot()))
    delta = add(slot->heap_delta, bytes);
  else {
    delta = load(slot->heap_delta) + bytes;
    store(slot->heap_delta, delta);
  }
  if (UNLIKELY(delta > kFoldBytes || delta < -kFoldBytes))
    fold(slot);
  else if (bytes > 0) {
    int64_t current = load(record->heap_current) + delta;
    if (UNLIKELY(current > load(record->heap_peak))) raise_peak(record->heap_peak, current);
  }
}

inline void count_call(int fn) {
  ClipmemThreadSlot* slot = my_slot();
  bump(slot->calls[fn], slot);
}

// glibc's usable size read straight from the chunk header (what malloc_usable_size computes, without the
// call): the size field before the block, low bits are flags; mmapped chunks carry one more word of header.
// Used only when start-up checks proved the allocator is glibc's and the two agree (glibc_chunks).
inline size_t chunk_usable(void* ptr) {
  size_t header = static_cast<size_t*>(ptr)[-1];
  return (header & ~size_t(7)) - ((header & kChunkMmapped) ? 16 : 8);
}

__attribute__((always_inline)) inline size_t usable(void* ptr) {
  if (!ptr) return 0;
  return LIKELY(glibc_chunks) ? chunk_usable(ptr) : malloc_usable_size(ptr);
}

// The size glibc's allocation fast path adds for a block: its chunk size less the 8-byte header word;
// the caller has sent mmapped chunks (and bootstrap blocks, which read as mmapped) elsewhere.
inline int64_t heap_chunk_usable(size_t header) { return int64_t(header & ~size_t(7)) - 8; }

}  // namespace clipmem

#pragma GCC visibility pop
