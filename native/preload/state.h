// The tracker's shared state: the per-thread block the fast path reads, the tracking state, the record's
// arrays, and the small helpers (relaxed atomics, the reentrancy guard) every part uses.
#pragma once
#include <errno.h>
#include <stdint.h>

#include "preload/bootstrap.h"
#include "record/record.h"

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// One initial-exec TLS block: the hot path reads one field of it, `fast`, which folds every condition
// of the fast path into a single null test.
struct ThreadState {
  // This thread's own slot while the fast path may count into it: tracking, not inside the tracker, an
  // own (not the shared) slot, glibc's chunk headers verified, no fault injection. Else null.
  ClipmemThreadSlot* fast;
  ClipmemThreadSlot* slot;  // this thread's counters (null until its first tracked call)
  int guard;                // > 0 while the tracker itself runs: calls pass through untracked
};
// initial-exec: reading it is one instruction off the thread pointer, with no call to __tls_get_addr
// (which may allocate, and would cost a call on every malloc). The library is loaded at start by
// LD_PRELOAD, so the static TLS block has room for it.
extern __thread ThreadState tls __attribute__((tls_model("initial-exec")));

enum State { kUninitialized, kInitializing, kTracking, kDisabled };
extern int state;

// Set at start when real.malloc is glibc's and its chunk headers read as malloc_usable_size says.
extern bool glibc_chunks;
extern bool any_injection;  // CLIPMEM_FAIL set: every call takes the slow path, which injects

// The record (native/record/record.h) and its arrays, mapped by create_record (lifecycle.cc).
extern ClipmemRecordHeader* record;
extern ClipmemThreadSlot* slots;
extern ClipmemFailure* failures;
extern ClipmemSample* timeline;
extern ClipmemPhase* phases;
extern ClipmemModule* modules;
extern ClipmemDevice* devices;
extern char record_dir[CLIPMEM_PATH_BYTES];
extern char record_path[CLIPMEM_PATH_BYTES + 32];

// The kernel's page size (4 KiB on x86-64, 16 or 64 KiB on some arm64 kernels): mappings count whole pages.
extern uint64_t page_size;
inline uint64_t page_rounded(uint64_t length) { return (length + page_size - 1) & ~(page_size - 1); }

// Recomputes tls.fast after its slot, its guard or the global conditions changed.
inline void refresh_fast() {
  ClipmemThreadSlot* slot = tls.slot;
  bool fast = slot && !slot->shared && tls.guard == 0 && glibc_chunks && !any_injection &&
              __atomic_load_n(&state, __ATOMIC_ACQUIRE) == kTracking;
  tls.fast = fast ? slot : nullptr;
}

struct Guard {
  Guard() {
    ++tls.guard;
    tls.fast = nullptr;
  }
  ~Guard() {
    if (--tls.guard == 0) refresh_fast();
  }
};

struct ErrnoKeeper {
  int saved = errno;
  ~ErrnoKeeper() { errno = saved; }
};

template <typename T>
inline T load(const T& x) {
  return __atomic_load_n(&x, __ATOMIC_RELAXED);
}
template <typename T>
inline void store(T& x, T v) {
  __atomic_store_n(&x, v, __ATOMIC_RELAXED);
}
template <typename T>
inline T add(T& x, T v) {
  return __atomic_add_fetch(&x, v, __ATOMIC_RELAXED);
}

inline void raise_peak(int64_t& peak, int64_t value) {
  int64_t seen = load(peak);
  while (value > seen && !__atomic_compare_exchange_n(&peak, &seen, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

uint64_t now_ns();
void say(const char* a, const char* b = "", const char* c = "", const char* d = "");

// First hooked call (or the library's constructor): maps the record and starts tracking (lifecycle.cc).
void initialize();

// True when this call should be counted: tracking is on and we are not inside the tracker.
inline bool tracking() {
  if (UNLIKELY(tls.guard)) return false;
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (LIKELY(s == kTracking)) return true;
  if (s == kUninitialized) {
    initialize();
    return __atomic_load_n(&state, __ATOMIC_ACQUIRE) == kTracking;
  }
  return false;
}

}  // namespace clipmem

#pragma GCC visibility pop
