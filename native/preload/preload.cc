// LD_PRELOAD entry points: each interposed function forwards to its hook in tracker.cc, nothing more.
#include <stdarg.h>
#include <sys/mman.h>

#include "preload/tracker.h"
#include "record/record.h"

#define CLIPMEM_EXPORT extern "C" __attribute__((visibility("default")))
// The two hottest entry points take their hook's body (link-time optimization sees both files), which
// saves a jump per call; the hooks' slow paths stay out of line.
#define CLIPMEM_EXPORT_HOT CLIPMEM_EXPORT __attribute__((flatten))

CLIPMEM_EXPORT_HOT void* malloc(size_t size) { return clipmem::malloc_hook(size); }
CLIPMEM_EXPORT void* calloc(size_t nmemb, size_t size) { return clipmem::calloc_hook(nmemb, size); }
CLIPMEM_EXPORT void* realloc(void* ptr, size_t size) { return clipmem::realloc_hook(ptr, size); }
CLIPMEM_EXPORT void* reallocarray(void* ptr, size_t nmemb, size_t size) {
  return clipmem::reallocarray_hook(ptr, nmemb, size);
}
CLIPMEM_EXPORT_HOT void free(void* ptr) { clipmem::free_hook(ptr); }
CLIPMEM_EXPORT void cfree(void* ptr) { clipmem::free_hook(ptr); }
CLIPMEM_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  return clipmem::posix_memalign_hook(out, alignment, size);
}
CLIPMEM_EXPORT void* aligned_alloc(size_t alignment, size_t size) { return clipmem::aligned_alloc_hook(alignment, size); }
CLIPMEM_EXPORT void* memalign(size_t alignment, size_t size) { return clipmem::memalign_hook(alignment, size); }
CLIPMEM_EXPORT void* valloc(size_t size) { return clipmem::valloc_hook(size); }
CLIPMEM_EXPORT void* pvalloc(size_t size) { return clipmem::pvalloc_hook(size); }
CLIPMEM_EXPORT void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  return clipmem::mmap_hook(CLIPMEM_FN_MMAP, addr, length, prot, flags, fd, offset);
}
CLIPMEM_EXPORT void* mmap64(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  return clipmem::mmap_hook(CLIPMEM_FN_MMAP64, addr, length, prot, flags, fd, offset);
}
CLIPMEM_EXPORT int munmap(void* addr, size_t length) { return clipmem::munmap_hook(addr, length); }
CLIPMEM_EXPORT int mprotect(void* addr, size_t length, int prot) { return clipmem::mprotect_hook(addr, length, prot); }
CLIPMEM_EXPORT void* mremap(void* old_address, size_t old_size, size_t new_size, int flags, ...) {
  void* new_address = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list args;
    va_start(args, flags);
    new_address = va_arg(args, void*);
    va_end(args);
  }
  return clipmem::mremap_hook(old_address, old_size, new_size, flags, new_address);
}
CLIPMEM_EXPORT int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  return clipmem::pthread_create_hook(thread, attr, start, arg);
}
