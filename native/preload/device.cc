// GPU allocations: the hooks of the device list (record/device_hooks.h) around the CUDA runtime's and
// driver's allocation functions, and the ways those hooks reach the program:
//   - the exported symbols (preload.cc): a program or library linked against libcudart or libcuda;
//   - dlsym (the tracker exports it): libraries that dlopen the runtime or the driver and look the
//     functions up in that handle, which symbol interposition does not reach;
//   - cuGetProcAddress: the driver's entry-point table, through which the runtime itself (even linked
//     statically, as nvcc does by default) calls the driver; its hook hands back our hooks.
// The real functions are found lazily in the libraries the program loaded (no link-time dependency on
// CUDA). A call made while another device hook runs (cudaMalloc calling cuMemAlloc inside the runtime)
// passes through: each allocation is counted, and each failure recorded, once, at the outermost API.
//
// Successes are counted per device (live, peak) in the record's device table, keyed by address (or by
// handle for cuMemCreate) in a fixed table so that frees subtract exactly what was allocated. A failure
// reads the device's state at that moment: cuMemGetInfo through the real driver, in the failing thread
// (whose context is current), and NVML for what this process and the others hold on the device. GPU
// failures are not host memory failures: the failure path may allocate (NVML does), under the guard.
#include "preload/device.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preload/counters.h"
#include "preload/failure.h"
#include "preload/state.h"

