// The allocation tracker: counts every allocation and records every failed one, byte-exact, into a
// MAP_SHARED record file (native/record/record.h) that outlives a SIGKILL.
//
// Rules that keep it safe inside any process:
// - the success path takes no lock and allocates nothing: per-thread counters in the record, plus a few
//   relaxed atomics; everything slow (files, /proc, stacks) happens only on failures and rare samples;
// - a reentrancy guard in initial-exec TLS: whatever the tracker itself calls passes through untracked;
// - dlsym may call calloc before the real one is known: served from a static bootstrap arena;
// - errno is preserved across everything the tracker does;
// - the first hooked call initializes (so frees of blocks allocated before tracking cannot unbalance the
//   counters), the unwinder is warmed then so that capturing a stack later never allocates;
// - a forked child gets its own record, seeded with the parent's counters (it inherits the heap);
// - initialization failures are loud: one line on stderr naming the cause.
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "preload/tracker.h"
#include "record/record.h"
#include "record/ring.h"

#ifndef MREMAP_DONTUNMAP  // Linux 5.7; older glibc headers lack the name
#define MREMAP_DONTUNMAP 4
#endif

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace clipmem {
namespace {

// ---------------------------------------------------------------- the real functions

struct RealFunctions {
  void* (*malloc)(size_t);
  void* (*calloc)(size_t, size_t);
  void* (*realloc)(void*, size_t);
  void* (*reallocarray)(void*, size_t, size_t);
  void (*free)(void*);
  int (*posix_memalign)(void**, size_t, size_t);
  void* (*aligned_alloc)(size_t, size_t);
  void* (*memalign)(size_t, size_t);
  void* (*valloc)(size_t);
  void* (*pvalloc)(size_t);
  void* (*mmap)(void*, size_t, int, int, int, off_t);
  void* (*mmap64)(void*, size_t, int, int, int, off_t);
  int (*munmap)(void*, size_t);
  int (*mprotect)(void*, size_t, int);
  void* (*mremap)(void*, size_t, size_t, int, ...);
  int (*pthread_create)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
};

RealFunctions real;
int resolving = 0;  // set while dlsym runs: its allocations come from the bootstrap arena

// dlsym's own calloc (and whatever else runs before the real allocator is known).
alignas(64) char bootstrap_arena[64 * 1024];
size_t bootstrap_used = 0;

bool in_bootstrap(const void* ptr) {
  return uintptr_t(ptr) - uintptr_t(bootstrap_arena) < sizeof bootstrap_arena;
}

// glibc's chunk header flag for a chunk of its own mapping (malloc/malloc.c IS_MMAPPED).
constexpr size_t kChunkMmapped = 2;

// Each block is preceded by a header word that reads as a glibc mmapped chunk, so that free's fast path,
// which sends mmapped chunks to the slow path, needs no separate test for bootstrap blocks; the word
// before it holds the size asked, for realloc to copy no more than the block holds.
void* bootstrap_alloc(size_t size) {
  // Larger than the whole arena: a plain allocation failure (and no wrap-around in the rounding below).
  if (size > sizeof bootstrap_arena) return errno = ENOMEM, nullptr;
  size_t start = (__atomic_fetch_add(&bootstrap_used, ((size + 15) & ~size_t(15)) + 16, __ATOMIC_RELAXED));
  if (start + 16 + size > sizeof bootstrap_arena) {
    static const char message[] = "clip-mem tracker: bootstrap arena exhausted while resolving libc symbols\n";
    (void)!write(2, message, sizeof message - 1);
    abort();
  }
  char* block = bootstrap_arena + start + 16;
  reinterpret_cast<size_t*>(block)[-1] = kChunkMmapped;
  reinterpret_cast<size_t*>(block)[-2] = size;
  return block;  // static storage: already zero, as calloc promises
}

template <typename T>
void resolve_one(T& slot, const char* name) {
  slot = reinterpret_cast<T>(dlsym(RTLD_NEXT, name));
}

void resolve_real_functions() {
  resolving = 1;
  resolve_one(real.calloc, "calloc");  // first: dlsym itself may need calloc
  resolve_one(real.malloc, "malloc");
  resolve_one(real.realloc, "realloc");
  resolve_one(real.reallocarray, "reallocarray");
  resolve_one(real.free, "free");
  resolve_one(real.posix_memalign, "posix_memalign");
  resolve_one(real.aligned_alloc, "aligned_alloc");
  resolve_one(real.memalign, "memalign");
  resolve_one(real.valloc, "valloc");
  resolve_one(real.pvalloc, "pvalloc");
  resolve_one(real.mmap, "mmap");
  resolve_one(real.mmap64, "mmap64");
  resolve_one(real.munmap, "munmap");
  resolve_one(real.mprotect, "mprotect");
  resolve_one(real.mremap, "mremap");
  resolve_one(real.pthread_create, "pthread_create");
  resolving = 0;
  if (!real.malloc || !real.calloc || !real.free || !real.mmap || !real.munmap || !real.mprotect || !real.pthread_create) {
    static const char message[] = "clip-mem tracker: cannot find libc's allocator with dlsym(RTLD_NEXT)\n";
    (void)!write(2, message, sizeof message - 1);
    abort();
  }
}

size_t bootstrap_size(const void* ptr) { return static_cast<const size_t*>(ptr)[-2]; }

inline void ensure_resolved() {
  if (UNLIKELY(!real.free)) resolve_real_functions();
}

// ---------------------------------------------------------------- state

// One initial-exec TLS block: the hot path reads one field of it, `fast`, which folds every condition
// of the fast path into a single null test.
struct ThreadState {
  // This thread's own slot while the fast path may count into it: tracking, not inside the tracker, an
  // own (not the shared) slot, glibc's chunk headers verified, no fault injection. Else null.
  ClipmemThreadSlot* fast;
  ClipmemThreadSlot* slot;  // this thread's counters (null until its first tracked call)
  int guard;                // > 0 while the tracker itself runs: calls pass through untracked
};
__thread ThreadState tls __attribute__((tls_model("initial-exec"))) = {nullptr, nullptr, 0};

enum State { kUninitialized, kInitializing, kTracking, kDisabled };
int state = kUninitialized;

// Set at start when real.malloc is glibc's and its chunk headers read as malloc_usable_size says.
bool glibc_chunks = false;
bool any_injection = false;  // CLIPMEM_FAIL set: every call takes the slow path, which injects

ClipmemRecordHeader* record = nullptr;
ClipmemThreadSlot* slots = nullptr;
ClipmemFailure* failures = nullptr;
ClipmemSample* timeline = nullptr;
ClipmemPhase* phases = nullptr;
ClipmemModule* modules = nullptr;
char record_dir[CLIPMEM_PATH_BYTES];
char record_path[CLIPMEM_PATH_BYTES + 32];

// Fault injection (CLIPMEM_FAIL).
struct Injection {
  bool active;
  uint64_t nth;    // fail exactly the nth call (1-based), 0: unused
  bool has_above;
  uint64_t above;  // fail every call asking for more than this many bytes
  uint64_t calls;
};
Injection injections[CLIPMEM_FN_COUNT];

// Heap bytes a thread accumulates before folding them into the shared counter.
constexpr int64_t kFoldBytes = 1 << 20;
// The kernel's page size (4 KiB on x86-64, 16 or 64 KiB on some arm64 kernels): mappings count whole pages.
uint64_t page_size = 4096;
inline uint64_t page_rounded(uint64_t length) { return (length + page_size - 1) & ~(page_size - 1); }
constexpr uint64_t kSampleIntervalNs = 10 * 1000 * 1000;
constexpr uint64_t kMinSampleGapNs = 1000 * 1000;
constexpr int64_t kSampleChangeBytes = 64 << 20;
uint64_t last_sample_ns = 0;
int64_t last_sample_total = 0;

// Recomputes tls.fast after its slot, its guard or the global conditions changed.
inline void refresh_fast() {
  ClipmemThreadSlot* slot = tls.slot;
  bool fast = slot && !slot->shared && tls.guard == 0 && glibc_chunks && !any_injection &&
              __atomic_load_n(&state, __ATOMIC_ACQUIRE) == kTracking;
  tls.fast = fast ? slot : nullptr;
}

struct Guard {
  Guard() {
    ++tls.guard;
    tls.fast = nullptr;
  }
  ~Guard() {
    if (--tls.guard == 0) refresh_fast();
  }
};

struct ErrnoKeeper {
  int saved = errno;
  ~ErrnoKeeper() { errno = saved; }
};

template <typename T>
inline T load(const T& x) { return __atomic_load_n(&x, __ATOMIC_RELAXED); }
template <typename T>
inline void store(T& x, T v) { __atomic_store_n(&x, v, __ATOMIC_RELAXED); }
template <typename T>
inline T add(T& x, T v) { return __atomic_add_fetch(&x, v, __ATOMIC_RELAXED); }

inline void raise_peak(int64_t& peak, int64_t value) {
  int64_t seen = load(peak);
  while (value > seen && !__atomic_compare_exchange_n(&peak, &seen, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void say(const char* a, const char* b = "", const char* c = "", const char* d = "") {
  char line[1024];
  int n = snprintf(line, sizeof line, "clip-mem tracker (pid %d): %s%s%s%s\n", int(getpid()), a, b, c, d);
  if (n > 0) (void)!write(2, line, size_t(n) < sizeof line ? size_t(n) : sizeof line - 1);
}

// ---------------------------------------------------------------- /proc readers (no allocation)

// Reads a small file into buf (NUL-terminated); returns the length or -1.
ssize_t read_small_file(const char* path, char* buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t used = 0;
  while (used + 1 < size) {
    ssize_t n = read(fd, buf + used, size - 1 - used);
    if (n <= 0) break;
    used += size_t(n);
  }
  close(fd);
  buf[used] = 0;
  return ssize_t(used);
}

// "Key:   1234 kB" -> bytes; -1 if the key is absent.
int64_t field_kib(const char* text, const char* key) {
  const char* at = strstr(text, key);
  if (!at) return -1;
  at += strlen(key);
  while (*at == ' ' || *at == '\t') ++at;
  return int64_t(strtoll(at, nullptr, 10)) * 1024;
}

int64_t read_number_file(const char* path) {
  char buf[64];
  if (read_small_file(path, buf, sizeof buf) <= 0) return -1;
  return strtoll(buf, nullptr, 10);
}

// One pass over /proc/self/maps: returns the number of mappings (-1 if unreadable). With `address`
// nonzero (failed mprotect calls only: the tracker's own table keeps no sharing flags) it also describes
// the mapping holding it: MAP_SHARED or MAP_PRIVATE, with MAP_ANONYMOUS when no file backs it, into
// *flags, and its file (if any) into path.
int64_t scan_maps(uintptr_t address, int* flags, char* path, size_t path_size) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096], line[CLIPMEM_PATH_BYTES + 128];
  size_t used = 0;
  int64_t lines = 0;
  bool describe = address != 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        if (describe && used + 1 < sizeof line) line[used++] = buf[i];
        continue;
      }
      ++lines;
      if (!describe) continue;
      line[used] = 0;
      used = 0;
      // "start-end perms offset dev inode   path"
      char* end = nullptr;
      uintptr_t start = uintptr_t(strtoull(line, &end, 16));
      if (*end != '-') continue;
      uintptr_t stop = uintptr_t(strtoull(end + 1, &end, 16));
      if (address < start || address >= stop || strlen(end) < 5) continue;
      describe = false;
      *flags = end[4] == 's' ? MAP_SHARED : MAP_PRIVATE;
      const char* field = end + 5;
      for (int skip = 0; skip < 3; ++skip) {  // offset, device, inode
        while (*field == ' ') ++field;
        while (*field && *field != ' ') ++field;
      }
      while (*field == ' ') ++field;
      if (*field == '/') snprintf(path, path_size, "%s", field);
      else *flags |= MAP_ANONYMOUS, path[0] = 0;
    }
  }
  close(fd);
  return lines;
}

