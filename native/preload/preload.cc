// LD_PRELOAD entry points: each interposed function forwards to its hook (tracker.h), nothing more. The
// forwarders are generated from the hook list (record/hooks.h); the EXPLICIT ones are written out below.
#include <stdarg.h>
#include <sys/mman.h>

#include "preload/tracker.h"

#define CLIPMEM_EXPORT extern "C" __attribute__((visibility("default")))
// The two hottest entry points take their hook's body (link-time optimization sees both files), which
// saves a jump per call; the hooks' slow paths stay out of line.
#define CLIPMEM_EXPORT_HOT CLIPMEM_EXPORT __attribute__((flatten))

#define CLIPMEM_FORWARDER(kind, name, ENUM, result, params, args) CLIPMEM_FORWARDER_##kind(name, result, params, args)
#define CLIPMEM_FORWARDER_FORWARD(name, result, params, args) \
  CLIPMEM_EXPORT result name params { return clipmem::name##_hook args; }
#define CLIPMEM_FORWARDER_HOT(name, result, params, args) \
  CLIPMEM_EXPORT_HOT result name params { return clipmem::name##_hook args; }
#define CLIPMEM_FORWARDER_EXPLICIT(name, result, params, args)  // written out below
CLIPMEM_HOOKS(CLIPMEM_FORWARDER)

// Old glibc's alias of free, still exported by glibc: counted as free (it is not in the call table).
CLIPMEM_EXPORT void cfree(void* ptr) { clipmem::free_hook(ptr); }

// mremap is variadic: the new address is there only with MREMAP_FIXED, and C cannot forward `...`.
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
