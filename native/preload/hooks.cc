// The hooks: what each interposed function does around the real one (see tracker.h). The fast paths of
// malloc, calloc, realloc and free count into the thread's own slot and nothing else; every other case
// (not yet initialized, inside the tracker, fault injection, a failure) goes to an out-of-line slow path.
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "preload/counters.h"
#include "preload/failure.h"
#include "preload/heap_profile.h"
#include "preload/inject.h"
#include "preload/mappings.h"
#include "preload/proc.h"
#include "preload/tracker.h"

#ifndef MREMAP_DONTUNMAP  // Linux 5.7; older glibc headers lack the name
#define MREMAP_DONTUNMAP 4
#endif

namespace clipmem {
namespace {

// Common ending for malloc-like calls (a new block, or NULL).
__attribute__((always_inline)) inline void* finish_alloc(int fn, void* ptr, uint64_t size, uint64_t alignment) {
  if (LIKELY(ptr)) {
    count_heap(fn, size, int64_t(usable(ptr)));
    heap_count_sample(fn, ptr, usable(ptr));
  } else {
    heap_failure(fn, size, 0, 0, alignment, nullptr, 0, errno, 0);
  }
  return ptr;
}

uint32_t overflow_flag(size_t nmemb, size_t size, uint64_t* total) {
  unsigned __int128 product = (unsigned __int128)nmemb * size;
  *total = uint64_t(product);
  return (product >> 64) ? CLIPMEM_FAILURE_SIZE_OVERFLOW : 0;
}

}  // namespace

namespace {
__attribute__((noinline)) void* malloc_slow(size_t size) {
  if (UNLIKELY(!real.malloc)) {
    if (resolving) return bootstrap_alloc(size);
    ensure_resolved();
  }
  if (UNLIKELY(any_injection) && tracking() && inject_heap(CLIPMEM_FN_MALLOC, size, 0, 0, 0, nullptr, 0, 0))
    return errno = ENOMEM, nullptr;
  void* ptr = real.malloc(size);
  if (!tracking()) return ptr;
  if (LIKELY(ptr)) {
    count_heap(CLIPMEM_FN_MALLOC, size, int64_t(usable(ptr)));
    heap_count_sample(CLIPMEM_FN_MALLOC, ptr, usable(ptr));
  } else
    heap_failure(CLIPMEM_FN_MALLOC, size, 0, 0, 0, nullptr, 0, errno, 0);
  return ptr;
}

// The fast path counted the call and its size before the call failed: failures stay out of the
// histogram, and heap_failure counts the call itself.
__attribute__((noinline, cold)) void* fast_alloc_failed(ClipmemThreadSlot* slot, int fn, uint64_t size, uint64_t nmemb,
                                                        uint64_t elem_size, uint32_t flags) {
  int error = errno;
  uint64_t bucket = histogram_bucket_fast(size);
  store(slot->histogram[bucket], load(slot->histogram[bucket]) - 1);
  store(slot->calls[fn], load(slot->calls[fn]) - 1);
  heap_failure(fn, size, nmemb, elem_size, 0, nullptr, 0, error, flags);
  errno = error;
  return nullptr;
}

// Out of line so that the fast paths keep no registers across them.
// A fast allocation's block (already counted) ran out grow_left: a new peak or a fold, then its sample count.
__attribute__((noinline)) void* grew(ClipmemThreadSlot* slot, int fn, void* ptr, int64_t bytes) {
  heap_grew(slot);
  if (sample_due(slot, bytes)) heap_sample(slot, fn, uintptr_t(ptr), uint64_t(bytes));
  return ptr;
}
// A block in a chunk of its own mapping (16 bytes of header): counted here, off the fast path.
__attribute__((noinline)) void* grew_mmapped(ClipmemThreadSlot* slot, int fn, void* ptr) {
  change_own_heap(slot, int64_t(chunk_usable(ptr)));
  heap_count_sample(fn, ptr, chunk_usable(ptr));
  return ptr;
}
// A block (already counted) whose bytes crossed this thread's next sample point (heap_profile.h).
__attribute__((noinline)) void* sampled(ClipmemThreadSlot* slot, int fn, void* ptr, int64_t bytes) {
  heap_sample(slot, fn, uintptr_t(ptr), uint64_t(bytes));
  return ptr;
}
__attribute__((noinline)) void shrank_then_free(ClipmemThreadSlot* slot, void* ptr) {
  heap_shrank(slot);
  real.free(ptr);
}
}  // namespace

// The end of a fast allocation: the new block's usable bytes into this thread's delta, then two
// countdowns (a possible new peak, the next sample point); a block that ends either goes out of line.
// shrink_left is left alone (counters.h): one instruction fewer on every allocation.
__attribute__((always_inline)) inline void* count_block(ClipmemThreadSlot* slot, int fn, void* ptr) {
  size_t header = static_cast<size_t*>(ptr)[-1];
  if (UNLIKELY(header & kChunkMmapped)) return grew_mmapped(slot, fn, ptr);
  int64_t bytes = heap_chunk_usable(header);
  add_own(slot->heap_delta, bytes);
  if (counts_down(slot->grow_left, bytes)) return grew(slot, fn, ptr, bytes);
  if (sample_due(slot, bytes)) return sampled(slot, fn, ptr, bytes);
  return ptr;
}

void* malloc_hook(size_t size) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot)) return malloc_slow(size);
  count_fast(slot, CLIPMEM_FN_MALLOC, size);
  slot->request = size;
  void* ptr = real.malloc(size);
  if (UNLIKELY(!ptr)) return fast_alloc_failed(slot, CLIPMEM_FN_MALLOC, slot->request, 0, 0, 0);
  return count_block(slot, CLIPMEM_FN_MALLOC, ptr);
}

