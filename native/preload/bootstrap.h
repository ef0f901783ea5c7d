// Bootstrap: finding the real libc functions (dlsym(RTLD_NEXT)) and serving the allocations dlsym itself
// makes before they are known, from a static arena. The base every other tracker file includes.
#pragma once
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "record/hooks.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// One pointer per hooked function, typed from the hook list (record/hooks.h): real.malloc is glibc's.
#define CLIPMEM_REAL_POINTER(kind, name, ENUM, result, params, args) result(*name) params;
struct RealFunctions {
  CLIPMEM_HOOKS(CLIPMEM_REAL_POINTER)
};
#undef CLIPMEM_REAL_POINTER

extern RealFunctions real;
extern int resolving;  // set while dlsym runs: its allocations come from the bootstrap arena

// dlsym's own calloc (and whatever else runs before the real allocator is known).
constexpr size_t kBootstrapBytes = 64 * 1024;
extern char bootstrap_arena[kBootstrapBytes];

inline bool in_bootstrap(const void* ptr) {
  return uintptr_t(ptr) - uintptr_t(bootstrap_arena) < sizeof bootstrap_arena;
}

// glibc's chunk header flag for a chunk of its own mapping (malloc/malloc.c IS_MMAPPED).
constexpr size_t kChunkMmapped = 2;

void* bootstrap_alloc(size_t size);
inline size_t bootstrap_size(const void* ptr) { return static_cast<const size_t*>(ptr)[-2]; }

void resolve_real_functions();

// libc's dlsym, found with dlvsym: the tracker exports its own dlsym (device.h), and its lookups use this.
extern void* (*real_dlsym)(void*, const char*);
void resolve_real_dlsym();

inline void ensure_resolved() {
  if (UNLIKELY(!real.free)) resolve_real_functions();
}

}  // namespace clipmem

#pragma GCC visibility pop
