// The tracker library's interface to the preload file: preload.cc only forwards each interposed libc
// function to the matching hook here (heaptrack's src/track split). The hooks live in hooks.cc; the rest
// of the tracker is split by concern:
//   bootstrap.{h,cc}  finding the real functions with dlsym, and the static arena for dlsym's calloc;
//   state.{h,cc}      the per-thread block of the fast path, the tracking state, the record's arrays;
//   counters.{h,cc}   the heap counters (per-thread slots, folds, peaks) and the timeline samples;
//   mappings.{h,cc}   the table of the mappings seen, for munmap, mremap and mprotect;
//   proc.{h,cc}       /proc readers that never allocate;
//   failure.{h,cc}    failure capture: arguments, /proc state and the stack into the failure ring;
//   python.{h,cc}     the failing thread's Python frames, read from CPython's structures;
//   inject.{h,cc}     fault injection (CLIPMEM_FAIL);
//   device.{h,cc}     GPU allocations (CUDA runtime and driver), the exported dlsym and cuGetProcAddress;
//   heap_profile.{h,cc} the sampled live-heap profile: which call sites hold the memory;
//   lifecycle.cc      record creation, fork, exit, and the functions the addon finds with dlsym.
//
// Rules that keep the tracker safe inside any process:
// - the success path takes no lock and allocates nothing: per-thread counters in the record, plus a few
//   relaxed atomics; everything slow (files, /proc, stacks) happens only on failures and rare samples;
// - a reentrancy guard in initial-exec TLS: whatever the tracker itself calls passes through untracked;
// - dlsym may call calloc before the real one is known: served from a static bootstrap arena;
// - errno is preserved across everything the tracker does;
// - the first hooked call initializes (so frees of blocks allocated before tracking cannot unbalance the
//   counters), the unwinder is warmed then so that capturing a stack later never allocates;
// - a forked child gets its own record, seeded with the parent's counters (it inherits the heap);
// - initialization failures are loud: one line on stderr naming the cause;
// - the fast path's helpers stay inline in the headers (counters.h, state.h): split across files, a
//   helper that is not inline would cost a call on every malloc (the build also uses link-time
//   optimization, which lets preload.cc take the hooks' bodies).
#pragma once
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#include "record/hooks.h"

namespace clipmem {

// One hook per entry of the hook list, `<name>_hook`, with the function's own parameters.
#define CLIPMEM_HOOK_DECLARATION(kind, name, ENUM, result, params, args) \
  CLIPMEM_HOOK_DECLARATION_##kind(name, result, params)
#define CLIPMEM_HOOK_DECLARATION_FORWARD(name, result, params) result name##_hook params;
#define CLIPMEM_HOOK_DECLARATION_HOT(name, result, params) result name##_hook params;
#define CLIPMEM_HOOK_DECLARATION_EXPLICIT(name, result, params)
CLIPMEM_HOOKS(CLIPMEM_HOOK_DECLARATION)
#undef CLIPMEM_HOOK_DECLARATION
#undef CLIPMEM_HOOK_DECLARATION_FORWARD
#undef CLIPMEM_HOOK_DECLARATION_HOT
#undef CLIPMEM_HOOK_DECLARATION_EXPLICIT

// The EXPLICIT entries. mremap's optional fifth argument (the new address, only with MREMAP_FIXED) comes
// as a plain parameter: its forwarder reads it from the varargs, which cannot be passed on as they are.
void* mremap_hook(void* old_address, size_t old_size, size_t new_size, int flags, void* new_address);

// _exit and _Exit (lifecycle.cc): marks the record ended as the exit handlers would, then ends the process.
[[noreturn]] void exit_now_hook(int status);

}  // namespace clipmem
