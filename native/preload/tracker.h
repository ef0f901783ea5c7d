// The tracker library's interface to the preload file: preload.cc only forwards each interposed libc
// function to the matching hook here; tracker.cc holds all the logic (heaptrack's src/track split).
#pragma once
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

namespace clipmem {

void* malloc_hook(size_t size);
void* calloc_hook(size_t nmemb, size_t size);
void* realloc_hook(void* ptr, size_t size);
void* reallocarray_hook(void* ptr, size_t nmemb, size_t size);
void free_hook(void* ptr);
int posix_memalign_hook(void** out, size_t alignment, size_t size);
void* aligned_alloc_hook(size_t alignment, size_t size);
void* memalign_hook(size_t alignment, size_t size);
void* valloc_hook(size_t size);
void* pvalloc_hook(size_t size);
void* mmap_hook(int fn, void* addr, size_t length, int prot, int flags, int fd, off_t offset);
int munmap_hook(void* addr, size_t length);
int mprotect_hook(void* addr, size_t length, int prot);
void* mremap_hook(void* old_address, size_t old_size, size_t new_size, int flags, void* new_address);
int pthread_create_hook(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg);

}  // namespace clipmem
