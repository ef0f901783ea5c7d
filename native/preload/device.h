// GPU allocations (CUDA runtime and driver): the hooks of the device list (record/device_hooks.h), and
// the tracker's dlsym, which hands out those hooks in place of the real functions. See device.cc.
#pragma once
#include <stddef.h>

#include "record/device_hooks.h"

namespace clipmem {

// One hook per entry of the device list, `<name>_hook`, with the function's own parameters.
#define CLIPMEM_DEVICE_HOOK_DECLARATION(api, name, ENUM, proc, since, params, args) int name##_hook params;
CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_HOOK_DECLARATION)
#undef CLIPMEM_DEVICE_HOOK_DECLARATION

// For the exported dlsym: the hook to hand out for a function of the device list found in `handle`, or
// null for any other name (the export then tail-calls the real dlsym, so that RTLD_NEXT and the caller's
// namespace are judged from the caller's return address, as if the tracker were not there).
void* device_symbol(void* handle, const char* name);

}  // namespace clipmem
