/* A stand-in NVML + CUDA driver for the tests: a real shared library exporting the functions clip-mem
 * loads with dlopen (through CLIP_MEM_NVML_LIBRARY / CLIP_MEM_CUDA_LIBRARY), with two fixed devices.
 * The figures are chosen to be recognisable in a report; tests assert them exactly.
 *
 * It is also a device that allocates (built a second time as libcuda.so.1, with libnvidia-ml.so.1 a link
 * to that same file, so both APIs share one state): device 0's size is CLIPMEM_STUB_GPU_MEMORY bytes when
 * set (then another process, pid 4242, holds CLIPMEM_STUB_GPU_OTHERS bytes of it, 0 by default), and an
 * allocation past what is free fails with CUDA's real code, CUDA_ERROR_OUT_OF_MEMORY (2). The allocation
 * functions are found by their exported names and through cuGetProcAddress, as the real driver's are;
 * stub_cudart.c plays the runtime on top of it. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GIB (1024ULL * 1024ULL * 1024ULL)
#define MIB (1024ULL * 1024ULL)

struct stub_device {
  const char* name;
  unsigned long long total, used;
  unsigned process_pid;
  unsigned long long process_used;
};

static struct stub_device devices[2] = {
    {"clip-mem stub GPU 0 (40 GiB)", 40 * GIB, 3 * GIB, 4242, 2 * GIB + 512 * MIB},
    {"clip-mem stub GPU 1 (16 GiB)", 16 * GIB, 512 * MIB, 0, 0},
};
static int nvml_initialized;

/* ---- the allocating device (device 0, when CLIPMEM_STUB_GPU_MEMORY is set) ---- */
static int configured = -1;              /* -1: not read yet; 0: the fixed figures; 1: sized by the environment */
static unsigned long long others_bytes;  /* held by pid 4242 */
static unsigned long long live_bytes[2]; /* this process's allocations, per device */

static void configure(void) {
  if (configured >= 0) return;
  const char* size = getenv("CLIPMEM_STUB_GPU_MEMORY");
  const char* others = getenv("CLIPMEM_STUB_GPU_OTHERS");
  configured = size && *size;
  if (!configured) return;
  devices[0].total = strtoull(size, NULL, 10);
  others_bytes = others ? strtoull(others, NULL, 10) : 0;
  devices[0].used = others_bytes;
  devices[0].process_pid = others_bytes ? 4242 : 0;
  devices[0].process_used = others_bytes;
}

/* ---- NVML ---- */
typedef struct {
  unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

int nvmlInit_v2(void) {
  nvml_initialized = 1;
  return 0;
}
int nvmlShutdown(void) {
  nvml_initialized = 0;
  return 0;
}
const char* nvmlErrorString(int result) { return result == 1 ? "Uninitialized" : "Stub error"; }
int nvmlSystemGetDriverVersion(char* version, unsigned length) {
  snprintf(version, length, "%s", "999.99.stub");
  return 0;
}
int nvmlDeviceGetCount_v2(unsigned* count) {
  if (!nvml_initialized) return 1;
  *count = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (index >= 2) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  configure();
  *device = (void*)&devices[index];
  return 0;
}
/* Bus ids as cuDeviceGetPCIBusId gives them: 0000:0N:00.0 for ordinal N. */
int nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, void** device) {
  unsigned index;
  if (sscanf(bus_id, "0000:%x:00.0", &index) != 1 || index >= 2) return 6; /* NVML_ERROR_NOT_FOUND */
  return nvmlDeviceGetHandleByIndex_v2(index, device);
}
int nvmlDeviceGetName(void* device, char* name, unsigned length) {
  snprintf(name, length, "%s", ((const struct stub_device*)device)->name);
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* device, nvmlMemory_t* memory) {
  const struct stub_device* d = device;
  unsigned long long used = d->used + live_bytes[d - devices];
  memory->total = d->total;
  memory->used = used;
  memory->free = d->total - used;
  return 0;
}
int nvmlDeviceGetComputeRunningProcesses_v3(void* device, unsigned* count, nvmlProcessInfo_t* infos) {
  const struct stub_device* d = device;
  unsigned long long own = live_bytes[d - devices];
  unsigned needed = (d->process_pid ? 1 : 0) + (own ? 1 : 0);
  if (*count < needed) {
    *count = needed;
    return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  }
  *count = 0;
  memset(infos, 0, needed * sizeof *infos);
  if (d->process_pid) {
    infos[*count].pid = d->process_pid;
    infos[*count].usedGpuMemory = d->process_used;
    ++*count;
  }
  if (own) { /* this process, as NVML lists the processes holding memory */
    infos[*count].pid = (unsigned)getpid();
    infos[*count].usedGpuMemory = own;
    ++*count;
  }
  return 0;
}
int nvmlSystemGetProcessName(unsigned pid, char* name, unsigned length) {
  if (pid != 4242) return 6; /* NVML_ERROR_NOT_FOUND */
  snprintf(name, length, "%s", "python train_clip.py");
  return 0;
}

