// Definitions of the shared state declared in state.h.
#include "preload/state.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

namespace clipmem {

__thread ThreadState tls __attribute__((tls_model("initial-exec"))) = {nullptr, nullptr, 0};
int state = kUninitialized;
bool glibc_chunks = false;
bool any_injection = false;
ClipmemRecordHeader* record = nullptr;
ClipmemThreadSlot* slots = nullptr;
ClipmemFailure* failures = nullptr;
ClipmemSample* timeline = nullptr;
ClipmemPhase* phases = nullptr;
ClipmemModule* modules = nullptr;
ClipmemDevice* devices = nullptr;
char record_dir[CLIPMEM_PATH_BYTES];
char record_path[CLIPMEM_PATH_BYTES + 32];
uint64_t page_size = 4096;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void say(const char* a, const char* b, const char* c, const char* d) {
  char line[1024];
  int n = snprintf(line, sizeof line, "clip-mem tracker (pid %d): %s%s%s%s\n", int(getpid()), a, b, c, d);
  if (n > 0) (void)!write(2, line, size_t(n) < sizeof line ? size_t(n) : sizeof line - 1);
}

}  // namespace clipmem
