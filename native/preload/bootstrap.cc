// Finding the real functions. dlsym may call calloc before any real allocator is known (glibc allocates
// its error buffer that way): that call is served from a static arena, never from the tracker's hooks.
#include "preload/bootstrap.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

namespace clipmem {

RealFunctions real;
int resolving = 0;
void* (*real_dlsym)(void*, const char*) = nullptr;
alignas(64) char bootstrap_arena[kBootstrapBytes];
namespace {
size_t bootstrap_used = 0;

// A pointer already found is kept: calloc is looked up first, then again as the list comes to it.
template <typename T>
void resolve_one(T& slot, const char* name) {
  if (!slot) slot = reinterpret_cast<T>(real_dlsym(RTLD_NEXT, name));
}
}  // namespace

// Each block is preceded by a header word that reads as a glibc mmapped chunk, so that free's fast path,
// which sends mmapped chunks to the slow path, needs no separate test for bootstrap blocks; the word
// before it holds the size asked, for realloc to copy no more than the block holds.
void* bootstrap_alloc(size_t size) {
  // Larger than the whole arena: a plain allocation failure (and no wrap-around in the rounding below).
  if (size > sizeof bootstrap_arena) return errno = ENOMEM, nullptr;
  size_t start = (__atomic_fetch_add(&bootstrap_used, ((size + 15) & ~size_t(15)) + 16, __ATOMIC_RELAXED));
  if (start + 16 + size > sizeof bootstrap_arena) {
    static const char message[] = "clip-mem tracker: bootstrap arena exhausted while resolving libc symbols\n";
    (void)!write(2, message, sizeof message - 1);
    abort();
  }
  char* block = bootstrap_arena + start + 16;
  reinterpret_cast<size_t*>(block)[-1] = kChunkMmapped;
  reinterpret_cast<size_t*>(block)[-2] = size;
  return block;  // static storage: already zero, as calloc promises
}

// libc's dlsym by its version (it moved from libdl to libc in glibc 2.34; 2.17 is arm64's first). dlvsym
// judges RTLD_NEXT from its caller, this library, as the tracker's own lookups need.
void resolve_real_dlsym() {
  if (__atomic_load_n(&real_dlsym, __ATOMIC_ACQUIRE)) return;
  static const char* const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17"};
  for (const char* version : versions) {
    if (void* found = dlvsym(RTLD_NEXT, "dlsym", version)) {
      __atomic_store_n(&real_dlsym, reinterpret_cast<void* (*)(void*, const char*)>(found), __ATOMIC_RELEASE);
      return;
    }
  }
  static const char message[] = "clip-mem tracker: cannot find libc's dlsym with dlvsym(RTLD_NEXT)\n";
  (void)!write(2, message, sizeof message - 1);
  abort();
}

void resolve_real_functions() {
  resolving = 1;
  resolve_real_dlsym();                // dlvsym may itself allocate: served from the arena like dlsym's
  resolve_one(real.calloc, "calloc");  // first: dlsym itself may need calloc
#define CLIPMEM_RESOLVE(kind, name, ...) resolve_one(real.name, #name);
  CLIPMEM_HOOKS(CLIPMEM_RESOLVE)
#undef CLIPMEM_RESOLVE
  resolving = 0;
  if (!real.malloc || !real.calloc || !real.free || !real.mmap || !real.munmap || !real.mprotect ||
      !real.pthread_create) {
    static const char message[] = "clip-mem tracker: cannot find libc's allocator with dlsym(RTLD_NEXT)\n";
    (void)!write(2, message, sizeof message - 1);
    abort();
  }
}

}  // namespace clipmem
