/* A stand-in CUDA runtime (built as libcudart.so.12) over the stub driver, reaching it the way the real
 * runtime does: dlopen("libcuda.so.1"), dlsym for cuGetProcAddress, then every driver function through
 * that entry-point table, never by its exported name. Errors are the runtime's: cudaErrorMemoryAllocation
 * (2) where the driver said CUDA_ERROR_OUT_OF_MEMORY (2). */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

typedef int (*GetProc)(const char*, void**, int, unsigned long long, int*);
static struct {
  int (*init)(unsigned);
  int (*retain)(void**, int);
  int (*push)(void*);
  int (*alloc)(unsigned long long*, size_t);
  int (*alloc_managed)(unsigned long long*, size_t, unsigned);
  int (*alloc_async)(unsigned long long*, size_t, void*);
  int (*alloc_host)(void**, size_t);
  int (*free)(unsigned long long);
  int (*free_async)(unsigned long long, void*);
  int (*free_host)(void*);
} driver;
static int ready;

#define CUDA_VERSION 12040
static int lookup(GetProc get, const char* name, void* slot) {
  int status = 0;
  return get(name, (void**)slot, CUDA_VERSION, 0, &status);
}

/* The primary context of device 0, made current, as the runtime does on its first call. */
static int start(void) {
  if (ready) return 0;
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  GetProc get = library ? (GetProc)dlsym(library, "cuGetProcAddress_v2") : NULL;
  if (!get) return 3; /* cudaErrorInitializationError */
  if (lookup(get, "cuInit", &driver.init) || lookup(get, "cuDevicePrimaryCtxRetain", &driver.retain) ||
      lookup(get, "cuCtxPushCurrent", &driver.push) || lookup(get, "cuMemAlloc", &driver.alloc) ||
      lookup(get, "cuMemAllocManaged", &driver.alloc_managed) || lookup(get, "cuMemAllocAsync", &driver.alloc_async) ||
      lookup(get, "cuMemAllocHost", &driver.alloc_host) || lookup(get, "cuMemFree", &driver.free) ||
      lookup(get, "cuMemFreeAsync", &driver.free_async) || lookup(get, "cuMemFreeHost", &driver.free_host))
    return 3;
  void* context = NULL;
  if (driver.init(0) || driver.retain(&context, 0) || driver.push(context)) return 3;
  ready = 1;
  return 0;
}

/* CUresult to cudaError_t for the codes the stub driver returns. */
static int runtime_error(int result) {
  switch (result) {
    case 0:
      return 0;
    case 2:
      return 2; /* cudaErrorMemoryAllocation */
    case 1:
      return 1; /* cudaErrorInvalidValue */
    default:
      return 999; /* cudaErrorUnknown */
  }
}

int cudaMalloc(void** ptr, size_t size) {
  int status = start();
  return status ? status : runtime_error(driver.alloc((unsigned long long*)ptr, size));
}
int cudaMallocManaged(void** ptr, size_t size, unsigned flags) {
  int status = start();
  return status ? status : runtime_error(driver.alloc_managed((unsigned long long*)ptr, size, flags));
}
int cudaMallocAsync(void** ptr, size_t size, void* stream) {
  int status = start();
  return status ? status : runtime_error(driver.alloc_async((unsigned long long*)ptr, size, stream));
}
int cudaMallocHost(void** ptr, size_t size) {
  int status = start();
  return status ? status : runtime_error(driver.alloc_host(ptr, size));
}
int cudaHostAlloc(void** ptr, size_t size, unsigned flags) {
  (void)flags;
  return cudaMallocHost(ptr, size);
}
int cudaFree(void* ptr) {
  int status = start();
  return status || !ptr ? status : runtime_error(driver.free((unsigned long long)(size_t)ptr));
}
int cudaFreeAsync(void* ptr, void* stream) {
  int status = start();
  return status ? status : runtime_error(driver.free_async((unsigned long long)(size_t)ptr, stream));
}
int cudaFreeHost(void* ptr) {
  int status = start();
  return status ? status : runtime_error(driver.free_host(ptr));
}
const char* cudaGetErrorName(int error) {
  return error == 0 ? "cudaSuccess" : error == 2 ? "cudaErrorMemoryAllocation" : "cudaErrorUnknown";
}