namespace clipmem {

namespace {

enum Api { kDriver = CLIPMEM_DEVICE_API_DRIVER, kRuntime = CLIPMEM_DEVICE_API_RUNTIME };
constexpr int kNotInitialized = 3;  // CUDA_ERROR_NOT_INITIALIZED, cudaErrorInitializationError

// The list, as data: name, the name cuGetProcAddress is asked, since which cudaVersion, the API, our hook.
struct Entry {
  const char* name;
  const char* proc;
  int since;
  int api;
  void* hook;
};
#define CLIPMEM_DEVICE_ENTRY(api, name, ENUM, proc, since, params, args) \
  {#name, #proc, since, CLIPMEM_DEVICE_API_##api, reinterpret_cast<void*>(&name##_hook)},
const Entry entries[CLIPMEM_DEVICE_FN_COUNT] = {CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_ENTRY)};
#undef CLIPMEM_DEVICE_ENTRY

// The real function behind each hook: adopted from dlsym or cuGetProcAddress, else found lazily.
void* reals[CLIPMEM_DEVICE_FN_COUNT];

// Depth of device hooks on this thread: > 0 inside one (calls made by the real function pass through).
__thread int device_depth __attribute__((tls_model("initial-exec"))) = 0;

// Whether an address lies in this library (dlsym(RTLD_DEFAULT, "cudaMalloc") finds our own export).
bool own_address(const void* address) {
  Dl_info own, info;
  return dladdr(reinterpret_cast<void*>(&own_address), &own) && dladdr(address, &info) &&
         info.dli_fbase == own.dli_fbase;
}

// Takes `real` as the function behind hook `index`; answers what the caller should be given: our hook,
// or `real` itself when the hook already stands for another function of that name (cuGetProcAddress's
// per-thread-stream variants): coverage is lost there, never a call misrouted.
void* adopt(int index, void* real) {
  if (!real) return nullptr;
  if (own_address(real)) return entries[index].hook;
  void* expected = nullptr;
  if (__atomic_compare_exchange_n(&reals[index], &expected, real, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
      expected == real)
    return entries[index].hook;
  return real;
}

// clip-mem's variables for other GPU libraries (as native-probe reads them): CLIPMEM_<name>, else the old
// spelling CLIP_MEM_<name>.
const char* library_variable(const char* name) {
  char variable[64];
  snprintf(variable, sizeof variable, "CLIPMEM_%s", name);
  const char* value = getenv(variable);
  if (value && *value) return value;
  snprintf(variable, sizeof variable, "CLIP_MEM_%s", name);
  return getenv(variable);
}

// The libraries a program loaded: RTLD_NOLOAD, never loading one itself.
void* loaded_library(const char* variable, const char* name) {
  const char* path = library_variable(variable);
  void* handle = path && *path ? dlopen(path, RTLD_LAZY | RTLD_NOLOAD) : nullptr;
  return handle ? handle : dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
}

void* real_function(int index) {
  void* real = __atomic_load_n(&reals[index], __ATOMIC_ACQUIRE);
  if (LIKELY(real)) return real;
  Guard g;
  ErrnoKeeper keep;
  resolve_real_dlsym();
  real = real_dlsym(RTLD_NEXT, entries[index].name);
  if (!real && entries[index].api == kDriver) {
    if (void* driver = loaded_library("CUDA_LIBRARY", "libcuda.so.1")) real = real_dlsym(driver, entries[index].name);
  }
  adopt(index, real);
  return __atomic_load_n(&reals[index], __ATOMIC_ACQUIRE);
}

// The few driver functions the tracker calls itself, from the loaded driver.
struct Driver {
  int (*ctx_get_device)(int*);
  int (*mem_get_info)(size_t*, size_t*);
  int (*pci_bus_id)(char*, int, int);
};
bool driver_functions(Driver* d) {
  static Driver found;
  if (!__atomic_load_n(&found.ctx_get_device, __ATOMIC_ACQUIRE)) {
    void* driver = loaded_library("CUDA_LIBRARY", "libcuda.so.1");
    if (!driver) return false;
    resolve_real_dlsym();
    found.mem_get_info = reinterpret_cast<int (*)(size_t*, size_t*)>(real_dlsym(driver, "cuMemGetInfo_v2"));
    found.pci_bus_id = reinterpret_cast<int (*)(char*, int, int)>(real_dlsym(driver, "cuDeviceGetPCIBusId"));
    __atomic_store_n(&found.ctx_get_device, reinterpret_cast<int (*)(int*)>(real_dlsym(driver, "cuCtxGetDevice")),
                     __ATOMIC_RELEASE);
  }
  *d = found;
  return d->ctx_get_device != nullptr;
}

int current_device() {
  Driver d;
  int device = CLIPMEM_NO_DEVICE;
  if (!driver_functions(&d) || d.ctx_get_device(&device) != 0) return CLIPMEM_NO_DEVICE;
  return device;
}

ClipmemDevice* device_counters(int device) {
  if (device < 0 || device >= CLIPMEM_DEVICE_CAPACITY) {
    add(record->device_untracked, uint64_t(1));
    return nullptr;
  }
  return &devices[device];
}

// ---------------------------------------------------------------- the table of live allocations
// Open addressing with tombstones under a spin lock: device allocations are few (caching allocators
// keep their blocks) and each costs microseconds in the driver, so a lock here costs nothing measurable.
enum Kind : uint32_t { kDevice = 1, kPinned = 2, kHandle = 3 };
struct Live {
  uint64_t key;  // address, or handle for kHandle; 0: empty
  uint64_t size;
  int32_t device;
  uint32_t kind;  // Kind; 0 with a key: a tombstone
};
constexpr size_t kLiveCapacity = 1 << 16;
Live live_table[kLiveCapacity];
int live_lock = 0;

struct SpinLock {
  SpinLock() {
    while (__atomic_exchange_n(&live_lock, 1, __ATOMIC_ACQUIRE)) {}
  }
  ~SpinLock() { __atomic_store_n(&live_lock, 0, __ATOMIC_RELEASE); }
};

size_t slot_of(uint64_t key) { return size_t((key >> 8) * 0x9e3779b97f4a7c15ull >> 48) & (kLiveCapacity - 1); }

bool remember(uint64_t key, uint32_t kind, uint64_t size, int device) {
  SpinLock lock;
  for (size_t i = slot_of(key), n = 0; n < kLiveCapacity; ++n, i = (i + 1) & (kLiveCapacity - 1)) {
    Live& e = live_table[i];
    if (e.key == 0 || e.kind == 0) {
      e = Live{key, size, device, kind};
      return true;
    }
  }
  return false;
}

bool forget(uint64_t key, uint32_t kind, Live* out) {
  SpinLock lock;
  for (size_t i = slot_of(key), n = 0; n < kLiveCapacity; ++n, i = (i + 1) & (kLiveCapacity - 1)) {
    Live& e = live_table[i];
    if (e.key == 0) return false;
    if (e.key == key && e.kind == kind) {
      *out = e;
      e.kind = 0;
      return true;
    }
  }
  return false;
}

// A timeline sample for the GPU bytes: at once for a large change, else at the host's pace.
void sample_device(uint64_t size) {
  if (size >= uint64_t(kSampleChangeBytes))
    take_sample(now_ns());
  else
    maybe_sample();
}

void counted(uint64_t key, uint32_t kind, uint64_t size, int device) {
  if (!remember(key, kind, size, device)) {
    add(record->device_untracked, uint64_t(1));
    return;
  }
  if (kind == kPinned) {
    raise_peak(record->pinned_peak, add(record->pinned_current, int64_t(size)));
    return;
  }
  ClipmemDevice* d = device_counters(device);
  if (!d) return;
  add(d->allocations, uint64_t(1));
  raise_peak(d->peak, add(d->live, int64_t(size)));
  raise_peak(d->largest, int64_t(size));
  sample_device(size);
}

void released(uint64_t key, uint32_t kind) {
  Live e;
  if (!forget(key, kind, &e)) {
    add(record->device_untracked, uint64_t(1));
    return;
  }
  if (kind == kPinned) {
    add(record->pinned_current, -int64_t(e.size));
    return;
  }
  if (e.device < 0 || e.device >= CLIPMEM_DEVICE_CAPACITY) return;
  add(devices[e.device].frees, uint64_t(1));
  add(devices[e.device].live, -int64_t(e.size));
  sample_device(e.size);
}

// ---------------------------------------------------------------- the device's state at a failure
struct NvmlProcess {
  unsigned pid;
  unsigned long long used;
  unsigned gpu_instance, compute_instance;
};
struct Nvml {
  int (*handle_by_bus_id)(const char*, void**);
  int (*handle_by_index)(unsigned, void**);
  int (*processes)(void*, unsigned*, NvmlProcess*);
  int (*process_name)(unsigned, char*, unsigned);
};

// NVML, loaded (and initialized) at the first GPU failure only.
const Nvml* nvml() {
  static Nvml found;
  static int tried = 0;
  if (__atomic_exchange_n(&tried, 1, __ATOMIC_ACQ_REL)) return found.processes ? &found : nullptr;
  const char* path = library_variable("NVML_LIBRARY");
  void* library = dlopen(path && *path ? path : "libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!library) return nullptr;
  auto init = reinterpret_cast<int (*)()>(real_dlsym(library, "nvmlInit_v2"));
  if (!init || init() != 0) return nullptr;
  found.handle_by_bus_id =
      reinterpret_cast<int (*)(const char*, void**)>(real_dlsym(library, "nvmlDeviceGetHandleByPciBusId_v2"));
  found.handle_by_index =
      reinterpret_cast<int (*)(unsigned, void**)>(real_dlsym(library, "nvmlDeviceGetHandleByIndex_v2"));
  found.process_name =
      reinterpret_cast<int (*)(unsigned, char*, unsigned)>(real_dlsym(library, "nvmlSystemGetProcessName"));
  __atomic_store_n(&found.processes,
                   reinterpret_cast<int (*)(void*, unsigned*, NvmlProcess*)>(
                       real_dlsym(library, "nvmlDeviceGetComputeRunningProcesses_v3")),
                   __ATOMIC_RELEASE);
  return found.processes ? &found : nullptr;
}

void process_name(const Nvml* n, unsigned pid, char* name) {
  name[0] = 0;
  if (n->process_name && n->process_name(pid, name, CLIPMEM_GPU_NAME_BYTES) == 0 && name[0]) return;
  char path[64];
  snprintf(path, sizeof path, "/proc/%u/comm", pid);
  FILE* f = fopen(path, "re");
  if (!f) return;
  if (!fgets(name, CLIPMEM_GPU_NAME_BYTES, f)) name[0] = 0;
  fclose(f);
  name[strcspn(name, "\n")] = 0;
}

// NVML's view of the device: this process's bytes, and the others, largest first.
void nvml_processes(const Driver& d, int device, DeviceFailure* out) {
  const Nvml* n = nvml();
  if (!n) return;
  void* handle = nullptr;
  char bus_id[32];
  // The CUDA ordinal is not NVML's index (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER): match by PCI bus.
  bool found = d.pci_bus_id && n->handle_by_bus_id && d.pci_bus_id(bus_id, sizeof bus_id, device) == 0 &&
               n->handle_by_bus_id(bus_id, &handle) == 0;
  if (!found &&
      !(n->handle_by_index && !getenv("CUDA_VISIBLE_DEVICES") && n->handle_by_index(unsigned(device), &handle) == 0))
    return;
  NvmlProcess list[64];
  unsigned count = 64;
  if (n->processes(handle, &count, list) != 0) return;
  unsigned self = unsigned(getpid());
  out->process_used = 0;
  for (unsigned i = 0; i < count; ++i) {
    int64_t used = list[i].used == ~0ull ? -1 : int64_t(list[i].used);
    if (list[i].pid == self) {
      out->process_used = used;
      continue;
    }
    // Insertion into the kept few, largest first.
    uint32_t kept = out->process_count < CLIPMEM_GPU_PROCESS_SLOTS ? out->process_count : CLIPMEM_GPU_PROCESS_SLOTS;
    ++out->process_count;
    uint32_t at = kept;
    while (at > 0 && out->processes[at - 1].used < used) --at;
    if (at >= CLIPMEM_GPU_PROCESS_SLOTS) continue;
    uint32_t last = kept < CLIPMEM_GPU_PROCESS_SLOTS ? kept : CLIPMEM_GPU_PROCESS_SLOTS - 1;
    memmove(&out->processes[at + 1], &out->processes[at], (last - at) * sizeof out->processes[0]);
    out->processes[at] = ClipmemGpuProcess{int32_t(list[i].pid), 0, used, {}};
    process_name(n, list[i].pid, out->processes[at].name);
  }
}

__attribute__((noinline, cold)) void device_failure(int index, int status, uint64_t size) {
  Guard g;
  ErrnoKeeper keep;
  DeviceFailure d;
  d.status = status;
  Driver driver;
  if (driver_functions(&driver)) {
    int device = CLIPMEM_NO_DEVICE;
    if (driver.ctx_get_device(&device) == 0) d.device = device;
    size_t free_bytes = 0, total_bytes = 0;
    if (driver.mem_get_info && driver.mem_get_info(&free_bytes, &total_bytes) == 0) {
      d.free = int64_t(free_bytes);
      d.total = int64_t(total_bytes);
    }
    if (d.device >= 0) nvml_processes(driver, d.device, &d);
  }
  if (ClipmemDevice* counters = d.device >= 0 && d.device < CLIPMEM_DEVICE_CAPACITY ? &devices[d.device] : nullptr) {
    add(counters->failures, uint64_t(1));
    d.tracked = load(counters->live);
    if (d.total > 0) store(counters->total, d.total);
  }
  FailureArgs args{CLIPMEM_DEVICE_FN_BASE + index};
  args.size = size;
  args.error = 0;
  args.device = &d;
  record_failure(args);
}

// A call of a device hook: the real function, and whether this call is the outermost (the one to count).
template <int Index>
struct Call {
  bool outer = device_depth++ == 0;
  ~Call() { --device_depth; }
  template <typename Function>
  Function real() {
    return reinterpret_cast<Function>(real_function(Index));
  }
  bool counts() { return outer && tracking(); }
};

template <int Index>
void allocated(Call<Index>& call, int status, uint64_t key, uint32_t kind, uint64_t size) {
  if (!call.counts()) return;
  if (status != 0) return device_failure(Index, status, size);
  Guard g;
  ErrnoKeeper keep;
  int device = kind == kPinned ? CLIPMEM_NO_DEVICE : current_device();
  counted(key, kind, size, device);
  if (device >= 0 && device < CLIPMEM_DEVICE_CAPACITY && !load(devices[device].total)) {
    Driver d;
    size_t free_bytes, total_bytes;
    if (driver_functions(&d) && d.mem_get_info && d.mem_get_info(&free_bytes, &total_bytes) == 0)
      store(devices[device].total, int64_t(total_bytes));
  }
}

template <int Index>
void freed(Call<Index>& call, int status, uint64_t key, uint32_t kind) {
  if (status != 0 || key == 0 || !call.counts()) return;
  Guard g;
  released(key, kind);
}

}  // namespace

void* device_symbol(void* handle, const char* name) {
  if (!name || name[0] != 'c' || name[1] != 'u') return nullptr;
  for (int i = 0; i < CLIPMEM_DEVICE_FN_COUNT; ++i)
    if (strcmp(name, entries[i].name) == 0) return adopt(i, real_dlsym(handle, name));
  return nullptr;
}

// ---------------------------------------------------------------- the hooks
#define CLIPMEM_CALL(ENUM) Call<CLIPMEM_DEVICE_FN_##ENUM> call
#define CLIPMEM_REAL(type)       \
  auto real = call.real<type>(); \
  if (!real) return kNotInitialized

int cudaMalloc_hook(void** ptr, size_t size) {
  CLIPMEM_CALL(CUDA_MALLOC);
  CLIPMEM_REAL(int (*)(void**, size_t));
  int status = real(ptr, size);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kDevice, size);
  return status;
}
int cudaMallocManaged_hook(void** ptr, size_t size, unsigned flags) {
  CLIPMEM_CALL(CUDA_MALLOC_MANAGED);
  CLIPMEM_REAL(int (*)(void**, size_t, unsigned));
  int status = real(ptr, size, flags);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kDevice, size);
  return status;
}
int cudaMallocAsync_hook(void** ptr, size_t size, void* stream) {
  CLIPMEM_CALL(CUDA_MALLOC_ASYNC);
  CLIPMEM_REAL(int (*)(void**, size_t, void*));
  int status = real(ptr, size, stream);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kDevice, size);
  return status;
}
int cudaMallocHost_hook(void** ptr, size_t size) {
  CLIPMEM_CALL(CUDA_MALLOC_HOST);
  CLIPMEM_REAL(int (*)(void**, size_t));
  int status = real(ptr, size);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kPinned, size);
  return status;
}
int cudaHostAlloc_hook(void** ptr, size_t size, unsigned flags) {
  CLIPMEM_CALL(CUDA_HOST_ALLOC);
  CLIPMEM_REAL(int (*)(void**, size_t, unsigned));
  int status = real(ptr, size, flags);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kPinned, size);
  return status;
}
int cudaFree_hook(void* ptr) {
  CLIPMEM_CALL(CUDA_FREE);
  CLIPMEM_REAL(int (*)(void*));
  int status = real(ptr);
  freed(call, status, uint64_t(uintptr_t(ptr)), kDevice);
  return status;
}
int cudaFreeAsync_hook(void* ptr, void* stream) {
  CLIPMEM_CALL(CUDA_FREE_ASYNC);
  CLIPMEM_REAL(int (*)(void*, void*));
  int status = real(ptr, stream);
  freed(call, status, uint64_t(uintptr_t(ptr)), kDevice);
  return status;
}
int cudaFreeHost_hook(void* ptr) {
  CLIPMEM_CALL(CUDA_FREE_HOST);
  CLIPMEM_REAL(int (*)(void*));
  int status = real(ptr);
  freed(call, status, uint64_t(uintptr_t(ptr)), kPinned);
  return status;
}
int cuMemAlloc_v2_hook(unsigned long long* ptr, size_t size) {
  CLIPMEM_CALL(CU_MEM_ALLOC);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t));
  int status = real(ptr, size);
  allocated(call, status, status ? 0 : *ptr, kDevice, size);
  return status;
}
int cuMemAllocManaged_hook(unsigned long long* ptr, size_t size, unsigned flags) {
  CLIPMEM_CALL(CU_MEM_ALLOC_MANAGED);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t, unsigned));
  int status = real(ptr, size, flags);
  allocated(call, status, status ? 0 : *ptr, kDevice, size);
  return status;
}
int cuMemAllocAsync_hook(unsigned long long* ptr, size_t size, void* stream) {
  CLIPMEM_CALL(CU_MEM_ALLOC_ASYNC);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t, void*));
  int status = real(ptr, size, stream);
  allocated(call, status, status ? 0 : *ptr, kDevice, size);
  return status;
}
int cuMemAllocFromPoolAsync_hook(unsigned long long* ptr, size_t size, void* pool, void* stream) {
  CLIPMEM_CALL(CU_MEM_ALLOC_FROM_POOL_ASYNC);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t, void*, void*));
  int status = real(ptr, size, pool, stream);
  allocated(call, status, status ? 0 : *ptr, kDevice, size);
  return status;
}
int cuMemAllocHost_v2_hook(void** ptr, size_t size) {
  CLIPMEM_CALL(CU_MEM_ALLOC_HOST);
  CLIPMEM_REAL(int (*)(void**, size_t));
  int status = real(ptr, size);
  allocated(call, status, status ? 0 : uint64_t(uintptr_t(*ptr)), kPinned, size);
  return status;
}
// Physical memory of the virtual memory management API, counted against the device its properties name
// (CUmemAllocationProp: type, requestedHandleTypes, then location {type, id}).
int cuMemCreate_hook(unsigned long long* handle, size_t size, const void* prop, unsigned long long flags) {
  CLIPMEM_CALL(CU_MEM_CREATE);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t, const void*, unsigned long long));
  int status = real(handle, size, prop, flags);
  if (status == 0 && call.counts()) {
    Guard g;
    counted(*handle, kHandle, size, prop ? static_cast<const int*>(prop)[3] : current_device());
  } else {
    allocated(call, status, 0, kHandle, size);
  }
  return status;
}
// Address space only: a failure is recorded, a success holds no memory.
int cuMemAddressReserve_hook(unsigned long long* ptr, size_t size, size_t alignment, unsigned long long addr,
                             unsigned long long flags) {
  CLIPMEM_CALL(CU_MEM_ADDRESS_RESERVE);
  CLIPMEM_REAL(int (*)(unsigned long long*, size_t, size_t, unsigned long long, unsigned long long));
  int status = real(ptr, size, alignment, addr, flags);
  if (status != 0 && call.counts()) device_failure(CLIPMEM_DEVICE_FN_CU_MEM_ADDRESS_RESERVE, status, size);
  return status;
}
int cuMemFree_v2_hook(unsigned long long ptr) {
  CLIPMEM_CALL(CU_MEM_FREE);
  CLIPMEM_REAL(int (*)(unsigned long long));
  int status = real(ptr);
  freed(call, status, ptr, kDevice);
  return status;
}
int cuMemFreeAsync_hook(unsigned long long ptr, void* stream) {
  CLIPMEM_CALL(CU_MEM_FREE_ASYNC);
  CLIPMEM_REAL(int (*)(unsigned long long, void*));
  int status = real(ptr, stream);
  freed(call, status, ptr, kDevice);
  return status;
}
int cuMemFreeHost_hook(void* ptr) {
  CLIPMEM_CALL(CU_MEM_FREE_HOST);
  CLIPMEM_REAL(int (*)(void*));
  int status = real(ptr);
  freed(call, status, uint64_t(uintptr_t(ptr)), kPinned);
  return status;
}
int cuMemRelease_hook(unsigned long long handle) {
  CLIPMEM_CALL(CU_MEM_RELEASE);
  CLIPMEM_REAL(int (*)(unsigned long long));
  int status = real(handle);
  freed(call, status, handle, kHandle);
  return status;
}