/* ---- CUDA driver ---- */
static int cuda_initialized;
static const size_t cuda_free[2] = {37 * GIB - 300 * MIB, 15 * GIB + 200 * MIB};
static int current_device = -1;

int cuInit(unsigned flags) {
  (void)flags;
  cuda_initialized = 1;
  return 0;
}
int cuGetErrorName(int result, const char** name) {
  *name = result == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : result == 3 ? "CUDA_ERROR_NOT_INITIALIZED" : "CUDA_ERROR_UNKNOWN";
  return 0;
}
int cuDriverGetVersion(int* version) {
  *version = 12040;
  return 0;
}
int cuDeviceGetCount(int* count) {
  if (!cuda_initialized) return 3;
  *count = 2;
  return 0;
}
int cuDeviceGet(int* device, int ordinal) {
  *device = ordinal;
  return ordinal >= 0 && ordinal < 2 ? 0 : 101; /* CUDA_ERROR_INVALID_DEVICE */
}
int cuDeviceGetName(char* name, int length, int device) {
  snprintf(name, (size_t)length, "%s", devices[device].name);
  return 0;
}
int cuDevicePrimaryCtxRetain(void** context, int device) {
  *context = (void*)&devices[device];
  return 0;
}
int cuDevicePrimaryCtxRelease_v2(int device) {
  (void)device;
  return 0;
}
int cuCtxPushCurrent_v2(void* context) {
  current_device = (int)((const struct stub_device*)context - devices);
  return 0;
}
int cuCtxPopCurrent_v2(void** context) {
  *context = current_device >= 0 ? (void*)&devices[current_device] : NULL;
  current_device = -1;
  return 0;
}
/* Free as the driver sees it: the fixed figure, or the sized device's total less the others and us. */
static unsigned long long device_free(int device) {
  configure();
  if (configured && device == 0) return devices[0].total - others_bytes - live_bytes[0];
  return cuda_free[device] - live_bytes[device];
}
int cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  if (current_device < 0) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
  *free_bytes = device_free(current_device);
  *total_bytes = devices[current_device].total;
  return 0;
}
int cuCtxGetDevice(int* device) {
  if (current_device < 0) return 201;
  *device = current_device;
  return 0;
}
int cuDeviceGetPCIBusId(char* bus_id, int length, int device) {
  if (device < 0 || device >= 2) return 101;
  snprintf(bus_id, (size_t)length, "0000:%02x:00.0", device);
  return 0;
}

/* ---- allocations: addresses from a counter, sizes kept to free them ---- */
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define STUB_ALLOCATIONS 1024
static struct {
  unsigned long long key, size;
  int device, pinned;
} allocations[STUB_ALLOCATIONS];
static unsigned long long next_address = 0x7f0000000000ULL, next_handle = 1;

