// LD_PRELOAD entry points: each interposed function forwards to its hook (tracker.h, device.h), nothing
// more. The forwarders are generated from the hook lists (record/hooks.h, record/device_hooks.h); the
// EXPLICIT ones and dlsym are written out below.
#include <stdarg.h>
#include <sys/mman.h>

#include "preload/bootstrap.h"
#include "preload/device.h"
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

// The GPU allocation functions (record/device_hooks.h).
#define CLIPMEM_DEVICE_FORWARDER(api, name, ENUM, proc, since, params, args) \
  CLIPMEM_EXPORT int name params { return clipmem::name##_hook args; }
CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_FORWARDER)

// dlsym hands out the device hooks for the device list's names; any other name goes to libc's dlsym as
// a tail call (a jump, at -O2), so that glibc reads the caller's return address, not ours, for RTLD_NEXT
// and for the caller's namespace (tested: DeviceDlsym in test/track-gpu.test.ts).
CLIPMEM_EXPORT void* dlsym(void* handle, const char* name) {
  clipmem::resolve_real_dlsym();
  if (void* hook = clipmem::device_symbol(handle, name)) return hook;
  return clipmem::real_dlsym(handle, name);
}