namespace {
// What cuGetProcAddress found for `symbol` at `version`: our hook for a function of the list whose
// signature that version has (the highest `since` not above it), else the real function unchanged.
void* proc_address(const char* symbol, void* found, int version) {
  int best = -1;
  for (int i = 0; i < CLIPMEM_DEVICE_FN_COUNT; ++i)
    if (entries[i].api == kDriver && entries[i].since <= version && strcmp(symbol, entries[i].proc) == 0 &&
        (best < 0 || entries[i].since > entries[best].since))
      best = i;
  return best < 0 ? found : adopt(best, found);
}
}  // namespace

// Called inside other device hooks too (the runtime looks its driver functions up while it allocates):
// the table is rewritten whatever the depth, since the pointers handed out outlive this call.
int cuGetProcAddress_hook(const char* symbol, void** pfn, int version, unsigned long long flags) {
  CLIPMEM_CALL(CU_GET_PROC_ADDRESS);
  CLIPMEM_REAL(int (*)(const char*, void**, int, unsigned long long));
  int status = real(symbol, pfn, version, flags);
  if (status == 0 && symbol && pfn && *pfn) *pfn = proc_address(symbol, *pfn, version);
  return status;
}
int cuGetProcAddress_v2_hook(const char* symbol, void** pfn, int version, unsigned long long flags, int* result) {
  CLIPMEM_CALL(CU_GET_PROC_ADDRESS_V2);
  CLIPMEM_REAL(int (*)(const char*, void**, int, unsigned long long, int*));
  int status = real(symbol, pfn, version, flags, result);
  if (status == 0 && symbol && pfn && *pfn) *pfn = proc_address(symbol, *pfn, version);
  return status;
}

}  // namespace clipmem