static int take(unsigned long long key, unsigned long long size, int device) {
  for (int i = 0; i < STUB_ALLOCATIONS; i++)
    if (!allocations[i].key) {
      allocations[i].key = key;
      allocations[i].size = size;
      allocations[i].device = device;
      if (device >= 0) live_bytes[device] += size;
      return 0;
    }
  return CUDA_ERROR_OUT_OF_MEMORY;
}
static int give_back(unsigned long long key) {
  for (int i = 0; i < STUB_ALLOCATIONS; i++)
    if (allocations[i].key == key) {
      if (allocations[i].device >= 0) live_bytes[allocations[i].device] -= allocations[i].size;
      allocations[i].key = 0;
      return 0;
    }
  return 1; /* CUDA_ERROR_INVALID_VALUE */
}
static int device_alloc(unsigned long long* ptr, size_t size) {
  if (current_device < 0) return 201;
  if (size == 0) return 1;
  if (size > device_free(current_device)) return CUDA_ERROR_OUT_OF_MEMORY;
  unsigned long long address = next_address;
  next_address += (size + 0xfffff) & ~0xfffffULL; /* 1 MiB granules, like the driver's large pages */
  int status = take(address, size, current_device);
  if (status == 0) *ptr = address;
  return status;
}
static int host_alloc(void** ptr, size_t size) {
  void* block = malloc(size); /* page-locked host memory: fails where the host's memory does */
  if (!block) return CUDA_ERROR_OUT_OF_MEMORY;
  if (take((unsigned long long)(uintptr_t)block, size, -1) != 0) {
    free(block);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *ptr = block;
  return 0;
}
static int host_free(void* ptr) {
  int status = give_back((unsigned long long)(uintptr_t)ptr);
  if (status == 0) free(ptr);
  return status;
}

int cuMemAlloc_v2(unsigned long long* ptr, size_t size) { return device_alloc(ptr, size); }
int cuMemAllocManaged(unsigned long long* ptr, size_t size, unsigned flags) {
  (void)flags;
  return device_alloc(ptr, size);
}
int cuMemAllocAsync(unsigned long long* ptr, size_t size, void* stream) {
  (void)stream;
  return device_alloc(ptr, size);
}
int cuMemAllocFromPoolAsync(unsigned long long* ptr, size_t size, void* pool, void* stream) {
  (void)pool;
  (void)stream;
  return device_alloc(ptr, size);
}
int cuMemAllocHost_v2(void** ptr, size_t size) { return host_alloc(ptr, size); }
int cuMemFree_v2(unsigned long long ptr) { return give_back(ptr); }
int cuMemFreeAsync(unsigned long long ptr, void* stream) {
  (void)stream;
  return give_back(ptr);
}
int cuMemFreeHost(void* ptr) { return host_free(ptr); }
/* CUmemAllocationProp begins with type, requestedHandleTypes, location {type, id}. */
int cuMemCreate(unsigned long long* handle, size_t size, const int* prop, unsigned long long flags) {
  (void)flags;
  int device = prop ? prop[3] : -1;
  if (device < 0 || device >= 2) return 101;
  configure();
  if (size > (device == 0 && configured ? devices[0].total - others_bytes - live_bytes[0]
                                        : cuda_free[device] - live_bytes[device]))
    return CUDA_ERROR_OUT_OF_MEMORY;
  int status = take(next_handle, size, device);
  if (status == 0) *handle = next_handle++;
  return status;
}
int cuMemRelease(unsigned long long handle) { return give_back(handle); }
/* Address space: refused past 16 times the device, as a reservation the driver cannot place. */
int cuMemAddressReserve(unsigned long long* ptr, size_t size, size_t alignment, unsigned long long addr,
                        unsigned long long flags) {
  (void)alignment;
  (void)addr;
  (void)flags;
  if (current_device < 0) return 201;
  configure();
  if (size / 16 > devices[current_device].total) return CUDA_ERROR_OUT_OF_MEMORY;
  *ptr = next_address;
  next_address += size;
  return 0;
}

/* ---- the entry-point table ---- */
int cuGetProcAddress(const char* symbol, void** pfn, int version, unsigned long long flags);
int cuGetProcAddress_v2(const char* symbol, void** pfn, int version, unsigned long long flags, int* status);
static const struct {
  const char* name;
  int since;
  void* function;
} table[] = {
    {"cuInit", 2000, (void*)cuInit},
    {"cuGetErrorName", 6000, (void*)cuGetErrorName},
    {"cuDevicePrimaryCtxRetain", 7000, (void*)cuDevicePrimaryCtxRetain},
    {"cuCtxPushCurrent", 4000, (void*)cuCtxPushCurrent_v2},
    {"cuCtxGetDevice", 2000, (void*)cuCtxGetDevice},
    {"cuMemGetInfo", 3020, (void*)cuMemGetInfo_v2},
    {"cuMemAlloc", 3020, (void*)cuMemAlloc_v2},
    {"cuMemAllocManaged", 6000, (void*)cuMemAllocManaged},
    {"cuMemAllocAsync", 11020, (void*)cuMemAllocAsync},
    {"cuMemAllocFromPoolAsync", 11020, (void*)cuMemAllocFromPoolAsync},
    {"cuMemAllocHost", 3020, (void*)cuMemAllocHost_v2},
    {"cuMemCreate", 10020, (void*)cuMemCreate},
    {"cuMemAddressReserve", 10020, (void*)cuMemAddressReserve},
    {"cuMemFree", 3020, (void*)cuMemFree_v2},
    {"cuMemFreeAsync", 11020, (void*)cuMemFreeAsync},
    {"cuMemFreeHost", 2000, (void*)cuMemFreeHost},
    {"cuMemRelease", 10020, (void*)cuMemRelease},
    {"cuGetProcAddress", 12000, (void*)cuGetProcAddress_v2},
    {"cuGetProcAddress", 11030, (void*)cuGetProcAddress},
};
int cuGetProcAddress_v2(const char* symbol, void** pfn, int version, unsigned long long flags, int* status) {
  (void)flags;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(symbol, table[i].name) == 0 && version >= table[i].since) {
      *pfn = table[i].function;
      if (status) *status = 0; /* CU_GET_PROC_ADDRESS_SUCCESS */
      return 0;
    }
  *pfn = NULL;
  if (status) *status = 1; /* CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
  return 500;              /* CUDA_ERROR_NOT_FOUND */
}
int cuGetProcAddress(const char* symbol, void** pfn, int version, unsigned long long flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}
