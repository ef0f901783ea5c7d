// Prints a record's GPU allocations and failures without Node, for scripts/device-check (which may run
// where there is no Node): the same layout and header check as the addon (native/record/record.h).
//   failure fn=<name> size=<bytes> api=<runtime|driver|host> status=<n> errno=<n> device=<n> total=<bytes>
//           free=<bytes> process=<bytes> tracked=<bytes> others=<n>
//   device <ordinal> live=<bytes> peak=<bytes> allocations=<n> frees=<n> failures=<n> total=<bytes>
// Usage: record_dump <file.rec>...  Exit status 1 when a file is not a readable record.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "record/record.h"
#include "record/ring.h"

namespace {
const char* const kFnNames[] = CLIPMEM_FN_NAMES;
const char* const kDeviceFnNames[] = CLIPMEM_DEVICE_FN_NAMES;
const int kDeviceFnRuntime[] = CLIPMEM_DEVICE_FN_RUNTIME;

bool dump(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    std::perror(path);
    return false;
  }
  void* base = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) return false;
  const auto* h = static_cast<const ClipmemRecordHeader*>(base);
  if (const char* problem = clipmem_header_problem(h, uint64_t(st.st_size))) {
    std::printf("%s: %s\n", path, problem);
    return false;
  }
  const char* bytes = static_cast<const char*>(base);
  std::printf("record %s pid=%d exe=%s\n", path, h->pid, h->exe);
  const auto* failures = reinterpret_cast<const ClipmemFailure*>(bytes + h->failures_offset);
  clipmem::for_each_ring_entry(
      failures, CLIPMEM_FAILURE_CAPACITY, h->failures_total, [](const ClipmemFailure& f, uint64_t) {
        bool device = f.fn >= CLIPMEM_DEVICE_FN_BASE && f.fn < CLIPMEM_DEVICE_FN_BASE + CLIPMEM_DEVICE_FN_COUNT;
        const char* name = device                    ? kDeviceFnNames[f.fn - CLIPMEM_DEVICE_FN_BASE]
                           : f.fn < CLIPMEM_FN_COUNT ? kFnNames[f.fn]
                                                     : "unknown";
        const char* api = !device ? "host" : kDeviceFnRuntime[f.fn - CLIPMEM_DEVICE_FN_BASE] ? "runtime" : "driver";
        std::printf(
            "failure fn=%s size=%llu api=%s status=%d errno=%d device=%d total=%lld free=%lld process=%lld "
            "tracked=%lld "
            "others=%u\n",
            name, (unsigned long long)f.size, api, f.cuda_error, f.error, f.device, (long long)f.device_total,
            (long long)f.device_free, (long long)f.device_process_used, (long long)f.device_tracked,
            f.gpu_process_count);
      });
  const auto* devices = reinterpret_cast<const ClipmemDevice*>(bytes + h->devices_offset);
  for (int i = 0; i < CLIPMEM_DEVICE_CAPACITY; ++i)
    if (devices[i].allocations || devices[i].failures)
      std::printf("device %d live=%lld peak=%lld allocations=%llu frees=%llu failures=%llu total=%lld\n", i,
                  (long long)devices[i].live, (long long)devices[i].peak, (unsigned long long)devices[i].allocations,
                  (unsigned long long)devices[i].frees, (unsigned long long)devices[i].failures,
                  (long long)devices[i].total);
  munmap(base, size_t(st.st_size));
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  bool ok = argc > 1;
  for (int i = 1; i < argc; ++i) ok = dump(argv[i]) && ok;
  return ok ? 0 : 1;
}
