// The sampled live-heap profile: which call sites hold the live memory, kept in the record (its heap
// sites and snapshots, record.h) so that the last state survives a SIGKILL.
//
// Sampling by bytes, as tcmalloc and Go do: each thread counts down a random number of bytes (exponential,
// mean CLIPMEM_HEAP_SAMPLE, 512 KiB by default); the block during which the count crosses zero is sampled,
// its stack captured and its bytes weighted by 1/p (p = 1 - exp(-size/mean), the chance a block of that
// size is sampled), so large blocks are always caught and the sum is unbiased. Sampled blocks go into a
// table keyed by address, so that their free, realloc or munmap takes their bytes back.
//
// Hot path cost: an allocation subtracts its size from a thread-local count and tests the sign; a free
// reads one 16-bit counter of a filter indexed by its address (zero unless a sampled block may live
// there, or the address is 0 mod 1 MiB: that counter is held at 1 so that it also catches NULL).
// Everything else happens on samples, on average once per `mean` bytes allocated.
#pragma once
#include <stdint.h>

#include "preload/counters.h"

#pragma GCC visibility push(hidden)

namespace clipmem {

// Counts of sampled blocks by address bits 4..19; a free whose counter is zero was not sampled. One
// counter per 16 bytes, so that the index is the address masked (`and`, then the load): blocks are
// 16-byte aligned. Page-aligned sampled mappings crowd a few counters; a small block sharing one only
// takes the slow path of free.
constexpr unsigned kSampledFilterBits = 16;
struct SampledFilterCounter {
  uint16_t count;
  uint8_t padding[14];
};
extern SampledFilterCounter sampled_filter[1u << kSampledFilterBits];

// The counter's byte offset is the address masked: one `and`, then a load indexed off the table.
inline uint16_t& sampled_filter_count(uintptr_t address) {
  constexpr uintptr_t kOffsetMask = ((uintptr_t(1) << kSampledFilterBits) - 1) * sizeof(SampledFilterCounter);
  return reinterpret_cast<SampledFilterCounter*>(reinterpret_cast<char*>(sampled_filter) + (address & kOffsetMask))
      ->count;
}

// True when `bytes` more crossed this thread's next sample point (then heap_sample must follow).
// (The count is in the thread's slot; the shared slot's threads share theirs, without atomics: a lost
// update only moves a sample point.)
__attribute__((always_inline)) inline bool sample_due(ClipmemThreadSlot* slot, int64_t bytes) {
  slot->sample_left -= bytes;
  return UNLIKELY(slot->sample_left < 0);
}
// Non-zero when `ptr` may be a sampled block (then heap_unsample must run before it is freed).
__attribute__((always_inline)) inline unsigned sampled_count(const void* ptr) {
  return __atomic_load_n(&sampled_filter_count(uintptr_t(ptr)), __ATOMIC_RELAXED);
}
__attribute__((always_inline)) inline bool maybe_sampled(const void* ptr) { return UNLIKELY(sampled_count(ptr) != 0); }

// After sample_due: samples the block `address` of `bytes` allocated by `fn` (a heap block or a mapping)
// if the count really crossed a sample point, and draws the next one. Out of line: it captures the stack.
__attribute__((noinline)) void heap_sample(ClipmemThreadSlot* slot, int fn, uintptr_t address, uint64_t bytes);
// Counts `bytes` (a call off the fast path) and samples the block if due.
inline void heap_count_sample(int fn, const void* address, uint64_t bytes) {
  ClipmemThreadSlot* slot = my_slot();
  if (address && sample_due(slot, int64_t(bytes))) heap_sample(slot, fn, uintptr_t(address), bytes);
}

// A sampled block, out of the table (heap_unsample) and possibly back in (heap_resample).
struct SampledBlock {
  uintptr_t address;  // 0: none
  uint64_t bytes;
  double weight;  // 1/p
  uint32_t site;
};
// Takes the block at `address` out of the profile if it was sampled (its free, realloc or munmap).
SampledBlock heap_unsample(uintptr_t address);
// Puts a block back after its realloc failed, or at its new address and size after a realloc or mremap.
void heap_resample(SampledBlock block, uintptr_t address, uint64_t bytes);

// At one of the first 8 failures (failure.cc): the top sites then, tagged with the failure's sequence number.
void heap_profile_at_failure(uint64_t failure);
// At initialization: the mean from CLIPMEM_HEAP_SAMPLE into the record.
void heap_profile_start(const char* mean);
// In a forked child: the parent's sites (the child inherits its heap) and a free lock.
void heap_profile_after_fork(const ClipmemRecordHeader* parent);

}  // namespace clipmem

#pragma GCC visibility pop