namespace {
__attribute__((noinline)) void* calloc_slow(size_t nmemb, size_t size) {
  if (UNLIKELY(!real.calloc)) {
    if (resolving) {
      size_t total;
      return __builtin_mul_overflow(nmemb, size, &total) ? nullptr : bootstrap_alloc(total);
    }
    ensure_resolved();
  }
  if (!tracking()) return real.calloc(nmemb, size);
  uint64_t total;
  uint32_t flags = overflow_flag(nmemb, size, &total);
  if (UNLIKELY(any_injection) && inject_heap(CLIPMEM_FN_CALLOC, total, nmemb, size, 0, nullptr, 0, flags))
    return errno = ENOMEM, nullptr;
  void* ptr = real.calloc(nmemb, size);
  if (LIKELY(ptr)) {
    count_heap(CLIPMEM_FN_CALLOC, total, int64_t(usable(ptr)));
    heap_count_sample(CLIPMEM_FN_CALLOC, ptr, usable(ptr));
  } else
    heap_failure(CLIPMEM_FN_CALLOC, total, nmemb, size, 0, nullptr, 0, errno, flags);
  return ptr;
}
}  // namespace

void* calloc_hook(size_t nmemb, size_t size) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot)) return calloc_slow(nmemb, size);
  uint64_t total;
  uint32_t flags = overflow_flag(nmemb, size, &total);
  count_fast(slot, CLIPMEM_FN_CALLOC, total);
  void* ptr = real.calloc(nmemb, size);
  if (UNLIKELY(!ptr)) return fast_alloc_failed(slot, CLIPMEM_FN_CALLOC, total, nmemb, size, flags);
  return count_block(slot, CLIPMEM_FN_CALLOC, ptr);
}

