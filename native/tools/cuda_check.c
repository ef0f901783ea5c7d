/* The CUDA program scripts/device-check runs under the tracker on a real GPU (built there, against the CUDA
 * toolkit's headers and runtime): cudaMalloc through the runtime, then cuMemAlloc found through the
 * driver's entry-point table, each once within the device and once past it. The driver is not linked: it
 * is loaded with dlopen and cuGetProcAddress found with dlsym, as libraries that support several CUDA
 * versions do (and as the toolkit's link stub may be missing). Prints the device's total first,
 * "total <bytes>", then one line per call:
 *   <function> <bytes> -> <status> <status name>
 * Usage: cuda_check [device] */
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

/* Asked of cuGetProcAddress: 12.0, where its _v2 (with a query result) appeared; cuMemAlloc is then _v2. */
#define ASKED_VERSION 12000

int main(int argc, char** argv) {
  int device = argc > 1 ? atoi(argv[1]) : 0;
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    fprintf(stderr, "cuda_check: no usable CUDA device %d\n", device);
    return 1;
  }
  printf("total %zu\n", total_bytes);
  const size_t small = (size_t)256 << 20;
  const size_t past = (total_bytes + ((size_t)1 << 30)) & ~(((size_t)2 << 20) - 1); /* 1 GiB past, 2 MiB granules */

  void* ptr = NULL;
  cudaError_t r = cudaMalloc(&ptr, small);
  printf("cudaMalloc %zu -> %d %s\n", small, (int)r, cudaGetErrorName(r));
  if (r == cudaSuccess) cudaFree(ptr);
  r = cudaMalloc(&ptr, past);
  printf("cudaMalloc %zu -> %d %s\n", past, (int)r, cudaGetErrorName(r));

  /* The driver's cuMemAlloc as the runtime finds it: through cuGetProcAddress. */
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  typedef CUresult (*GetProc)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  GetProc get_proc = driver ? (GetProc)dlsym(driver, "cuGetProcAddress_v2") : NULL;
  CUresult (*mem_alloc)(CUdeviceptr*, size_t) = NULL;
  CUresult (*mem_free)(CUdeviceptr) = NULL;
  CUresult (*error_name)(CUresult, const char**) = NULL;
  CUdriverProcAddressQueryResult found;
  if (!get_proc ||
      get_proc("cuMemAlloc", (void**)&mem_alloc, ASKED_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &found) != CUDA_SUCCESS ||
      get_proc("cuMemFree", (void**)&mem_free, ASKED_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &found) != CUDA_SUCCESS ||
      get_proc("cuGetErrorName", (void**)&error_name, ASKED_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &found) !=
          CUDA_SUCCESS) {
    fprintf(stderr, "cuda_check: no cuGetProcAddress_v2 in libcuda.so.1, or it found no cuMemAlloc\n");
    return 1;
  }
  CUdeviceptr dptr = 0;
  const char* name = NULL;
  CUresult c = mem_alloc(&dptr, small);
  error_name(c, &name);
  printf("cuMemAlloc_v2 %zu -> %d %s\n", small, (int)c, name ? name : "?");
  if (c == CUDA_SUCCESS) mem_free(dptr);
  c = mem_alloc(&dptr, past);
  error_name(c, &name);
  printf("cuMemAlloc_v2 %zu -> %d %s\n", past, (int)c, name ? name : "?");
  return 0;
}
