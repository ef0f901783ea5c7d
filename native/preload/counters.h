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
// An own slot's grow_left ran out: a new peak, or time to fold.
__attribute__((noinline)) void heap_grew(ClipmemThreadSlot* slot);
// An own slot's shrink_left ran out: time to fold, or to count down again.
__attribute__((noinline)) void heap_shrank(ClipmemThreadSlot* slot);

inline ClipmemThreadSlot* shared_slot() { return &slots[CLIPMEM_THREAD_SLOTS - 1]; }

// The heap_delta above which an own slot's next allocation may set a new peak (or must fold): the room
// between the peak and the folded heap, at most the fold size. Other threads' folds make it stale,
// which costs at most one extra check or misses less than their unfolded bytes (the documented bound).
inline int64_t grow_limit_now(int64_t delta) {
  int64_t room = load(record->heap_peak) - load(record->heap_current);
  if (room < delta) room = delta;
  return room < kFoldBytes ? room : kFoldBytes;
}

// An own slot's two countdowns, so that the fast paths test a sign instead of comparing with a limit:
//   grow_left   = grow_limit_now(delta) - heap_delta, exactly: allocations count it down, frees up (a free
//                 that did not credit it would leave an allocation churning at the peak on the slow path);
//   shrink_left <= heap_delta + kFoldBytes: frees count it down; the fast allocations leave it alone, so
//                 it may run out early, which costs one check (heap_shrank) per MiB freed, never a miss.
inline void reset_countdowns(ClipmemThreadSlot* slot) {
  int64_t delta = load(slot->heap_delta);
  slot->grow_left = grow_limit_now(delta) - delta;
  slot->shrink_left = delta + kFoldBytes;
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
    reset_countdowns(slot);
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
template <typename T>
__attribute__((always_inline)) inline void add_own(T& counter, T value) {
#if defined(__x86_64__)
  asm volatile("addq %1, %0" : "+m"(counter) : "er"(value));
#else
  store(counter, load(counter) + value);
#endif
}
__attribute__((always_inline)) inline void bump_own(uint64_t& counter) { add_own(counter, uint64_t(1)); }
template <typename T>
__attribute__((always_inline)) inline void subtract_own(T& counter, T value) {
#if defined(__x86_64__)
  asm volatile("subq %1, %0" : "+m"(counter) : "er"(value));
#else
  store(counter, load(counter) - value);
#endif
}

// A countdown of the writer's own bookkeeping (no reader): true when it ran out. One subtraction from
// memory and a sign test.
__attribute__((always_inline)) inline bool counts_down(int64_t& left, int64_t bytes) {
  left -= bytes;
  return UNLIKELY(left < 0);
}

// A request of 1 byte to 2 GiB, the common case, takes clipmem_histogram_bucket's value without its
// clamps (the same bucket: 2 GiB is far below the last bucket's bound); 0 bytes and larger requests go
// the long way, out of the fast path's straight line.
__attribute__((always_inline)) inline uint64_t histogram_bucket_fast(uint64_t requested) {
  uint64_t n = requested - 1;
  if (UNLIKELY(n >= 0x7fffffff)) return clipmem_histogram_bucket(requested);
#if defined(__x86_64__)
  uint64_t bucket;  // bsr: the highest set bit, already 64-bit (63 - clz would be widened from int)
  asm("bsrq %1, %0" : "=r"(bucket) : "r"(2 * n + 1));
  return bucket;
#else
  return uint64_t(63 - __builtin_clzll(2 * n + 1));
#endif
}
__attribute__((always_inline)) inline void count_fast(ClipmemThreadSlot* slot, int fn, uint64_t requested) {
  bump_own(slot->calls[fn]);
#if defined(__x86_64__)
  // histogram[bucket] += 1 with the array's offset in the instruction (through "+m" on one element, the
  // compiler adds the offset to the index first: one instruction more per allocation)
  asm volatile("addq $1, %c2(%1,%3,8)"
               : "+m"(slot->histogram)
               : "r"(slot), "i"(offsetof(ClipmemThreadSlot, histogram)), "r"(histogram_bucket_fast(requested)));
#else
  bump_own(slot->histogram[histogram_bucket_fast(requested)]);
#endif
}

// An own slot's heap changed by `bytes` off the fast paths: the delta, both countdowns exactly, and
// whichever ran out.
inline void change_own_heap(ClipmemThreadSlot* slot, int64_t bytes) {
  add_own(slot->heap_delta, bytes);
  slot->shrink_left += bytes;
  if (counts_down(slot->grow_left, bytes))
    heap_grew(slot);
  else if (UNLIKELY(slot->shrink_left < 0))
    heap_shrank(slot);
}

__attribute__((always_inline)) inline void count_heap(int fn, size_t requested, int64_t bytes) {
  ClipmemThreadSlot* slot = my_slot();
  if (LIKELY(slot != shared_slot())) {
    bump_own(slot->calls[fn]);
    if (fn != CLIPMEM_FN_FREE) bump_own(slot->histogram[clipmem_histogram_bucket(requested)]);
    return change_own_heap(slot, bytes);
  }
  // The shared slot: several threads write it, so atomic adds, and no countdowns.
  add(slot->calls[fn], uint64_t(1));
  if (fn != CLIPMEM_FN_FREE) add(slot->histogram[clipmem_histogram_bucket(requested)], uint64_t(1));
  int64_t delta = add(slot->heap_delta, bytes);
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