namespace {
__attribute__((noinline)) void* realloc_slow(void* ptr, size_t size) {
  ensure_resolved();
  if (UNLIKELY(in_bootstrap(ptr))) {  // a bootstrap block moving to the real heap
    void* moved = malloc_hook(size);
    size_t old_size = bootstrap_size(ptr);
    if (moved) memcpy(moved, ptr, size < old_size ? size : old_size);
    return moved;
  }
  if (!tracking()) return real.realloc(ptr, size);
  size_t old_size = usable(ptr);
  if (UNLIKELY(any_injection) && inject_heap(CLIPMEM_FN_REALLOC, size, 0, 0, 0, ptr, old_size, 0))
    return errno = ENOMEM, nullptr;
  // A sampled block leaves the profile before glibc may hand its address to another thread; the new
  // block takes its own chance of being sampled.
  SampledBlock old = ptr && maybe_sampled(ptr) ? heap_unsample(uintptr_t(ptr)) : SampledBlock{};
  void* result = real.realloc(ptr, size);
  if (LIKELY(result || (ptr && size == 0))) {  // realloc(p, 0) frees p
    count_heap(CLIPMEM_FN_REALLOC, size, int64_t(usable(result)) - int64_t(old_size));
    heap_count_sample(CLIPMEM_FN_REALLOC, result, usable(result));
  } else {
    heap_resample(old, uintptr_t(ptr), old.bytes);
    heap_failure(CLIPMEM_FN_REALLOC, size, 0, 0, 0, ptr, old_size, errno, 0);
  }
  return result;
}

// realloc returned NULL on the fast path: it freed the block (size 0) or failed.
__attribute__((noinline, cold)) void* realloc_null(void* ptr, size_t size, uint64_t old_size) {
  if (size == 0)
    count_heap(CLIPMEM_FN_REALLOC, 0, -int64_t(old_size));
  else
    heap_failure(CLIPMEM_FN_REALLOC, size, 0, 0, 0, ptr, old_size, errno, 0);
  return nullptr;
}

}  // namespace

void* realloc_hook(void* ptr, size_t size) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot || !ptr)) return realloc_slow(ptr, size);
  size_t header = static_cast<size_t*>(ptr)[-1];
  // mmapped chunks, bootstrap blocks and sampled blocks
  if (UNLIKELY(header & kChunkMmapped) || maybe_sampled(ptr)) return realloc_slow(ptr, size);
  int64_t old_size = heap_chunk_usable(header);
  void* result = real.realloc(ptr, size);
  if (UNLIKELY(!result)) return realloc_null(ptr, size, uint64_t(old_size));
  count_fast(slot, CLIPMEM_FN_REALLOC, size);
  int64_t new_size = int64_t(chunk_usable(result));
  change_own_heap(slot, new_size - old_size);
  if (sample_due(slot, new_size)) heap_sample(slot, CLIPMEM_FN_REALLOC, uintptr_t(result), uint64_t(new_size));
  return result;
}

void* reallocarray_hook(void* ptr, size_t nmemb, size_t size) {
  ensure_resolved();
  if (!tracking() || !real.reallocarray || in_bootstrap(ptr)) {  // glibc cannot resize a bootstrap block
    size_t total;
    if (__builtin_mul_overflow(nmemb, size, &total)) return errno = ENOMEM, nullptr;
    return real.reallocarray && !in_bootstrap(ptr) ? real.reallocarray(ptr, nmemb, size) : realloc_hook(ptr, total);
  }
  uint64_t total;
  uint32_t flags = overflow_flag(nmemb, size, &total);
  size_t old_size = usable(ptr);
  if (UNLIKELY(any_injection) && inject_heap(CLIPMEM_FN_REALLOCARRAY, total, nmemb, size, 0, ptr, old_size, flags))
    return errno = ENOMEM, nullptr;
  SampledBlock old = ptr && maybe_sampled(ptr) ? heap_unsample(uintptr_t(ptr)) : SampledBlock{};
  void* result = real.reallocarray(ptr, nmemb, size);
  if (result) {
    count_heap(CLIPMEM_FN_REALLOCARRAY, total, int64_t(usable(result)) - int64_t(old_size));
    heap_count_sample(CLIPMEM_FN_REALLOCARRAY, result, usable(result));
  } else {
    heap_resample(old, uintptr_t(ptr), old.bytes);
    heap_failure(CLIPMEM_FN_REALLOCARRAY, total, nmemb, size, 0, ptr, old_size, errno, flags);
  }
  return result;
}

namespace {
__attribute__((noinline)) void free_slow(void* ptr) {
  if (!ptr || in_bootstrap(ptr)) return;
  ensure_resolved();
  if (tracking()) {
    if (maybe_sampled(ptr)) heap_unsample(uintptr_t(ptr));  // before glibc may hand the address out again
    count_heap(CLIPMEM_FN_FREE, 0, -int64_t(usable(ptr)));
  }
  real.free(ptr);
}
}  // namespace

