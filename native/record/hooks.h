// The one list of the functions the tracker interposes. Everything that names them derives from it:
//   - the record's call table: enum ClipmemFn, CLIPMEM_FN_COUNT and CLIPMEM_FN_NAMES (record/record.h);
//   - the exported forwarders of native/preload/preload.cc and the hooks they call (preload/tracker.h);
//   - the pointers to the real functions found with dlsym (preload/bootstrap.h);
//   - the names the addon hands to TypeScript (trackedFunctions() in native/addon/record.cc).
// Adding a hooked function is one line here (at the end: the position is the function's index in the
// record's call table, so an existing entry never moves) plus its handler `<name>_hook` in
// native/preload/hooks.cc (see ARCHITECTURE.md, "Adding a hooked function"), and a record version bump.
//
// Each entry: X(kind, name, ENUM, return type, (parameters), (arguments)).
//   kind  FORWARD  the exported function calls name##_hook(arguments), nothing more;
//         HOT      the same, with the hook's body inlined into the export (malloc and free: a jump saved
//                  on the two calls a program makes most);
//         EXPLICIT the forwarder and the hook's declaration are written by hand: the signature cannot be
//                  forwarded as is (mremap takes varargs, which C cannot pass on: its forwarder reads the
//                  optional fifth argument and hands it to the hook as a plain parameter).
//   ENUM  the suffix of the call table's CLIPMEM_FN_<ENUM> (the preprocessor cannot upper-case a name).
//   The parameters also give the real function's type (mremap's keeps its `...`). pthread_create's
//   function-pointer parameter is written like any other and needs no special case: parentheses protect
//   its commas inside the macro argument.
#pragma once

// clang-format off
#define CLIPMEM_HOOKS(X)                                                                                   \
  X(HOT,      malloc,         MALLOC,         void*, (size_t size),                            (size))    \
  X(FORWARD,  calloc,         CALLOC,         void*, (size_t nmemb, size_t size),              (nmemb, size)) \
  X(FORWARD,  realloc,        REALLOC,        void*, (void* ptr, size_t size),                 (ptr, size)) \
  X(FORWARD,  reallocarray,   REALLOCARRAY,   void*, (void* ptr, size_t nmemb, size_t size),   (ptr, nmemb, size)) \
  X(HOT,      free,           FREE,           void,  (void* ptr),                              (ptr))     \
  X(FORWARD,  posix_memalign, POSIX_MEMALIGN, int,   (void** out, size_t alignment, size_t size), (out, alignment, size)) \
  X(FORWARD,  aligned_alloc,  ALIGNED_ALLOC,  void*, (size_t alignment, size_t size),          (alignment, size)) \
  X(FORWARD,  memalign,       MEMALIGN,       void*, (size_t alignment, size_t size),          (alignment, size)) \
  X(FORWARD,  valloc,         VALLOC,         void*, (size_t size),                            (size))    \
  X(FORWARD,  pvalloc,        PVALLOC,        void*, (size_t size),                            (size))    \
  X(FORWARD,  mmap,           MMAP,           void*, (void* addr, size_t length, int prot, int flags, int fd, off_t offset), \
                                                                                (addr, length, prot, flags, fd, offset)) \
  X(FORWARD,  mmap64,         MMAP64,         void*, (void* addr, size_t length, int prot, int flags, int fd, off_t offset), \
                                                                                (addr, length, prot, flags, fd, offset)) \
  X(FORWARD,  munmap,         MUNMAP,         int,   (void* addr, size_t length),              (addr, length)) \
  X(EXPLICIT, mremap,         MREMAP,         void*, (void* old_address, size_t old_size, size_t new_size, int flags, ...), ()) \
  X(FORWARD,  pthread_create, PTHREAD_CREATE, int,   (pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg), \
                                                                                (thread, attr, start, arg)) \
  X(FORWARD,  mprotect,       MPROTECT,       int,   (void* addr, size_t length, int prot),    (addr, length, prot)) \
  X(FORWARD,  fork,           FORK,           pid_t, (void),                                   ())
// clang-format on