void read_statm(int64_t* vm_size, int64_t* rss) {
  char buf[256];
  *vm_size = *rss = -1;
  if (read_small_file("/proc/self/statm", buf, sizeof buf) <= 0) return;
  char* end = nullptr;
  long long size = strtoll(buf, &end, 10);
  long long resident = strtoll(end, nullptr, 10);
  *vm_size = size * int64_t(page_size);
  *rss = resident * int64_t(page_size);
}

// ---------------------------------------------------------------- thread slots and counters

inline ClipmemThreadSlot* shared_slot() { return &slots[CLIPMEM_THREAD_SLOTS - 1]; }

// The heap_delta above which an own slot's next allocation may set a new peak (or must fold): the room
// between the peak and the folded heap, at most the fold size. Other threads' folds make it stale,
// which costs at most one extra check or misses less than their unfolded bytes (the documented bound).
inline int64_t grow_limit_now(int64_t delta) {
  int64_t room = load(record->heap_peak) - load(record->heap_current);
  if (room < delta) room = delta;
  return room < kFoldBytes ? room : kFoldBytes;
}

__attribute__((always_inline)) inline ClipmemThreadSlot* my_slot() {
  ClipmemThreadSlot* slot = tls.slot;
  if (LIKELY(slot)) return slot;
  uint32_t index = __atomic_fetch_add(&record->slots_used, 1u, __ATOMIC_RELAXED);
  if (index >= CLIPMEM_THREAD_SLOTS - 1) {
    store(record->slots_used, uint32_t(CLIPMEM_THREAD_SLOTS));
    slot = shared_slot();
  } else {
    slot = &slots[index];
    store(slot->tid, int32_t(syscall(SYS_gettid)));
    store(slot->grow_limit, grow_limit_now(0));
  }
  tls.slot = slot;
  refresh_fast();
  return slot;
}

