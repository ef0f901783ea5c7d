/* The GPU program the tracker's ava tests run under `clip-mem trace` (test/track-gpu.test.ts), linked
 * against the stub runtime and driver (libcudart.so.12, libcuda.so.1 built from stub_cudart.c and
 * stub_gpu.c). Usage:
 *   gpu_program <how> <function> <bytes>...   allocate each size in turn with <function>, found
 *       <how>: direct (the linked symbol), dlsym (dlsym in the library's handle) or proc (the driver's
 *       cuGetProcAddress, itself found with dlsym); print one line per call, then free what succeeded;
 *   gpu_program rtld-next   whether dlsym(RTLD_NEXT, "malloc") from here is the first malloc after this
 *       program (the tracker's), as it must be when the tracker's dlsym forwards as a tail call.
 * Exit status 0 when every call ran (failures included), 2 on bad usage. */
#define _GNU_SOURCE  // RTLD_NEXT, RTLD_DEFAULT
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long u64;
int cuInit(unsigned);
int cuDevicePrimaryCtxRetain(void**, int);
int cuCtxPushCurrent_v2(void*);
int cudaMalloc(void**, size_t);
int cudaMallocManaged(void**, size_t, unsigned);
int cudaMallocAsync(void**, size_t, void*);
int cudaMallocHost(void**, size_t);
int cudaHostAlloc(void**, size_t, unsigned);
int cudaFree(void*);
int cudaFreeAsync(void*, void*);
int cudaFreeHost(void*);
int cuMemAlloc_v2(u64*, size_t);
int cuMemAllocManaged(u64*, size_t, unsigned);
int cuMemAllocAsync(u64*, size_t, void*);
int cuMemAllocFromPoolAsync(u64*, size_t, void*, void*);
int cuMemAllocHost_v2(void**, size_t);
int cuMemCreate(u64*, size_t, const int*, u64);
int cuMemAddressReserve(u64*, size_t, size_t, u64, u64);
int cuMemFree_v2(u64);
int cuMemFreeAsync(u64, void*);
int cuMemFreeHost(void*);
int cuMemRelease(u64);
int cuGetProcAddress_v2(const char*, void**, int, u64, int*);

/* Each allocation function: its pointer when linked, its library, its name in the entry-point table
 * (NULL: a runtime function, not in it), and the function that frees what it returns. */
struct function {
  const char* name;
  void* linked;
  int runtime;
  const char* proc;
  const char* free_name;
};
static const struct function functions[] = {
    {"cudaMalloc", (void*)cudaMalloc, 1, NULL, "cudaFree"},
    {"cudaMallocManaged", (void*)cudaMallocManaged, 1, NULL, "cudaFree"},
    {"cudaMallocAsync", (void*)cudaMallocAsync, 1, NULL, "cudaFreeAsync"},
    {"cudaMallocHost", (void*)cudaMallocHost, 1, NULL, "cudaFreeHost"},
    {"cudaHostAlloc", (void*)cudaHostAlloc, 1, NULL, "cudaFreeHost"},
    {"cudaFree", (void*)cudaFree, 1, NULL, NULL},
    {"cudaFreeAsync", (void*)cudaFreeAsync, 1, NULL, NULL},
    {"cudaFreeHost", (void*)cudaFreeHost, 1, NULL, NULL},
    {"cuMemAlloc_v2", (void*)cuMemAlloc_v2, 0, "cuMemAlloc", "cuMemFree_v2"},
    {"cuMemAllocManaged", (void*)cuMemAllocManaged, 0, "cuMemAllocManaged", "cuMemFree_v2"},
    {"cuMemAllocAsync", (void*)cuMemAllocAsync, 0, "cuMemAllocAsync", "cuMemFreeAsync"},
    {"cuMemAllocFromPoolAsync", (void*)cuMemAllocFromPoolAsync, 0, "cuMemAllocFromPoolAsync", "cuMemFreeAsync"},
    {"cuMemAllocHost_v2", (void*)cuMemAllocHost_v2, 0, "cuMemAllocHost", "cuMemFreeHost"},
    {"cuMemCreate", (void*)cuMemCreate, 0, "cuMemCreate", "cuMemRelease"},
    {"cuMemAddressReserve", (void*)cuMemAddressReserve, 0, "cuMemAddressReserve", NULL},
    {"cuMemFree_v2", (void*)cuMemFree_v2, 0, "cuMemFree", NULL},
    {"cuMemFreeAsync", (void*)cuMemFreeAsync, 0, "cuMemFreeAsync", NULL},
    {"cuMemFreeHost", (void*)cuMemFreeHost, 0, "cuMemFreeHost", NULL},
    {"cuMemRelease", (void*)cuMemRelease, 0, "cuMemRelease", NULL},
};

static const struct function* function_named(const char* name) {
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
    if (strcmp(functions[i].name, name) == 0) return &functions[i];
  return NULL;
}

