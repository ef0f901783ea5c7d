// The one list of the GPU allocation functions the tracker interposes (CUDA runtime and driver). A second
// list beside record/hooks.h because their shape differs: they all return a status code (cudaError_t or
// CUresult, 0 for success), their real functions are found lazily in the library the program loaded (no
// link-time dependency on CUDA), and besides the exported symbol they are handed out by the tracker's
// dlsym and cuGetProcAddress (the CUDA runtime finds the driver's functions that way, and many libraries
// find the runtime's with dlsym). Everything that names them derives from this list:
//   - enum ClipmemDeviceFn, CLIPMEM_DEVICE_FN_COUNT and CLIPMEM_DEVICE_FN_NAMES (record/record.h), the
//     `fn` of a device failure being CLIPMEM_DEVICE_FN_BASE + its index;
//   - the exported functions of native/preload/preload.cc and the hooks they call (preload/device.h);
//   - the table of real functions and the names dlsym and cuGetProcAddress answer (preload/device.cc).
// Append only: the position is the function's index in the record.
//
// Each entry: X(api, name, ENUM, proc, since, (parameters), (arguments)).
//   api    RUNTIME (libcudart: cudaError_t) or DRIVER (libcuda: CUresult);
//   proc   the name cuGetProcAddress is asked for (the driver's name without its _v2 suffix);
//   since  the lowest cudaVersion for which cuGetProcAddress hands out this signature (cuMemAlloc asked
//          for with a cudaVersion below 3020 is the 32-bit v1, which is passed through unwrapped).
// Types are spelled without CUDA's headers: CUdeviceptr is unsigned long long, streams, pools and
// properties are pointers, CUmemGenericAllocationHandle is unsigned long long.
#pragma once

// clang-format off
#define CLIPMEM_DEVICE_HOOKS(X)                                                                             \
  X(RUNTIME, cudaMalloc,              CUDA_MALLOC,            cudaMalloc,              0,     (void** ptr, size_t size), (ptr, size)) \
  X(RUNTIME, cudaMallocManaged,       CUDA_MALLOC_MANAGED,    cudaMallocManaged,       0,     (void** ptr, size_t size, unsigned flags), (ptr, size, flags)) \
  X(RUNTIME, cudaMallocAsync,         CUDA_MALLOC_ASYNC,      cudaMallocAsync,         0,     (void** ptr, size_t size, void* stream), (ptr, size, stream)) \
  X(RUNTIME, cudaMallocHost,          CUDA_MALLOC_HOST,       cudaMallocHost,          0,     (void** ptr, size_t size), (ptr, size)) \
  X(RUNTIME, cudaHostAlloc,           CUDA_HOST_ALLOC,        cudaHostAlloc,           0,     (void** ptr, size_t size, unsigned flags), (ptr, size, flags)) \
  X(RUNTIME, cudaFree,                CUDA_FREE,              cudaFree,                0,     (void* ptr), (ptr)) \
  X(RUNTIME, cudaFreeAsync,           CUDA_FREE_ASYNC,        cudaFreeAsync,           0,     (void* ptr, void* stream), (ptr, stream)) \
  X(RUNTIME, cudaFreeHost,            CUDA_FREE_HOST,         cudaFreeHost,            0,     (void* ptr), (ptr)) \
  X(DRIVER,  cuMemAlloc_v2,           CU_MEM_ALLOC,           cuMemAlloc,              3020,  (unsigned long long* ptr, size_t size), (ptr, size)) \
  X(DRIVER,  cuMemAllocManaged,       CU_MEM_ALLOC_MANAGED,   cuMemAllocManaged,       6000,  (unsigned long long* ptr, size_t size, unsigned flags), (ptr, size, flags)) \
  X(DRIVER,  cuMemAllocAsync,         CU_MEM_ALLOC_ASYNC,     cuMemAllocAsync,         11020, (unsigned long long* ptr, size_t size, void* stream), (ptr, size, stream)) \
  X(DRIVER,  cuMemAllocFromPoolAsync, CU_MEM_ALLOC_FROM_POOL_ASYNC, cuMemAllocFromPoolAsync, 11020, (unsigned long long* ptr, size_t size, void* pool, void* stream), (ptr, size, pool, stream)) \
  X(DRIVER,  cuMemAllocHost_v2,       CU_MEM_ALLOC_HOST,      cuMemAllocHost,          3020,  (void** ptr, size_t size), (ptr, size)) \
  X(DRIVER,  cuMemCreate,             CU_MEM_CREATE,          cuMemCreate,             10020, (unsigned long long* handle, size_t size, const void* prop, unsigned long long flags), (handle, size, prop, flags)) \
  X(DRIVER,  cuMemAddressReserve,     CU_MEM_ADDRESS_RESERVE, cuMemAddressReserve,     10020, (unsigned long long* ptr, size_t size, size_t alignment, unsigned long long addr, unsigned long long flags), (ptr, size, alignment, addr, flags)) \
  X(DRIVER,  cuMemFree_v2,            CU_MEM_FREE,            cuMemFree,               3020,  (unsigned long long ptr), (ptr)) \
  X(DRIVER,  cuMemFreeAsync,          CU_MEM_FREE_ASYNC,      cuMemFreeAsync,          11020, (unsigned long long ptr, void* stream), (ptr, stream)) \
  X(DRIVER,  cuMemFreeHost,           CU_MEM_FREE_HOST,       cuMemFreeHost,           2000,  (void* ptr), (ptr)) \
  X(DRIVER,  cuMemRelease,            CU_MEM_RELEASE,         cuMemRelease,            10020, (unsigned long long handle), (handle)) \
  X(DRIVER,  cuGetProcAddress,        CU_GET_PROC_ADDRESS,    cuGetProcAddress,        11030, (const char* symbol, void** pfn, int version, unsigned long long flags), (symbol, pfn, version, flags)) \
  X(DRIVER,  cuGetProcAddress_v2,     CU_GET_PROC_ADDRESS_V2, cuGetProcAddress,        12000, (const char* symbol, void** pfn, int version, unsigned long long flags, int* status), (symbol, pfn, version, flags, status))
// clang-format on