inline void bump(uint64_t& counter, ClipmemThreadSlot* slot) {
  if (UNLIKELY(slot == shared_slot())) add(counter, uint64_t(1));
  else store(counter, load(counter) + 1);
}

int64_t mapped_total() {
  return load(record->heap_current) + load(record->anon_mapped) + load(record->file_mapped);
}

void take_sample(uint64_t now) {
  uint64_t sequence;
  ClipmemSample* sample = claim_ring_entry(&record->samples_total, timeline, CLIPMEM_TIMELINE_CAPACITY, &sequence);
  sample->time_ns = now;
  sample->heap_current = load(record->heap_current);
  sample->anon_mapped = load(record->anon_mapped);
  sample->file_mapped = load(record->file_mapped);
  sample->reserved_mapped = load(record->reserved_mapped);
  read_statm(&sample->vm_size, &sample->rss);
  sample->phase_index = load(record->current_phase);
  publish_ring_entry(sample, sequence);
  raise_peak(record->vm_peak, sample->vm_size);
  raise_peak(record->rss_peak, sample->rss);
}

// Called after counters changed by a fold or a mapping: a sample every 10 ms of activity, or sooner after
// a change of 64 MiB, never closer than 1 ms.
void maybe_sample() {
  uint64_t now = now_ns();
  uint64_t last = load(last_sample_ns);
  int64_t total = mapped_total();
  int64_t change = total - load(last_sample_total);
  if (change < 0) change = -change;
  if (now - last < kMinSampleGapNs) return;
  if (now - last < kSampleIntervalNs && change < kSampleChangeBytes) return;
  if (!__atomic_compare_exchange_n(&last_sample_ns, &last, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
  store(last_sample_total, total);
  Guard g;
  ErrnoKeeper keep;
  take_sample(now);
}

void fold(ClipmemThreadSlot* slot) {
  int64_t delta = slot == shared_slot() ? __atomic_exchange_n(&slot->heap_delta, int64_t(0), __ATOMIC_RELAXED)
                                        : load(slot->heap_delta);
  if (slot != shared_slot()) store(slot->heap_delta, int64_t(0));
  int64_t current = add(record->heap_current, delta);
  raise_peak(record->heap_peak, current);
  if (slot != shared_slot()) store(slot->grow_limit, grow_limit_now(0));
  maybe_sample();
}

// An own slot's heap_delta passed its grow_limit: a new peak, or time to fold.
__attribute__((noinline)) void heap_grew(ClipmemThreadSlot* slot, int64_t delta) {
  if (delta > kFoldBytes) return fold(slot);
  raise_peak(record->heap_peak, load(record->heap_current) + delta);
  store(slot->grow_limit, grow_limit_now(delta));
}

// The fast path counts into this thread's own slot, of which it is the only writer: no lock prefix.
// An increment is one add to memory, written as asm because relaxed atomics compile to a load, an add
// and a store; its store is one aligned 8-byte write, which a reader never sees torn.
__attribute__((always_inline)) inline void bump_own(uint64_t& counter) {
#if defined(__x86_64__)
  asm volatile("addq $1, %0" : "+m"(counter));
#else
  store(counter, load(counter) + 1);
#endif
}
__attribute__((always_inline)) inline void count_fast(ClipmemThreadSlot* slot, int fn, uint64_t requested) {
  bump_own(slot->calls[fn]);
  bump_own(slot->histogram[uint64_t(clipmem_histogram_bucket(requested))]);
}
// An allocation only compares the new delta with the slot's grow_limit; a free only checks the fold.
__attribute__((always_inline)) inline bool grows_past_limit(ClipmemThreadSlot* slot, int64_t bytes, int64_t* delta) {
  *delta = load(slot->heap_delta) + bytes;
  store(slot->heap_delta, *delta);
  return UNLIKELY(*delta > slot->grow_limit);  // only this thread reads or writes it: a plain load
}
__attribute__((always_inline)) inline bool shrinks_past_fold(ClipmemThreadSlot* slot, int64_t bytes) {
  int64_t delta = load(slot->heap_delta) - bytes;
  store(slot->heap_delta, delta);
  return UNLIKELY(delta < -kFoldBytes);
}

__attribute__((always_inline)) inline void count_heap(int fn, size_t requested, int64_t bytes) {
  ClipmemThreadSlot* slot = my_slot();
  bump(slot->calls[fn], slot);
  if (fn != CLIPMEM_FN_FREE) bump(slot->histogram[clipmem_histogram_bucket(requested)], slot);
  int64_t delta;
  if (UNLIKELY(slot == shared_slot())) delta = add(slot->heap_delta, bytes);
  else {
    delta = load(slot->heap_delta) + bytes;
    store(slot->heap_delta, delta);
  }
  if (UNLIKELY(delta > kFoldBytes || delta < -kFoldBytes)) fold(slot);
  else if (bytes > 0) {
    int64_t current = load(record->heap_current) + delta;
    if (UNLIKELY(current > load(record->heap_peak))) raise_peak(record->heap_peak, current);
  }
}

inline void count_call(int fn) {
  ClipmemThreadSlot* slot = my_slot();
  bump(slot->calls[fn], slot);
}

// ---------------------------------------------------------------- mapping table

// Mappings the tracker saw, by start address, so that munmap/mremap can subtract what mmap added.
// Open addressing without locks: a key is claimed with a CAS; removal leaves a tombstone.
constexpr size_t kMapSlots = 1 << 17;
constexpr uintptr_t kTombstone = 1;
struct MapEntry {
  uintptr_t start;
  uint64_t length;
  int kind;
};
MapEntry map_table[kMapSlots];
enum MapKind { kAnon, kFile, kReserved };
// Added to kReserved for a file mapping made PROT_NONE: mprotect back to readable counts it as file again.
constexpr int kReservedFromFile = 4;

size_t map_hash(uintptr_t start) { return (start >> 12) * 0x9E3779B97F4A7C15ull >> (64 - 17); }

int64_t& kind_counter(int kind) {
  kind &= ~kReservedFromFile;
  return kind == kAnon ? record->anon_mapped : kind == kFile ? record->file_mapped : record->reserved_mapped;
}
int64_t& kind_peak(int kind) {
  kind &= ~kReservedFromFile;
  return kind == kAnon ? record->anon_peak : kind == kFile ? record->file_peak : record->reserved_peak;
}

// Puts an entry in the table without counting it (the caller has counted its bytes).
void map_insert(uintptr_t start, uint64_t length, int kind) {
  size_t i = map_hash(start);
  for (size_t probes = 0; probes < 64; ++probes, i = (i + 1) & (kMapSlots - 1)) {
    uintptr_t key = load(map_table[i].start);
    if (key != 0 && key != kTombstone) continue;
    if (!__atomic_compare_exchange_n(&map_table[i].start, &key, uintptr_t(~0ull), false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
      continue;
    map_table[i].length = length;
    map_table[i].kind = kind;
    __atomic_store_n(&map_table[i].start, start, __ATOMIC_RELEASE);
    return;
  }
  // Table crowded: the mapping stays counted; its munmap will land in unmapped_unknown.
}

void map_add(uintptr_t start, uint64_t length, int kind) {
  raise_peak(kind_peak(kind), add(kind_counter(kind), int64_t(length)));
  map_insert(start, length, kind);
}

// Removes the entry starting at `start`; returns false if the tracker never saw it.
bool map_take(uintptr_t start, MapEntry* out) {
  size_t i = map_hash(start);
  for (size_t probes = 0; probes < 64; ++probes, i = (i + 1) & (kMapSlots - 1)) {
    uintptr_t key = __atomic_load_n(&map_table[i].start, __ATOMIC_ACQUIRE);
    if (key == 0) return false;
    if (key != start) continue;
    if (!__atomic_compare_exchange_n(&map_table[i].start, &key, uintptr_t(~0ull), false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
      return false;
    *out = map_table[i];
    out->start = start;
    __atomic_store_n(&map_table[i].start, kTombstone, __ATOMIC_RELEASE);
    return true;
  }
  return false;
}

// Removes the entry that contains `address` (it starts before it), scanning the whole table: only for
// munmap/mprotect of a range that starts inside a mapping, not on any allocation path. If none contains it,
// sets *next to the lowest tracked start in (address, end), or leaves it at end.
bool map_take_containing(uintptr_t address, uintptr_t end, MapEntry* out, uintptr_t* next) {
  for (size_t i = 0; i < kMapSlots; ++i) {
    uintptr_t key = __atomic_load_n(&map_table[i].start, __ATOMIC_ACQUIRE);
    if (key == 0 || key == kTombstone || key == uintptr_t(~0ull)) continue;
    if (key > address) {
      if (key < *next && key < end) *next = key;
      continue;
    }
    if (address - key >= __atomic_load_n(&map_table[i].length, __ATOMIC_RELAXED)) continue;
    if (!__atomic_compare_exchange_n(&map_table[i].start, &key, uintptr_t(~0ull), false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
      continue;
    // Owned now; another thread may have replaced the entry between the look and the CAS: check again.
    if (address - key < map_table[i].length) {
      *out = map_table[i];
      out->start = key;
      __atomic_store_n(&map_table[i].start, kTombstone, __ATOMIC_RELEASE);
      return true;
    }
    __atomic_store_n(&map_table[i].start, key, __ATOMIC_RELEASE);
  }
  return false;
}

// Takes the tracked entry holding `start` (by its exact start, else by a scan). Without one, returns the
// untracked bytes from `start` up to the next tracked mapping in the range (or its end) in *gap.
bool map_take_at(uintptr_t start, uintptr_t end, MapEntry* out, uint64_t* gap) {
  if (map_take(start, out)) return true;
  uintptr_t next = end;
  if (map_take_containing(start, end, out, &next)) return true;
  *gap = next - start;
  return false;
}

// The kind of the tracked mapping holding `start` (anonymous if the tracker never saw it); it stays tracked.
int map_kind_at(uintptr_t start, uintptr_t end) {
  MapEntry entry;
  uint64_t gap;
  if (!map_take_at(start, end, &entry, &gap)) return kAnon;
  map_insert(entry.start, entry.length, entry.kind);
  return entry.kind;
}

// Subtracts [start, start+length) from what the tracker counts as mapped: whole mappings, their heads,
// middles and tails (the parts outside the range stay tracked).
void map_remove(uintptr_t start, uint64_t length) {
  uintptr_t end = start + length;
  while (start < end) {
    MapEntry entry;
    uint64_t gap;
    if (!map_take_at(start, end, &entry, &gap)) {
      add(record->unmapped_unknown, int64_t(gap));
      start += gap;
      continue;
    }
    uintptr_t entry_end = entry.start + entry.length;
    uintptr_t cut_end = entry_end < end ? entry_end : end;
    add(kind_counter(entry.kind), -int64_t(cut_end - start));
    if (start > entry.start) map_insert(entry.start, start - entry.start, entry.kind);
    if (entry_end > cut_end) map_insert(cut_end, entry_end - cut_end, entry.kind);
    start = cut_end;
  }
}

// The kind a mapping of `kind` has after mprotect(prot): PROT_NONE reserves it, anything else commits it.
int reprotected_kind(int kind, int prot) {
  if (prot == PROT_NONE) return kind == kAnon ? kReserved : kind == kFile ? kReserved | kReservedFromFile : kind;
  return kind == kReserved ? kAnon : kind == (kReserved | kReservedFromFile) ? kFile : kind;
}

// Moves the tracked bytes of [start, start+length) between the reserved and the anonymous/file counters
// (V8 reserves PROT_NONE and commits pages with mprotect); the parts outside the range keep their kind.
void map_reprotect(uintptr_t start, uint64_t length, int prot) {
  uintptr_t end = start + length;
  while (start < end) {
    MapEntry entry;
    uint64_t gap;
    if (!map_take_at(start, end, &entry, &gap)) {  // untracked: nothing counted to move
      start += gap;
      continue;
    }
    uintptr_t entry_end = entry.start + entry.length;
    uintptr_t cut_end = entry_end < end ? entry_end : end;
    int kind = reprotected_kind(entry.kind, prot);
    if (kind == entry.kind) {
      map_insert(entry.start, entry.length, entry.kind);
    } else {
      int64_t moved = int64_t(cut_end - start);
      add(kind_counter(entry.kind), -moved);
      raise_peak(kind_peak(kind), add(kind_counter(kind), moved));
      if (start > entry.start) map_insert(entry.start, start - entry.start, entry.kind);
      map_insert(start, uint64_t(moved), kind);
      if (entry_end > cut_end) map_insert(cut_end, entry_end - cut_end, entry.kind);
    }
    start = cut_end;
  }
}

// ---------------------------------------------------------------- failures

struct FailureArgs {
  int fn;
  uint64_t size = 0, nmemb = 0, elem_size = 0, alignment = 0, old_size = 0, address = 0;
  int prot = 0, flags = 0, fd = -1, error = ENOMEM;
  int64_t offset = 0;
  uint32_t failure_flags = 0;
};

void describe_frame(void* address, uint16_t* module, char* symbol);

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
  // The stack starts at the caller of the interposed function: frames inside this library are dropped.
  void* frames[CLIPMEM_STACK_DEPTH + 8];
  int depth = backtrace(frames, CLIPMEM_STACK_DEPTH + 8);
  int skip = 0;
  Dl_info own, info;
  if (dladdr(reinterpret_cast<void*>(&record_failure), &own)) {
    while (skip < depth && dladdr(static_cast<char*>(frames[skip]) - 1, &info) && info.dli_fbase == own.dli_fbase) ++skip;
  }
  f->stack_depth = uint32_t(depth - skip > CLIPMEM_STACK_DEPTH ? CLIPMEM_STACK_DEPTH : depth - skip);
  for (uint32_t i = 0; i < f->stack_depth; ++i) {
    f->stack[i] = uint64_t(uintptr_t(frames[i + skip]));
    describe_frame(frames[i + skip], &f->frame_module[i], f->frame_symbol[i]);
  }
  publish_ring_entry(f, sequence);
  take_sample(f->time_ns);
}

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

// Decides whether fault injection fails this call.
bool inject(int fn, uint64_t size) {
  Injection& rule = injections[fn];
  if (!rule.active) return false;
  uint64_t call = __atomic_add_fetch(&rule.calls, uint64_t(1), __ATOMIC_RELAXED);
  if ((rule.nth && call == rule.nth) || (rule.has_above && size > rule.above)) {
    add(record->injected_faults, 1u);
    return true;
  }
  return false;
}

int fn_by_name(const char* name, size_t length) {
  static const char* const names[] = CLIPMEM_FN_NAMES;
  for (int i = 0; i < CLIPMEM_FN_COUNT; ++i)
    if (strlen(names[i]) == length && strncmp(names[i], name, length) == 0) return i;
  return -1;
}

// CLIPMEM_FAIL="fn:nth=N,fn:above=S,...". A bad rule is loud and ignored.
void parse_injections(const char* spec) {
  while (spec && *spec) {
    const char* end = strchr(spec, ',');
    size_t length = end ? size_t(end - spec) : strlen(spec);
    const char* colon = static_cast<const char*>(memchr(spec, ':', length));
    int fn = colon ? fn_by_name(spec, size_t(colon - spec)) : -1;
    char* number_end = nullptr;
    unsigned long long value = 0;
    bool nth = false, ok = false;
    if (fn >= 0) {
      const char* number = nullptr;
      if (strncmp(colon + 1, "nth=", 4) == 0) nth = true, number = colon + 5;
      else if (strncmp(colon + 1, "above=", 6) == 0) number = colon + 7;
      // Digits only, up to the rule's end: strtoull alone takes "" as 0 (nth=0 never fails, above=0
      // fails everything) and "-1" as 2^64-1.
      if (number && *number >= '0' && *number <= '9') value = strtoull(number, &number_end, 10);
      ok = number_end == spec + length && !(nth && value == 0);
    }
    if (!ok) {
      char rule[128];
      snprintf(rule, sizeof rule, "%.*s", int(length), spec);
      say(CLIPMEM_ENV_FAIL ": cannot read rule \"", rule,
          "\"; write fn:nth=N (N >= 1) or fn:above=BYTES with fn one of malloc, calloc, realloc, ..., mmap, mremap, pthread_create, mprotect");
    } else {
      injections[fn].active = true;
      if (nth) injections[fn].nth = value;
      else injections[fn].has_above = true, injections[fn].above = value;
      any_injection = true;
    }
    spec = end ? end + 1 : nullptr;
  }
}

// ---------------------------------------------------------------- record creation, init, fork, exit

// glibc's usable size read straight from the chunk header (what malloc_usable_size computes, without the
// call): the size field before the block, low bits are flags; mmapped chunks carry one more word of header.
// Used only when start-up checks proved the allocator is glibc's and the two agree (glibc_chunks).
inline size_t chunk_usable(void* ptr) {
  size_t header = static_cast<size_t*>(ptr)[-1];
  return (header & ~size_t(7)) - ((header & kChunkMmapped) ? 16 : 8);
}

__attribute__((always_inline)) inline size_t usable(void* ptr) {
  if (!ptr) return 0;
  return LIKELY(glibc_chunks) ? chunk_usable(ptr) : malloc_usable_size(ptr);
}

// True if real.malloc is glibc's and its chunk headers read as malloc_usable_size says, for small,
// large (mmapped) and aligned blocks.
bool check_glibc_chunks() {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (!libc) return false;
  bool same = dlsym(libc, "malloc") == reinterpret_cast<void*>(real.malloc) &&
              dlsym(libc, "free") == reinterpret_cast<void*>(real.free);
  dlclose(libc);
  if (!same) return false;
  const size_t sizes[] = {1, 24, 100, 4000, 200000, 4 << 20};
  for (size_t size : sizes) {
    void* block = real.malloc(size);
    if (!block) return false;
    bool agree = chunk_usable(block) == malloc_usable_size(block);
    real.free(block);
    if (!agree) return false;
  }
  void* aligned = nullptr;
  if (real.posix_memalign(&aligned, 4096, 5000) != 0) return false;
  bool agree = chunk_usable(aligned) == malloc_usable_size(aligned);
  real.free(aligned);
  return agree;
}

bool create_record(int parent_pid) {
  int fd = -1;
  uint32_t generation = 0;
  for (; generation < 1000; ++generation) {
    snprintf(record_path, sizeof record_path, "%s/%d.%u.rec", record_dir, int(getpid()), generation);
    fd = open(record_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 || errno != EEXIST) break;
  }
  if (fd < 0) {
    say("cannot create a record in ", record_dir, ": ", strerror(errno));
    return false;
  }
  uint64_t size = clipmem_record_size();
  // Blocks reserved now, not a sparse file: on a full filesystem (a small tmpfs) the first write to a page
  // of the mapping would kill the program with SIGBUS instead of failing here.
  if (int error = posix_fallocate(fd, 0, off_t(size))) {
    say("cannot size the record ", record_path, ": ", strerror(error));
    close(fd);
    return false;
  }
  void* base = real.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    say("cannot map the record ", record_path, ": ", strerror(errno));
    return false;
  }
  auto* header = static_cast<ClipmemRecordHeader*>(base);
  clipmem_header_layout(header);
  header->pid = int32_t(getpid());
  header->parent_pid = parent_pid;
  header->exec_generation = generation;
  header->state = CLIPMEM_STATE_RUNNING;
  header->start_ns = now_ns();
  rlimit limit;
  header->rlimit_as = getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? int64_t(limit.rlim_cur) : -1;
  header->rlimit_data =
      getrlimit(RLIMIT_DATA, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? int64_t(limit.rlim_cur) : -1;
  ssize_t n = readlink("/proc/self/exe", header->exe, sizeof header->exe - 1);
  header->exe[n > 0 ? n : 0] = 0;
  char* bytes = static_cast<char*>(base);
  slots = reinterpret_cast<ClipmemThreadSlot*>(bytes + header->slots_offset);
  slots[CLIPMEM_THREAD_SLOTS - 1].shared = 1;
  failures = reinterpret_cast<ClipmemFailure*>(bytes + header->failures_offset);
  timeline = reinterpret_cast<ClipmemSample*>(bytes + header->timeline_offset);
  phases = reinterpret_cast<ClipmemPhase*>(bytes + header->phases_offset);
  modules = reinterpret_cast<ClipmemModule*>(bytes + header->modules_offset);
  record = header;
  __atomic_store_n(&header->magic[0], CLIPMEM_RECORD_MAGIC[0], __ATOMIC_RELAXED);
  memcpy(header->magic + 1, CLIPMEM_RECORD_MAGIC + 1, 7);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  return true;
}

// What a forked child inherits, taken by the forking thread before fork: once fork returns, the parent
// goes on writing its record (MAP_SHARED, so the child sees those writes), and a child reading it then
// would count the parent's later allocations as its own.
struct ForkSeed {
  int64_t heap, anon_mapped, file_mapped, reserved_mapped;
  ClipmemPhase phase;  // the marker the parent was in (sequence 0: none)
};
ForkSeed fork_seed;

void before_fork() {
  if (load(state) != kTracking) return;
  Guard g;
  ErrnoKeeper keep;
  int64_t heap = load(record->heap_current);
  for (uint32_t i = 0; i < CLIPMEM_THREAD_SLOTS; ++i) heap += load(slots[i].heap_delta);
  fork_seed.heap = heap;
  fork_seed.anon_mapped = load(record->anon_mapped);
  fork_seed.file_mapped = load(record->file_mapped);
  fork_seed.reserved_mapped = load(record->reserved_mapped);
  uint32_t phase = load(record->current_phase);
  if (phase) fork_seed.phase = phases[(phase - 1) % CLIPMEM_PHASE_CAPACITY];
  fork_seed.phase.sequence = phase ? 1 : 0;
}

// In the child of fork: the inherited record belongs to the parent. Start our own, seeded with what the
// parent had at the fork (the child inherits its heap and mappings, and will free them).
void after_fork_in_child() {
  if (load(state) != kTracking) return;
  Guard g;
  ErrnoKeeper keep;
  ClipmemRecordHeader* parent = record;
  tls.slot = nullptr;
  if (!create_record(parent->pid)) {
    record = nullptr;
    store(state, int(kDisabled));
    real.munmap(parent, clipmem_record_size());
    return;
  }
  real.munmap(parent, clipmem_record_size());
  record->heap_current = record->heap_peak = fork_seed.heap;
  record->anon_mapped = record->anon_peak = fork_seed.anon_mapped;
  record->file_mapped = record->file_peak = fork_seed.file_mapped;
  record->reserved_mapped = record->reserved_peak = fork_seed.reserved_mapped;
  record->current_phase = 0;
  if (fork_seed.phase.sequence) {  // the child starts in the phase its parent was in
    phases[0] = fork_seed.phase;
    record->phases_total = 1;
    record->current_phase = 1;
  }
  for (Injection& rule : injections) rule.calls = 0;
}

void at_exit_handler() {
  if (load(state) != kTracking || !record) return;
  Guard g;
  ErrnoKeeper keep;
  char text[4096];
  if (read_small_file("/proc/self/status", text, sizeof text) > 0) {
    raise_peak(record->vm_peak, field_kib(text, "VmPeak:"));
    raise_peak(record->rss_peak, field_kib(text, "VmHWM:"));
  }
  take_sample(now_ns());
  store(record->end_ns, now_ns());
  __atomic_store_n(&record->state, uint32_t(CLIPMEM_STATE_EXITED), __ATOMIC_RELEASE);
}

void initialize() {
  int expected = kUninitialized;
  if (!__atomic_compare_exchange_n(&state, &expected, int(kInitializing), false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return;
  Guard g;
  ErrnoKeeper keep;
  ensure_resolved();
  page_size = uint64_t(sysconf(_SC_PAGESIZE));
  const char* dir = getenv(CLIPMEM_ENV_RECORD_DIR);
  if (!dir || !*dir) {
    // Preloaded without a launcher: forward everything, record nothing.
    store(state, int(kDisabled));
    return;
  }
  if (strlen(dir) >= sizeof record_dir) {
    say(CLIPMEM_ENV_RECORD_DIR " is longer than ", "255 bytes", "; this process is not tracked", "");
    store(state, int(kDisabled));
    return;
  }
  strcpy(record_dir, dir);
  if (!create_record(0)) {
    store(state, int(kDisabled));
    return;
  }
  parse_injections(getenv(CLIPMEM_ENV_FAIL));
  glibc_chunks = check_glibc_chunks();
  void* frames[4];
  backtrace(frames, 4);  // loads libgcc_s now, so that a later stack capture never allocates
  pthread_atfork(before_fork, nullptr, after_fork_in_child);
  atexit(at_exit_handler);
  take_sample(now_ns());
  store(last_sample_ns, now_ns());
  __atomic_store_n(&state, int(kTracking), __ATOMIC_RELEASE);
}

// True when this call should be counted: tracking is on and we are not inside the tracker.
inline bool tracking() {
  if (UNLIKELY(tls.guard)) return false;
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (LIKELY(s == kTracking)) return true;
  if (s == kUninitialized) {
    initialize();
    return __atomic_load_n(&state, __ATOMIC_ACQUIRE) == kTracking;
  }
  return false;
}

__attribute__((constructor)) void initialize_at_load() {
  ensure_resolved();
  initialize();
}



// The failure path of the malloc family, kept out of line: the success path builds no FailureArgs.
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

// Fault injection for the malloc family: true (and the failure recorded) if this call must fail.
__attribute__((noinline, cold)) bool inject_heap(int fn, uint64_t size, uint64_t nmemb, uint64_t elem_size,
                                                  uint64_t alignment, const void* old, uint64_t old_size,
                                                  uint32_t flags) {
  if (!inject(fn, size)) return false;
  heap_failure(fn, size, nmemb, elem_size, alignment, old, old_size, ENOMEM, flags | CLIPMEM_FAILURE_INJECTED);
  return true;
}

inline bool injected(int fn, FailureArgs& args) {
  if (LIKELY(!any_injection) || !inject(fn, args.size)) return false;
  args.failure_flags |= CLIPMEM_FAILURE_INJECTED;
  args.error = fn == CLIPMEM_FN_PTHREAD_CREATE ? EAGAIN : ENOMEM;  // what glibc returns when the stack cannot be mapped
  count_call(fn);
  record_failure(args);
  return true;
}

// Common ending for malloc-like calls (a new block, or NULL).
__attribute__((always_inline)) inline void* finish_alloc(int fn, void* ptr, uint64_t size, uint64_t alignment) {
  if (LIKELY(ptr)) count_heap(fn, size, int64_t(usable(ptr)));
  else heap_failure(fn, size, 0, 0, alignment, nullptr, 0, errno, 0);
  return ptr;
}

uint32_t overflow_flag(size_t nmemb, size_t size, uint64_t* total) {
  unsigned __int128 product = (unsigned __int128)nmemb * size;
  *total = uint64_t(product);
  return (product >> 64) ? CLIPMEM_FAILURE_SIZE_OVERFLOW : 0;
}

}  // namespace

// ---------------------------------------------------------------- hooks

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
  if (LIKELY(ptr)) count_heap(CLIPMEM_FN_MALLOC, size, int64_t(usable(ptr)));
  else heap_failure(CLIPMEM_FN_MALLOC, size, 0, 0, 0, nullptr, 0, errno, 0);
  return ptr;
}

// The fast path counted the call and its size before the call failed: failures stay out of the
// histogram, and heap_failure counts the call itself.
__attribute__((noinline, cold)) void* fast_alloc_failed(ClipmemThreadSlot* slot, int fn, uint64_t size, uint64_t nmemb,
                                                         uint64_t elem_size, uint32_t flags) {
  int error = errno;
  unsigned bucket = clipmem_histogram_bucket(size);
  store(slot->histogram[bucket], load(slot->histogram[bucket]) - 1);
  store(slot->calls[fn], load(slot->calls[fn]) - 1);
  heap_failure(fn, size, nmemb, elem_size, 0, nullptr, 0, error, flags);
  errno = error;
  return nullptr;
}

// Out of line so that the fast paths keep no registers across it: a new peak or a fold, then the block.
__attribute__((noinline)) void* grew(ClipmemThreadSlot* slot, int64_t delta, void* ptr) {
  heap_grew(slot, delta);
  return ptr;
}
// A block in a chunk of its own mapping (16 bytes of header): counted here, off the fast path.
__attribute__((noinline)) void* grew_mmapped(ClipmemThreadSlot* slot, void* ptr) {
  int64_t delta;
  if (grows_past_limit(slot, int64_t(chunk_usable(ptr)), &delta)) heap_grew(slot, delta);
  return ptr;
}
__attribute__((noinline)) void fold_then_free(ClipmemThreadSlot* slot, void* ptr) {
  fold(slot);
  real.free(ptr);
}
}  // namespace

// The size glibc's allocation fast path adds for a block: its chunk size less the 8-byte header word;
// the caller has sent mmapped chunks (and bootstrap blocks, which read as mmapped) elsewhere.
inline int64_t heap_chunk_usable(size_t header) { return int64_t(header & ~size_t(7)) - 8; }

// The end of a fast allocation: the new block's usable bytes into this thread's delta.
__attribute__((always_inline)) inline void* count_block(ClipmemThreadSlot* slot, void* ptr) {
  size_t header = static_cast<size_t*>(ptr)[-1];
  if (UNLIKELY(header & kChunkMmapped)) return grew_mmapped(slot, ptr);
  int64_t delta;
  if (grows_past_limit(slot, heap_chunk_usable(header), &delta)) return grew(slot, delta, ptr);
  return ptr;
}

void* malloc_hook(size_t size) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot)) return malloc_slow(size);
  count_fast(slot, CLIPMEM_FN_MALLOC, size);
  slot->request = size;
  void* ptr = real.malloc(size);
  if (UNLIKELY(!ptr)) return fast_alloc_failed(slot, CLIPMEM_FN_MALLOC, slot->request, 0, 0, 0);
  return count_block(slot, ptr);
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
  if (LIKELY(ptr)) count_heap(CLIPMEM_FN_CALLOC, total, int64_t(usable(ptr)));
  else heap_failure(CLIPMEM_FN_CALLOC, total, nmemb, size, 0, nullptr, 0, errno, flags);
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
  return count_block(slot, ptr);
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
  void* result = real.realloc(ptr, size);
  if (LIKELY(result || (ptr && size == 0)))  // realloc(p, 0) frees p
    count_heap(CLIPMEM_FN_REALLOC, size, int64_t(usable(result)) - int64_t(old_size));
  else
    heap_failure(CLIPMEM_FN_REALLOC, size, 0, 0, 0, ptr, old_size, errno, 0);
  return result;
}

// realloc returned NULL on the fast path: it freed the block (size 0) or failed.
__attribute__((noinline, cold)) void* realloc_null(void* ptr, size_t size, uint64_t old_size) {
  if (size == 0) count_heap(CLIPMEM_FN_REALLOC, 0, -int64_t(old_size));
  else heap_failure(CLIPMEM_FN_REALLOC, size, 0, 0, 0, ptr, old_size, errno, 0);
  return nullptr;
}

// An own slot's delta left [-fold, grow_limit] after a call that may grow or shrink the heap.
__attribute__((noinline)) void heap_changed(ClipmemThreadSlot* slot, int64_t delta) {
  if (delta < -kFoldBytes) fold(slot);
  else heap_grew(slot, delta);
}
}  // namespace

void* realloc_hook(void* ptr, size_t size) {
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot || !ptr)) return realloc_slow(ptr, size);
  size_t header = static_cast<size_t*>(ptr)[-1];
  if (UNLIKELY(header & kChunkMmapped)) return realloc_slow(ptr, size);  // mmapped chunks and bootstrap blocks
  int64_t old_size = heap_chunk_usable(header);
  void* result = real.realloc(ptr, size);
  if (UNLIKELY(!result)) return realloc_null(ptr, size, uint64_t(old_size));
  count_fast(slot, CLIPMEM_FN_REALLOC, size);
  int64_t delta = load(slot->heap_delta) + int64_t(chunk_usable(result)) - old_size;
  store(slot->heap_delta, delta);
  if (UNLIKELY(delta > slot->grow_limit || delta < -kFoldBytes)) heap_changed(slot, delta);
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
  void* result = real.reallocarray(ptr, nmemb, size);
  if (result) count_heap(CLIPMEM_FN_REALLOCARRAY, total, int64_t(usable(result)) - int64_t(old_size));
  else heap_failure(CLIPMEM_FN_REALLOCARRAY, total, nmemb, size, 0, ptr, old_size, errno, flags);
  return result;
}

