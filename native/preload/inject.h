// Fault injection (CLIPMEM_FAIL="malloc:nth=3,mmap:above=1048576"): makes chosen calls fail as the
// system would, so the tests can reach every failure path without exhausting the machine.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "preload/counters.h"
#include "preload/failure.h"

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// Decides whether fault injection fails this call (and counts it in the record).
bool inject(int fn, uint64_t size);
// Reads CLIPMEM_FAIL; sets any_injection if a rule is active. A bad rule is loud and ignored.
void parse_injections(const char* spec);
// A forked child starts counting calls from zero.
void reset_injection_calls();

// Fault injection for the malloc family: true (and the failure recorded) if this call must fail.
__attribute__((noinline, cold)) bool inject_heap(int fn, uint64_t size, uint64_t nmemb, uint64_t elem_size,
                                                 uint64_t alignment, const void* old, uint64_t old_size,
                                                 uint32_t flags);

inline bool injected(int fn, FailureArgs& args) {
  if (LIKELY(!any_injection) || !inject(fn, args.size)) return false;
  args.failure_flags |= CLIPMEM_FAILURE_INJECTED;
  args.error = fn == CLIPMEM_FN_PTHREAD_CREATE ? EAGAIN : ENOMEM;  // what glibc returns when the stack cannot be mapped
  count_call(fn);
  record_failure(args);
  return true;
}

}  // namespace clipmem

#pragma GCC visibility pop
