// Failure capture: what the tracker writes into the record's failure ring when a call fails (or fault
// injection makes it fail): the call's arguments, the process's state from /proc, and the stack.
#pragma once
#include <errno.h>
#include <stdint.h>

#include "record/record.h"

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// A GPU failure's own fields (device.cc gathers them before the failure is written).
struct DeviceFailure {
  int device = CLIPMEM_NO_DEVICE;
  int status = 0;  // cudaError_t or CUresult
  int64_t total = -1, free = -1, process_used = -1, tracked = 0;
  uint32_t process_count = 0;
  ClipmemGpuProcess processes[CLIPMEM_GPU_PROCESS_SLOTS] = {};
};

struct FailureArgs {
  int fn;
  uint64_t size = 0, nmemb = 0, elem_size = 0, alignment = 0, old_size = 0, address = 0;
  int prot = 0, flags = 0, fd = -1, error = ENOMEM;
  int64_t offset = 0;
  uint32_t failure_flags = 0;
  const DeviceFailure* device = nullptr;  // set for the functions of the device list
};

// Writes one failure entry (and a sample) into the record. Slow by design: reads /proc, unwinds the stack.
void record_failure(const FailureArgs& args);

// Finds how to tell which loaded object an address lies in (at initialization: it calls dlsym).
void stack_init();
// The caller's stack (frames of this library left out), innermost first; returns the depth.
uint32_t capture_stack(uint64_t stack[CLIPMEM_STACK_DEPTH]);
// The module table's index of the object holding a return address (CLIPMEM_NO_MODULE if none).
uint16_t frame_module(uint64_t address);

// The failure path of the malloc family, kept out of line: the success path builds no FailureArgs.
__attribute__((noinline, cold)) void heap_failure(int fn, uint64_t size, uint64_t nmemb, uint64_t elem_size,
                                                  uint64_t alignment, const void* old, uint64_t old_size, int error,
                                                  uint32_t flags);

}  // namespace clipmem

#pragma GCC visibility pop