namespace {
__attribute__((noinline)) void free_slow(void* ptr) {
  if (in_bootstrap(ptr)) return;
  ensure_resolved();
  if (tracking()) count_heap(CLIPMEM_FN_FREE, 0, -int64_t(usable(ptr)));
  real.free(ptr);
}
}  // namespace

void free_hook(void* ptr) {
  if (UNLIKELY(!ptr)) return;
  ClipmemThreadSlot* slot = tls.fast;
  if (UNLIKELY(!slot)) return free_slow(ptr);
  // Read only once the fast path is on: glibc's chunks are verified then.
  size_t header = static_cast<size_t*>(ptr)[-1];
  if (UNLIKELY(header & kChunkMmapped)) return free_slow(ptr);  // mmapped chunks and bootstrap blocks
  bump_own(slot->calls[CLIPMEM_FN_FREE]);
  if (shrinks_past_fold(slot, heap_chunk_usable(header))) return fold_then_free(slot, ptr);
  real.free(ptr);
}

int posix_memalign_hook(void** out, size_t alignment, size_t size) {
  ensure_resolved();
  if (!tracking()) return real.posix_memalign(out, alignment, size);
  if (UNLIKELY(any_injection) && inject_heap(CLIPMEM_FN_POSIX_MEMALIGN, size, 0, 0, alignment, nullptr, 0, 0))
    return ENOMEM;
  int error = real.posix_memalign(out, alignment, size);
  if (LIKELY(error == 0)) count_heap(CLIPMEM_FN_POSIX_MEMALIGN, size, int64_t(usable(*out)));
  else heap_failure(CLIPMEM_FN_POSIX_MEMALIGN, size, 0, 0, alignment, nullptr, 0, error, 0);  // returned, not errno
  return error;
}