void free_hook(void* ptr) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot)) return free_slow(ptr);
  // Sampled blocks, and NULL: the filter's counter of address 0 is held at 1 (heap_profile_start), so
  // free(NULL) leaves here before its header is read, without a test of its own.
  if (maybe_sampled(ptr)) return free_slow(ptr);
  // Read only once the fast path is on: glibc's chunks are verified then.
  size_t header = static_cast<size_t*>(ptr)[-1];
  if (UNLIKELY(header & kChunkMmapped)) return free_slow(ptr);  // mmapped chunks, bootstrap blocks
  bump_own(slot->calls[CLIPMEM_FN_FREE]);
  int64_t bytes = heap_chunk_usable(header);
  subtract_own(slot->heap_delta, bytes);
  slot->grow_left += bytes;  // exact (counters.h): an allocation churning at the peak stays on the fast path
  if (counts_down(slot->shrink_left, bytes)) return shrank_then_free(slot, ptr);
  real.free(ptr);
}

int posix_memalign_hook(void** out, size_t alignment, size_t size) {
  ensure_resolved();
  if (!tracking()) return real.posix_memalign(out, alignment, size);
  if (UNLIKELY(any_injection) && inject_heap(CLIPMEM_FN_POSIX_MEMALIGN, size, 0, 0, alignment, nullptr, 0, 0))
    return ENOMEM;
  int error = real.posix_memalign(out, alignment, size);
  if (LIKELY(error == 0)) {
    count_heap(CLIPMEM_FN_POSIX_MEMALIGN, size, int64_t(usable(*out)));
    heap_count_sample(CLIPMEM_FN_POSIX_MEMALIGN, *out, usable(*out));
  } else
    heap_failure(CLIPMEM_FN_POSIX_MEMALIGN, size, 0, 0, alignment, nullptr, 0, error, 0);  // returned, not errno
  return error;
}

namespace {
// The memalign family: one path around different real calls. The alignment is a callable so that
// valloc's and pvalloc's page size is asked only once the call is tracked, as before.
template <typename Call, typename Alignment>
__attribute__((always_inline)) inline void* aligned_hook(int fn, uint64_t size, Alignment alignment, Call call) {
  ensure_resolved();
  if (!tracking()) return call();
  if (UNLIKELY(any_injection) && inject_heap(fn, size, 0, 0, alignment(), nullptr, 0, 0))
    return errno = ENOMEM, nullptr;
  return finish_alloc(fn, call(), size, alignment());
}
uint64_t page_alignment() { return uint64_t(sysconf(_SC_PAGESIZE)); }
}  // namespace

void* aligned_alloc_hook(size_t alignment, size_t size) {
  return aligned_hook(
      CLIPMEM_FN_ALIGNED_ALLOC, size, [=] { return uint64_t(alignment); },
      [=] { return real.aligned_alloc(alignment, size); });
}
void* memalign_hook(size_t alignment, size_t size) {
  return aligned_hook(
      CLIPMEM_FN_MEMALIGN, size, [=] { return uint64_t(alignment); }, [=] { return real.memalign(alignment, size); });
}
void* valloc_hook(size_t size) {
  return aligned_hook(CLIPMEM_FN_VALLOC, size, page_alignment, [=] { return real.valloc(size); });
}
void* pvalloc_hook(size_t size) {
  return aligned_hook(CLIPMEM_FN_PVALLOC, size, page_alignment, [=] { return real.pvalloc(size); });
}