static void* find(const char* how, const struct function* f) {
  if (strcmp(how, "direct") == 0) return f->linked;
  void* library = dlopen(f->runtime ? "libcudart.so.12" : "libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
  if (!library) return NULL;
  if (strcmp(how, "dlsym") == 0) return dlsym(library, f->name);
  if (strcmp(how, "proc") == 0 && f->proc) {
    int (*get)(const char*, void**, int, u64, int*) =
        (int (*)(const char*, void**, int, u64, int*))dlsym(library, "cuGetProcAddress_v2");
    void* function = NULL;
    int status = 0;
    return get && get(f->proc, &function, 12040, 0, &status) == 0 ? function : NULL;
  }
  return NULL;
}

/* One call of an allocation function by its shape; the key is what its free function takes. */
static int allocate(const struct function* f, void* fn, u64 size, u64* key) {
  void* ptr = NULL;
  int status;
  const char* n = f->name;
  if (!strcmp(n, "cudaMalloc") || !strcmp(n, "cudaMallocHost") || !strcmp(n, "cuMemAllocHost_v2"))
    status = ((int (*)(void**, size_t))fn)(&ptr, size);
  else if (!strcmp(n, "cudaMallocManaged") || !strcmp(n, "cudaHostAlloc"))
    status = ((int (*)(void**, size_t, unsigned))fn)(&ptr, size, 1);
  else if (!strcmp(n, "cudaMallocAsync"))
    status = ((int (*)(void**, size_t, void*))fn)(&ptr, size, NULL);
  else if (!strcmp(n, "cuMemAlloc_v2"))
    return ((int (*)(u64*, size_t))fn)(key, size);
  else if (!strcmp(n, "cuMemAllocManaged"))
    return ((int (*)(u64*, size_t, unsigned))fn)(key, size, 1);
  else if (!strcmp(n, "cuMemAllocAsync"))
    return ((int (*)(u64*, size_t, void*))fn)(key, size, NULL);
  else if (!strcmp(n, "cuMemAllocFromPoolAsync"))
    return ((int (*)(u64*, size_t, void*, void*))fn)(key, size, NULL, NULL);
  else if (!strcmp(n, "cuMemCreate")) {
    static const int prop[4] = {1, 0, 1, 0}; /* pinned, no handle type, on device 0 */
    return ((int (*)(u64*, size_t, const int*, u64))fn)(key, size, prop, 0);
  } else if (!strcmp(n, "cuMemAddressReserve"))
    return ((int (*)(u64*, size_t, size_t, u64, u64))fn)(key, size, 0, 0, 0);
  else
    return -1;
  *key = (u64)(size_t)ptr;
  return status;
}

static int release(const struct function* f, const char* how, u64 key) {
  const struct function* free_f = f->free_name ? function_named(f->free_name) : NULL;
  void* fn = free_f ? find(how, free_f) : NULL;
  if (!fn) return 0;
  const char* n = free_f->name;
  if (!strcmp(n, "cudaFree") || !strcmp(n, "cudaFreeHost") || !strcmp(n, "cuMemFreeHost"))
    return ((int (*)(void*))fn)((void*)(size_t)key);
  if (!strcmp(n, "cudaFreeAsync")) return ((int (*)(void*, void*))fn)((void*)(size_t)key, NULL);
  if (!strcmp(n, "cuMemFreeAsync")) return ((int (*)(u64, void*))fn)(key, NULL);
  return ((int (*)(u64))fn)(key); /* cuMemFree_v2, cuMemRelease */
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "rtld-next") == 0) {
    int same = dlsym(RTLD_NEXT, "malloc") == dlsym(RTLD_DEFAULT, "malloc");
    printf("rtld-next %s\n", same ? "same" : "different");
    return same ? 0 : 1;
  }
  const struct function* f = argc >= 4 ? function_named(argv[2]) : NULL;
  if (!f || (f->free_name == NULL && strcmp(f->name, "cuMemAddressReserve") != 0)) {
    fprintf(stderr, "usage: gpu_program direct|dlsym|proc <allocation function> <bytes>... | rtld-next\n");
    return 2;
  }
  void* context = NULL; /* the driver's functions need a current context, as after the runtime's first call */
  if (!f->runtime && (cuInit(0) || cuDevicePrimaryCtxRetain(&context, 0) || cuCtxPushCurrent_v2(context))) return 1;
  void* fn = find(argv[1], f);
  if (!fn) {
    fprintf(stderr, "gpu_program: %s not found %s\n", f->name, argv[1]);
    return 1;
  }
  u64 keys[64];
  int kept = 0;
  for (int i = 3; i < argc && kept < 64; i++) {
    u64 size = strtoull(argv[i], NULL, 10), key = 0;
    int status = allocate(f, fn, size, &key);
    printf("%s %llu -> %d\n", f->name, size, status);
    fflush(stdout);
    if (status == 0) keys[kept++] = key;
  }
  for (int i = 0; i < kept; i++) release(f, argv[1], keys[i]);
  return 0;
}
