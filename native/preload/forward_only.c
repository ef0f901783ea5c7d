/* Baselines for scripts/bench-tracker.ts, not shipped and not used by the tracker: interposers of malloc
 * and free that only forward, so that the benchmark shows what interposition itself costs.
 *   libclipmem_forward_only.so     malloc and free jump straight to glibc's: the cheapest interposer;
 *   libclipmem_forward_inspect.so  malloc calls glibc's and has the block back before returning it, as any
 *                                  tracker must to read the block's size; free still jumps straight on. */
#include <stddef.h>

extern void* __libc_malloc(size_t size);
extern void __libc_free(void* ptr);

__attribute__((visibility("default"))) void* malloc(size_t size) {
  void* block = __libc_malloc(size);
#ifdef CLIPMEM_INSPECT_RESULT
  __asm__ volatile("" : : "r"(block)); /* the block is seen here, after the call: no tail call */
#endif
  return block;
}

__attribute__((visibility("default"))) void free(void* ptr) { __libc_free(ptr); }