namespace {
// mmap and mmap64 are one function on 64-bit glibc; each keeps its own count in the call table.
void* mmap_any(int fn, void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  ensure_resolved();
  auto* call = fn == CLIPMEM_FN_MMAP64 && real.mmap64 ? real.mmap64 : real.mmap;
  if (!tracking()) return call(addr, length, prot, flags, fd, offset);
  FailureArgs args{fn};
  args.size = length;
  args.address = uintptr_t(addr);
  args.prot = prot;
  args.flags = flags;
  args.fd = (flags & MAP_ANONYMOUS) ? -1 : fd;
  args.offset = offset;
  if (UNLIKELY(injected(fn, args))) return errno = ENOMEM, MAP_FAILED;
  void* result = call(addr, length, prot, flags, fd, offset);
  count_call(fn);
  if (LIKELY(result != MAP_FAILED)) {
    Guard g;
    ErrnoKeeper keep;
    bump(my_slot()->histogram[clipmem_histogram_bucket(length)], my_slot());
    int kind = (flags & MAP_ANONYMOUS) ? kAnon : kFile;
    if (prot == PROT_NONE) kind = reprotected_kind(kind, PROT_NONE);
    uint64_t rounded = page_rounded(length);
    if (flags & MAP_FIXED) map_remove(uintptr_t(result), rounded);  // replaced whatever was there
    map_add(uintptr_t(result), rounded, kind);
    if (kind != kReserved) heap_count_sample(fn, result, rounded);  // mappings by the same sites as the heap
    maybe_sample();
  } else {
    args.error = errno;
    record_failure(args);
  }
  return result;
}
}  // namespace

void* mmap_hook(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  return mmap_any(CLIPMEM_FN_MMAP, addr, length, prot, flags, fd, offset);
}
void* mmap64_hook(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  return mmap_any(CLIPMEM_FN_MMAP64, addr, length, prot, flags, fd, offset);
}

int munmap_hook(void* addr, size_t length) {
  ensure_resolved();
  if (!tracking()) return real.munmap(addr, length);
  // A sampled mapping is known by its start: unmapping it, or its head, takes it out of the profile.
  SampledBlock old = maybe_sampled(addr) ? heap_unsample(uintptr_t(addr)) : SampledBlock{};
  int result = real.munmap(addr, length);
  count_call(CLIPMEM_FN_MUNMAP);
  if (result != 0) heap_resample(old, uintptr_t(addr), old.bytes);
  if (result == 0) {
    Guard g;
    ErrnoKeeper keep;
    map_remove(uintptr_t(addr), page_rounded(length));
    maybe_sample();
  }
  return result;
}

// A failure is an allocation failure when it makes private pages writable (RLIMIT_DATA, the commit
// limit) or has to split a mapping (vm.max_map_count); success moves bytes between the counters.
int mprotect_hook(void* addr, size_t length, int prot) {
  ensure_resolved();
  if (!tracking()) return real.mprotect(addr, length, prot);
  FailureArgs args{CLIPMEM_FN_MPROTECT};
  args.size = length;
  args.address = uintptr_t(addr);
  args.prot = prot;
  if (UNLIKELY(injected(CLIPMEM_FN_MPROTECT, args))) return errno = ENOMEM, -1;
  int result = real.mprotect(addr, length, prot);
  count_call(CLIPMEM_FN_MPROTECT);
  if (result == 0) {
    Guard g;
    ErrnoKeeper keep;
    map_reprotect(uintptr_t(addr), page_rounded(length), prot);
    maybe_sample();
  } else {
    args.error = errno;
    record_failure(args);
  }
  return result;
}

void* mremap_hook(void* old_address, size_t old_size, size_t new_size, int flags, void* new_address) {
  ensure_resolved();
  if (!tracking()) return real.mremap(old_address, old_size, new_size, flags, new_address);
  FailureArgs args{CLIPMEM_FN_MREMAP};
  args.size = new_size;
  args.old_size = old_size;
  args.address = uintptr_t(old_address);
  args.flags = flags;
  if (UNLIKELY(injected(CLIPMEM_FN_MREMAP, args))) return errno = ENOMEM, MAP_FAILED;
  SampledBlock old = maybe_sampled(old_address) ? heap_unsample(uintptr_t(old_address)) : SampledBlock{};
  void* result = real.mremap(old_address, old_size, new_size, flags, new_address);
  count_call(CLIPMEM_FN_MREMAP);
  if (result == MAP_FAILED)
    heap_resample(old, uintptr_t(old_address), old.bytes);
  else  // a sampled mapping stays sampled, at its new place and size
    heap_resample(old, uintptr_t(result), page_rounded(new_size));
  if (result != MAP_FAILED) {
    Guard g;
    ErrnoKeeper keep;
    bump(my_slot()->histogram[clipmem_histogram_bucket(new_size)], my_slot());
    uint64_t old_rounded = page_rounded(old_size);
    uint64_t new_rounded = page_rounded(new_size);
    uintptr_t old_start = uintptr_t(old_address), new_start = uintptr_t(result);
    int kind = map_kind_at(old_start, old_start + old_rounded);
    if (new_start == old_start) {  // resized in place: the end beyond the new size is gone, or the mapping grew
      if (new_rounded < old_rounded)
        map_remove(old_start + new_rounded, old_rounded - new_rounded);
      else if (new_rounded > old_rounded)
        map_add(old_start + old_rounded, new_rounded - old_rounded, kind);
    } else {
      // The pages moved: the range they left is unmapped (its head and tail, if it was inside a mapping, stay),
      // except with MREMAP_DONTUNMAP (the old range stays mapped, empty) or old_size 0 (a shared mapping duplicated).
      if (!(flags & MREMAP_DONTUNMAP) && old_size != 0) map_remove(old_start, old_rounded);
      if (flags & MREMAP_FIXED) map_remove(new_start, new_rounded);  // replaced whatever was there
      map_add(new_start, new_rounded, kind);
    }
    maybe_sample();
  } else {
    args.error = errno;
    record_failure(args);
  }
  return result;
}

