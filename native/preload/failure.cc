// Failure capture (see failure.h).
#include "preload/failure.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/counters.h"
#include "preload/heap_profile.h"
#include "preload/proc.h"
#include "preload/python.h"
#include "record/ring.h"

namespace clipmem {
namespace {
void describe_frame(void* address, uint16_t* module, char* symbol);
}  // namespace

void record_failure(const FailureArgs& args) {
  Guard g;
  ErrnoKeeper keep;
  uint64_t sequence;
  ClipmemFailure* f = claim_ring_entry(&record->failures_total, failures, CLIPMEM_FAILURE_CAPACITY, &sequence);
  f->fn = uint32_t(args.fn);
  f->flags = args.failure_flags;
  f->size = args.size;
  f->nmemb = args.nmemb;
  f->elem_size = args.elem_size;
  f->alignment = args.alignment;
  f->old_size = args.old_size;
  f->address = args.address;
  f->prot = args.prot;
  f->map_flags = args.flags;
  f->fd = args.fd;
  f->error = args.error;
  f->offset = args.offset;
  f->fd_path[0] = 0;
  DeviceFailure host;  // a host failure: no device
  const DeviceFailure& d = args.device ? *args.device : host;
  f->device = d.device;
  f->cuda_error = d.status;
  f->device_total = d.total;
  f->device_free = d.free;
  f->device_process_used = d.process_used;
  f->device_tracked = d.tracked;
  f->gpu_process_count = d.process_count;
  memcpy(f->gpu_processes, d.processes, sizeof f->gpu_processes);
  if (args.fd >= 0 && (args.fn == CLIPMEM_FN_MMAP || args.fn == CLIPMEM_FN_MMAP64)) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", args.fd);
    ssize_t n = readlink(link, f->fd_path, sizeof f->fd_path - 1);
    f->fd_path[n > 0 ? n : 0] = 0;
  }
  char text[4096];
  f->vm_size = f->vm_data = f->rss = -1;
  if (read_small_file("/proc/self/status", text, sizeof text) > 0) {
    f->vm_size = field_kib(text, "VmSize:");
    f->vm_data = field_kib(text, "VmData:");
    f->rss = field_kib(text, "VmRSS:");
  }
  f->commit_limit = f->committed_as = f->mem_total = -1;
  if (read_small_file("/proc/meminfo", text, sizeof text) > 0) {
    f->commit_limit = field_kib(text, "CommitLimit:");
    f->committed_as = field_kib(text, "Committed_AS:");
    int64_t ram = field_kib(text, "MemTotal:"), swap = field_kib(text, "SwapTotal:");
    f->mem_total = ram < 0 ? -1 : ram + (swap > 0 ? swap : 0);
  }
  // mprotect: whether the pages were private (data, committed when made writable) or shared, and their file.
  uintptr_t described = args.fn == CLIPMEM_FN_MPROTECT ? uintptr_t(args.address) : 0;
  f->map_count = scan_maps(described, &f->map_flags, f->fd_path, sizeof f->fd_path);
  f->max_map_count = read_number_file("/proc/sys/vm/max_map_count");
  f->overcommit_memory = int32_t(read_number_file("/proc/sys/vm/overcommit_memory"));
  read_rlimits(&record->failure_rlimit_as, &record->failure_rlimit_data);
  f->tid = int32_t(syscall(SYS_gettid));
  f->time_ns = now_ns();
  ClipmemThreadSlot* slot = my_slot();
  f->heap_current = load(record->heap_current) + load(slot->heap_delta);
  f->anon_mapped = load(record->anon_mapped);
  f->file_mapped = load(record->file_mapped);
  uint32_t phase = load(record->current_phase);
  f->phase_index = phase;
  f->phase[0] = 0;
  if (phase) memcpy(f->phase, phases[(phase - 1) % CLIPMEM_PHASE_CAPACITY].label, CLIPMEM_PHASE_LABEL_BYTES);
  f->phase[CLIPMEM_PHASE_LABEL_BYTES - 1] = 0;
  f->stack_depth = capture_stack(f->stack);
  for (uint32_t i = 0; i < f->stack_depth; ++i)
    describe_frame(reinterpret_cast<void*>(f->stack[i]), &f->frame_module[i], f->frame_symbol[i]);
  python_stack(f);
  publish_ring_entry(f, sequence);
  heap_profile_at_failure(sequence);
  take_sample(f->time_ns);
}

namespace {
// glibc's struct dl_find_object (<link.h>, 2.35), declared here: the headers of an older glibc, which the
// prebuilt binaries are built against, have none. The fields read come first on every architecture;
// `reserved` leaves room for the rest (at most 8 more words).
struct FoundObject {
  unsigned long long flags;
  void* map_start;
  void* map_end;
  link_map* map;
  void* eh_frame;
  unsigned long long reserved[16];
};
#ifdef DLFO_STRUCT_HAS_EH_DBASE  // headers of glibc 2.35 or later: the mirror matches the real one
static_assert(offsetof(FoundObject, map_start) == offsetof(dl_find_object, dlfo_map_start) &&
                  offsetof(FoundObject, map_end) == offsetof(dl_find_object, dlfo_map_end) &&
                  offsetof(FoundObject, map) == offsetof(dl_find_object, dlfo_link_map) &&
                  sizeof(FoundObject) >= sizeof(dl_find_object),
              "struct dl_find_object changed");
#endif
// _dl_find_object (glibc 2.35) is looked up at initialization, never linked: the tracker must load on
// glibc 2.17. Null on an older glibc, where dladdr answers instead (slower: see capture_stack).
int (*find_object)(void*, FoundObject*) = nullptr;
char* own_start = nullptr;  // this library's mapped range, when find_object gave it
char* own_end = nullptr;
const void* own_base = nullptr;

// The base of the loaded object holding `address` (null if none) and its path.
const void* object_of(void* address, const char** path) {
  if (find_object) {
    FoundObject found;
    if (find_object(address, &found) != 0) return nullptr;
    *path = found.map ? found.map->l_name : nullptr;
    return found.map_start;
  }
  Dl_info info;
  if (!dladdr(address, &info)) return nullptr;
  *path = info.dli_fname;
  return info.dli_fbase;
}

// Whether a return address lies in this library.
bool own_frame(void* frame) {
  char* byte = static_cast<char*>(frame) - 1;  // the call instruction, inside the calling function
  if (own_end) return byte >= own_start && byte < own_end;
  const char* path;
  return own_base && object_of(byte, &path) == own_base;
}
}  // namespace