#define CLIPMEM_ALIGNED_HOOK(FN, call, size, alignment)                                               \
  {                                                                                                   \
    ensure_resolved();                                                                                \
    if (!tracking()) return call;                                                                     \
    if (UNLIKELY(any_injection) && inject_heap(FN, size, 0, 0, alignment, nullptr, 0, 0))             \
      return errno = ENOMEM, nullptr;                                                                 \
    return finish_alloc(FN, call, size, alignment);                                                   \
  }

void* aligned_alloc_hook(size_t alignment, size_t size)
    CLIPMEM_ALIGNED_HOOK(CLIPMEM_FN_ALIGNED_ALLOC, real.aligned_alloc(alignment, size), size, alignment)
void* memalign_hook(size_t alignment, size_t size)
    CLIPMEM_ALIGNED_HOOK(CLIPMEM_FN_MEMALIGN, real.memalign(alignment, size), size, alignment)
void* valloc_hook(size_t size)
    CLIPMEM_ALIGNED_HOOK(CLIPMEM_FN_VALLOC, real.valloc(size), size, uint64_t(sysconf(_SC_PAGESIZE)))
void* pvalloc_hook(size_t size)
    CLIPMEM_ALIGNED_HOOK(CLIPMEM_FN_PVALLOC, real.pvalloc(size), size, uint64_t(sysconf(_SC_PAGESIZE)))

