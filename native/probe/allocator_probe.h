// What can be allocated right now, found by binary search: each try allocates and releases at once and
// never touches the pages, so the probe costs no memory. Header-only: used by the addon
// (native/addon/probe_allocator.cc) and by the C++ tests.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace clipmem {

// x86-64 and aarch64 user address spaces are 128 TiB (47 bits): nothing larger can succeed.
constexpr size_t kProbeUpperBound = size_t(1) << 47;

struct SearchResult {
  size_t largest = 0;   // largest size that succeeded (0: none did)
  size_t failedAt = 0;  // smallest size that failed (0: the upper bound itself succeeded)
  int failedErrno = 0;  // errno of that failure
};

// Largest size in [0, upper] for which tryAllocate(size) returns 0 (it returns an errno on failure),
// to within `granularity` bytes. Assumes success is monotone in the size.
template <typename TryAllocate>
SearchResult largestSuccess(size_t upper, size_t granularity, TryAllocate tryAllocate) {
  SearchResult result;
  int error = tryAllocate(upper);
  if (error == 0) {
    result.largest = upper;
    return result;
  }
  result.failedAt = upper;
  result.failedErrno = error;
  size_t low = 0, high = upper;  // low succeeds (trivially for 0), high fails
  while (high - low > granularity) {
    size_t middle = low + (high - low) / 2 / granularity * granularity;
    if (middle == low) middle = low + granularity;
    error = tryAllocate(middle);
    if (error == 0) {
      low = middle;
    } else {
      high = middle;
      result.failedAt = middle;
      result.failedErrno = error;
    }
  }
  result.largest = low;
  return result;
}

inline size_t pageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// malloc + free: what the C heap hands out now (glibc serves large blocks by mmap, so this respects
// RLIMIT_DATA, RLIMIT_AS and the kernel's overcommit policy). Writes only malloc's own chunk header.
inline SearchResult probeLargestMalloc(size_t upper = kProbeUpperBound) {
  return largestSuccess(upper, pageSize(), [](size_t size) {
    errno = 0;
    void* block = std::malloc(size);
    if (!block) return errno ? errno : ENOMEM;
    std::free(block);
    return 0;
  });
}

inline int tryMap(size_t size, int protection, int flags) {
  if (size == 0) return 0;
  void* address = mmap(nullptr, size, protection, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  if (address == MAP_FAILED) return errno;
  munmap(address, size);
  return 0;
}

// An anonymous read-write private mapping, as allocators and mmap-loaded weights (copy-on-write) use:
// counts against RLIMIT_AS, RLIMIT_DATA and the commit limit.
inline SearchResult probeLargestReadWriteMapping(size_t upper = kProbeUpperBound) {
  return largestSuccess(upper, pageSize(), [](size_t size) { return tryMap(size, PROT_READ | PROT_WRITE, 0); });
}

// A PROT_NONE reservation (how V8, CUDA and allocators reserve address space): counts against RLIMIT_AS only.
inline SearchResult probeLargestReservation(size_t upper = kProbeUpperBound) {
  return largestSuccess(upper, pageSize(), [](size_t size) { return tryMap(size, PROT_NONE, MAP_NORESERVE); });
}

struct ReservableResult {
  size_t total = 0;         // sum of the blocks reserved
  size_t blocks = 0;        // how many blocks it took
  size_t largestBlock = 0;  // the first (largest) block
  int stopErrno = 0;        // errno of the failure that ended the search
};

// Total address space still reservable: reserve the largest PROT_NONE block, hold it, repeat until no
// block of at least `minimumBlock` fits (or maxBlocks are held), then release everything.
inline ReservableResult probeReservableAddressSpace(size_t minimumBlock = size_t(1) << 20, size_t maxBlocks = 64) {
  ReservableResult result;
  std::vector<std::pair<void*, size_t>> held;
  size_t upper = kProbeUpperBound;
  while (held.size() < maxBlocks) {
    SearchResult block = probeLargestReservation(upper);
    result.stopErrno = block.failedErrno;
    if (block.largest < minimumBlock) break;
    void* address = mmap(nullptr, block.largest, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (address == MAP_FAILED) {  // another thread took the space between the search and now
      result.stopErrno = errno;
      break;
    }
    held.emplace_back(address, block.largest);
    if (result.largestBlock == 0) result.largestBlock = block.largest;
    result.total += block.largest;
    upper = block.largest;  // later gaps cannot be larger than this one
  }
  result.blocks = held.size();
  for (auto& [address, size] : held) munmap(address, size);
  return result;
}

}  // namespace clipmem