// Weak: glibc has it from 2.18 on, and the prebuilt tracker loads on 2.17 too (docs/install.md), where the
// default stack size is then unknown (0).
extern "C" int pthread_getattr_default_np(pthread_attr_t* attr) __attribute__((weak));

int pthread_create_hook(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  ensure_resolved();
  if (!tracking()) return real.pthread_create(thread, attr, start, arg);
  FailureArgs args{CLIPMEM_FN_PTHREAD_CREATE};
  size_t stack_size = 0;
  {
    Guard g;
    pthread_attr_t defaults;
    if (attr)
      pthread_attr_getstacksize(attr, &stack_size);
    else if (pthread_getattr_default_np && pthread_getattr_default_np(&defaults) == 0) {
      pthread_attr_getstacksize(&defaults, &stack_size);
      pthread_attr_destroy(&defaults);
    }
  }
  args.size = stack_size;  // the thread's stack: what glibc maps, and what fails under a limit
  if (UNLIKELY(injected(CLIPMEM_FN_PTHREAD_CREATE, args))) return EAGAIN;
  int error = real.pthread_create(thread, attr, start, arg);
  count_call(CLIPMEM_FN_PTHREAD_CREATE);
  if (error != 0) {
    args.error = error;  // glibc turns the stack's ENOMEM into EAGAIN
    record_failure(args);
  }
  return error;
}

namespace {
// What fork asks the kernel to commit again for the child (vm.overcommit_memory=2 refuses it past the
// commit limit): the private writable memory, VmData, and the stack, VmStk. A refused fork leaves the
// parent as it was, so it is read only for a failure (or for a fault-injection rule that needs the size).
uint64_t private_writable_bytes() {
  char text[4096];
  if (read_small_file("/proc/self/status", text, sizeof text) <= 0) return 0;
  int64_t data = field_kib(text, "VmData:"), stack = field_kib(text, "VmStk:");
  return uint64_t((data > 0 ? data : 0) + (stack > 0 ? stack : 0));
}
}  // namespace

// A refused fork is Python's "OSError: [Errno 12] Cannot allocate memory" when a DataLoader or a pool
// starts its workers: the failure names what the child needed, so the commit limit can be checked.
pid_t fork_hook() {
  ensure_resolved();
  if (!tracking()) return real.fork();
  FailureArgs args{CLIPMEM_FN_FORK};
  if (UNLIKELY(any_injection)) args.size = private_writable_bytes();
  if (UNLIKELY(injected(CLIPMEM_FN_FORK, args))) return errno = ENOMEM, -1;
  pid_t pid = real.fork();
  if (pid == 0) return 0;  // the child, whose own record began inside the call (lifecycle.cc)
  count_call(CLIPMEM_FN_FORK);
  if (pid < 0) {
    args.error = errno;
    args.size = private_writable_bytes();
    record_failure(args);
    errno = args.error;
  }
  return pid;
}

}  // namespace clipmem
