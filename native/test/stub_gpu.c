/* A stand-in NVML + CUDA driver for the tests: a real shared library exporting the functions clip-mem
 * loads with dlopen (through CLIP_MEM_NVML_LIBRARY / CLIP_MEM_CUDA_LIBRARY), with two fixed devices.
 * The figures are chosen to be recognisable in a report; tests assert them exactly. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define GIB (1024ULL * 1024ULL * 1024ULL)
#define MIB (1024ULL * 1024ULL)

struct stub_device {
  const char* name;
  unsigned long long total, used;
  unsigned process_pid;
  unsigned long long process_used;
};

static const struct stub_device devices[2] = {
    {"clip-mem stub GPU 0 (40 GiB)", 40 * GIB, 3 * GIB, 4242, 2 * GIB + 512 * MIB},
    {"clip-mem stub GPU 1 (16 GiB)", 16 * GIB, 512 * MIB, 0, 0},
};
static int nvml_initialized;

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
  *device = (void*)&devices[index];
  return 0;
}
int nvmlDeviceGetName(void* device, char* name, unsigned length) {
  snprintf(name, length, "%s", ((const struct stub_device*)device)->name);
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* device, nvmlMemory_t* memory) {
  const struct stub_device* d = device;
  memory->total = d->total;
  memory->used = d->used;
  memory->free = d->total - d->used;
  return 0;
}
int nvmlDeviceGetComputeRunningProcesses_v3(void* device, unsigned* count, nvmlProcessInfo_t* infos) {
  const struct stub_device* d = device;
  unsigned needed = d->process_pid ? 1 : 0;
  if (*count < needed) {
    *count = needed;
    return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  }
  *count = needed;
  if (needed) {
    memset(infos, 0, sizeof *infos);
    infos[0].pid = d->process_pid;
    infos[0].usedGpuMemory = d->process_used;
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
  *name = result == 3 ? "CUDA_ERROR_NOT_INITIALIZED" : "CUDA_ERROR_UNKNOWN";
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
int cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  if (current_device < 0) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
  *free_bytes = cuda_free[current_device];
  *total_bytes = devices[current_device].total;
  return 0;
}