void* mmap_hook(int fn, void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
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
    maybe_sample();
  } else {
    args.error = errno;
    record_failure(args);
  }
  return result;
}

int munmap_hook(void* addr, size_t length) {
  ensure_resolved();
  if (!tracking()) return real.munmap(addr, length);
  int result = real.munmap(addr, length);
  count_call(CLIPMEM_FN_MUNMAP);
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
  void* result = real.mremap(old_address, old_size, new_size, flags, new_address);
  count_call(CLIPMEM_FN_MREMAP);
  if (result != MAP_FAILED) {
    Guard g;
    ErrnoKeeper keep;
    bump(my_slot()->histogram[clipmem_histogram_bucket(new_size)], my_slot());
    uint64_t old_rounded = page_rounded(old_size);
    uint64_t new_rounded = page_rounded(new_size);
    uintptr_t old_start = uintptr_t(old_address), new_start = uintptr_t(result);
    int kind = map_kind_at(old_start, old_start + old_rounded);
    if (new_start == old_start) {  // resized in place: the end beyond the new size is gone, or the mapping grew
      if (new_rounded < old_rounded) map_remove(old_start + new_rounded, old_rounded - new_rounded);
      else if (new_rounded > old_rounded) map_add(old_start + old_rounded, new_rounded - old_rounded, kind);
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

int pthread_create_hook(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  ensure_resolved();
  if (!tracking()) return real.pthread_create(thread, attr, start, arg);
  FailureArgs args{CLIPMEM_FN_PTHREAD_CREATE};
  size_t stack_size = 0;
  {
    Guard g;
    pthread_attr_t defaults;
    if (attr) pthread_attr_getstacksize(attr, &stack_size);
    else if (pthread_getattr_default_np(&defaults) == 0) {
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

}  // namespace clipmem

// ---------------------------------------------------------------- exported to the tracked program

// Sets the phase label that later failures and samples carry (called by clip-mem's addon through
// dlsym, so a process without the tracker simply finds no such symbol). Returns 1 if recorded.
extern "C" __attribute__((visibility("default"))) int clipmem_tracker_set_phase(const char* label) {
  using namespace clipmem;
  if (!tracking()) return 0;
  Guard g;
  ErrnoKeeper keep;
  uint64_t sequence;
  ClipmemPhase* marker = claim_ring_entry(&record->phases_total, phases, CLIPMEM_PHASE_CAPACITY, &sequence);
  marker->time_ns = now_ns();
  // The heap at the marker: the folded counter plus every thread's unfolded bytes (exact when the
  // other threads are not allocating at this instant).
  int64_t heap = load(record->heap_current);
  uint32_t used = load(record->slots_used);
  for (uint32_t i = 0; i < CLIPMEM_THREAD_SLOTS; ++i)
    if (i < used || i == CLIPMEM_THREAD_SLOTS - 1) heap += load(slots[i].heap_delta);
  marker->heap_current = heap;
  marker->anon_mapped = load(record->anon_mapped);
  marker->file_mapped = load(record->file_mapped);
  size_t n = 0;
  for (; label && label[n] && n < CLIPMEM_PHASE_LABEL_BYTES - 1; ++n) marker->label[n] = label[n];
  marker->label[n] = 0;
  publish_ring_entry(marker, sequence);
  store(record->current_phase, uint32_t(sequence));
  take_sample(marker->time_ns);
  return 1;
}

// The record this process writes ("" when not tracked).
extern "C" __attribute__((visibility("default"))) const char* clipmem_tracker_record_path() {
  return clipmem::record ? clipmem::record_path : "";
}