void stack_init() {
  resolve_real_dlsym();
  find_object = reinterpret_cast<int (*)(void*, FoundObject*)>(real_dlsym(RTLD_DEFAULT, "_dl_find_object"));
  FoundObject own;
  if (find_object && find_object(reinterpret_cast<void*>(&stack_init), &own) == 0) {
    own_start = static_cast<char*>(own.map_start);
    own_end = static_cast<char*>(own.map_end);
  }
  const char* path;
  own_base = object_of(reinterpret_cast<void*>(&stack_init), &path);
}

uint32_t capture_stack(uint64_t stack[CLIPMEM_STACK_DEPTH]) {
  // The stack starts at the caller of the interposed function: frames inside this library are dropped.
  // Our own range comes from _dl_find_object where glibc has it, not dladdr: dladdr on the first frame
  // outside this library scans that module's whole symbol table (a millisecond in node or libtorch), and
  // heap samples come here.
  void* frames[CLIPMEM_STACK_DEPTH + 8];
  int depth = backtrace(frames, CLIPMEM_STACK_DEPTH + 8);
  int skip = 0;
  while (skip < depth && own_frame(frames[skip])) ++skip;
  uint32_t kept = uint32_t(depth - skip > CLIPMEM_STACK_DEPTH ? CLIPMEM_STACK_DEPTH : depth - skip);
  for (uint32_t i = 0; i < kept; ++i) stack[i] = uint64_t(uintptr_t(frames[i + skip]));
  return kept;
}

namespace {

// Index of the module with this base in the record's module table, adding it if new.
uint16_t module_index(const void* base, const char* path) {
  uint32_t used = load(record->modules_used);
  if (used > CLIPMEM_MODULE_CAPACITY) used = CLIPMEM_MODULE_CAPACITY;
  for (uint32_t i = 0; i < used; ++i)
    if (__atomic_load_n(&modules[i].base, __ATOMIC_ACQUIRE) == uint64_t(uintptr_t(base))) return uint16_t(i);
  uint32_t index = __atomic_fetch_add(&record->modules_used, 1u, __ATOMIC_RELAXED);
  if (index >= CLIPMEM_MODULE_CAPACITY) return CLIPMEM_NO_MODULE;
  snprintf(modules[index].path, sizeof modules[index].path, "%s", path ? path : "");
  __atomic_store_n(&modules[index].base, uint64_t(uintptr_t(base)), __ATOMIC_RELEASE);
  return uint16_t(index);
}

// dladdr in the failing process: the module and nearest symbol of a return address.
void describe_frame(void* address, uint16_t* module, char* symbol) {
  Dl_info info;
  *module = CLIPMEM_NO_MODULE;
  symbol[0] = 0;
  // A return address points after the call: look up the byte before it, inside the calling function.
  if (!dladdr(static_cast<char*>(address) - 1, &info)) return;
  if (info.dli_fbase) {
    const char* path = info.dli_fname;
    char exe[CLIPMEM_PATH_BYTES];
    if (!path || path[0] != '/') {  // the main program: dladdr gives "" or the name it was run by
      ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
      exe[n > 0 ? n : 0] = 0;
      path = exe;
    }
    *module = module_index(info.dli_fbase, path);
  }
  if (info.dli_sname) snprintf(symbol, CLIPMEM_SYMBOL_BYTES, "%s", info.dli_sname);
}

}  // namespace

// Only the module, found without dladdr's symbol search (which takes milliseconds in a large library):
// heap sites are described as they appear, while the program runs.
uint16_t frame_module(uint64_t address) {
  const char* path = nullptr;
  const void* base = object_of(reinterpret_cast<void*>(address - 1), &path);
  if (!base) return CLIPMEM_NO_MODULE;
  if (!path || path[0] != '/') path = record->exe;  // the main program: /proc/self/exe, read at the record's creation
  return module_index(base, path);
}

__attribute__((noinline, cold)) void heap_failure(int fn, uint64_t size, uint64_t nmemb, uint64_t elem_size,
                                                  uint64_t alignment, const void* old, uint64_t old_size, int error,
                                                  uint32_t flags) {
  FailureArgs args{fn};
  args.size = size;
  args.nmemb = nmemb;
  args.elem_size = elem_size;
  args.alignment = alignment;
  args.address = uintptr_t(old);
  args.old_size = old_size;
  args.error = error;
  args.failure_flags = flags;
  count_call(fn);
  record_failure(args);
}

}  // namespace clipmem
