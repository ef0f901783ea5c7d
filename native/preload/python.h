// The Python stack of a failing thread, when the process is CPython: read from the interpreter's own
// structures (the thread state list in _PyRuntime, the frame chain, code objects, their strings and line
// tables), the way py-spy reads another process. No Python code runs and nothing is allocated: every
// read goes through process_vm_readv on this process, so a bad pointer is a failed read, not a crash.
#pragma once
#include "record/record.h"

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// At initialization: finds _PyRuntime and the version (Py_Version, else Py_GetVersion) with dlsym, and
// picks the layout of that version (3.8 to 3.13); a process without them keeps no Python state.
void python_init();

// On a failure: fills f->py_version, py_status, py_depth, py_more and py_frames.
void python_stack(ClipmemFailure* f);

}  // namespace clipmem

#pragma GCC visibility pop
