// The allocation record: one file, mapped MAP_SHARED by the tracked process (writer) and by clip-mem
// (reader, live or after the process ended). Everything the tracker knows lives here, so a SIGKILL loses
// nothing that was written. Shared by native/preload (writer) and native/addon/record.cc (reader).
//
// Layout: RecordHeader at offset 0, then the arrays it names by offset and count (thread slots, failure
// ring, timeline ring, phase markers, module table, device table, heap sites, heap snapshots). A reader checks magic,
// version and header_size before trusting the offsets. Plain C layout, fixed-width fields, no pointers: a 64-bit reader
// reads any 64-bit writer.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "record/device_hooks.h"
#include "record/hooks.h"

#define CLIPMEM_RECORD_MAGIC "CLIPMEMR"
// 2: mprotect in the call table and the failures; 3: samples carry a sequence; 4 (three branches at
// once): GPU allocations (the device table, the device fields of a failure, pinned host bytes, GPU bytes
// in each sample), the Python stack of a failure, and the sampled live-heap profile; 5: the first two in
// one layout; 6: all three; 7: exit_code, heap sites claimed in order; 8: the fast path's countdowns in
// the thread slot (grow_left for grow_limit, shrink_left)
#define CLIPMEM_RECORD_VERSION 10u

// Environment handed from the launcher to the tracked process.
#define CLIPMEM_ENV_RECORD_DIR "CLIPMEM_RECORD_DIR"  // private directory (0700) where each process writes <pid>.<n>.rec
#define CLIPMEM_ENV_FAIL "CLIPMEM_FAIL"              // fault injection, e.g. "malloc:nth=3,mmap:above=1048576"
#define CLIPMEM_ENV_HEAP_SAMPLE "CLIPMEM_HEAP_SAMPLE"  // mean bytes between heap samples (0: no profile)

// The call table: one counter per hooked function, in the order of the hook list (record/hooks.h).
// mprotect is there because making pages writable commits them: V8 and glibc's arenas allocate this way.
#define CLIPMEM_FN_ENUM_ENTRY(kind, name, ENUM, ...) CLIPMEM_FN_##ENUM,
enum ClipmemFn { CLIPMEM_HOOKS(CLIPMEM_FN_ENUM_ENTRY) CLIPMEM_FN_COUNT };
#undef CLIPMEM_FN_ENUM_ENTRY

// Names in ClipmemFn order; the reader reports these strings (and hands them to TypeScript).
#define CLIPMEM_FN_NAME_ENTRY(kind, name, ...) #name,
#define CLIPMEM_FN_NAMES \
  { CLIPMEM_HOOKS(CLIPMEM_FN_NAME_ENTRY) }

// The GPU allocation functions (record/device_hooks.h): a failure's `fn` is CLIPMEM_DEVICE_FN_BASE + the
// function's index in that list, so that neither list's growth moves the other's numbers.
#define CLIPMEM_DEVICE_FN_BASE 64
#define CLIPMEM_DEVICE_FN_ENUM_ENTRY(api, name, ENUM, ...) CLIPMEM_DEVICE_FN_##ENUM,
enum ClipmemDeviceFn { CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_FN_ENUM_ENTRY) CLIPMEM_DEVICE_FN_COUNT };
#undef CLIPMEM_DEVICE_FN_ENUM_ENTRY
#define CLIPMEM_DEVICE_FN_NAME_ENTRY(api, name, ...) #name,
#define CLIPMEM_DEVICE_FN_NAMES \
  { CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_FN_NAME_ENTRY) }
#define CLIPMEM_DEVICE_FN_RUNTIME_ENTRY(api, ...) CLIPMEM_DEVICE_API_##api,
#define CLIPMEM_DEVICE_API_RUNTIME 1
#define CLIPMEM_DEVICE_API_DRIVER 0
// 1 where the function is the runtime's (its status is a cudaError_t), 0 for the driver's (a CUresult).
#define CLIPMEM_DEVICE_FN_RUNTIME \
  { CLIPMEM_DEVICE_HOOKS(CLIPMEM_DEVICE_FN_RUNTIME_ENTRY) }

#define CLIPMEM_DEVICE_CAPACITY 16   // CUDA device ordinals counted (higher ones count as untracked)
#define CLIPMEM_GPU_PROCESS_SLOTS 4  // other processes on the device kept with a GPU failure, largest first
#define CLIPMEM_GPU_NAME_BYTES 32
#define CLIPMEM_NO_DEVICE (-1)

// Size histogram: bucket b counts requests with 2^(b-1) < size <= 2^b (bucket 0: size 0 or 1).
#define CLIPMEM_HISTOGRAM_BUCKETS 48

#define CLIPMEM_THREAD_SLOTS 512
#define CLIPMEM_FAILURE_CAPACITY 256
#define CLIPMEM_TIMELINE_CAPACITY 4096
#define CLIPMEM_PHASE_CAPACITY 1024
#define CLIPMEM_PHASE_LABEL_BYTES 112
#define CLIPMEM_STACK_DEPTH 32
#define CLIPMEM_PATH_BYTES 256
#define CLIPMEM_SYMBOL_BYTES 64
#define CLIPMEM_MODULE_CAPACITY 128
#define CLIPMEM_PY_DEPTH 24  // Python frames kept per failure: the innermost 16, then the outermost 8
#define CLIPMEM_PY_INNER 16
#define CLIPMEM_PY_FUNCTION_BYTES 52
#define CLIPMEM_PY_FILE_BYTES 128
#define CLIPMEM_NO_MODULE 0xffffu
#define CLIPMEM_HEAP_SITE_CAPACITY 4096   // call sites of the live-heap profile (the last one gathers the rest)
#define CLIPMEM_HEAP_SNAPSHOT_CAPACITY 2  // ring of snapshots at the peak: the latest is complete or the one before is
#define CLIPMEM_HEAP_FAILURE_SNAPSHOTS 8  // snapshots at the first 8 failures
#define CLIPMEM_HEAP_SNAPSHOT_SITES 64    // top sites kept in a snapshot
#define CLIPMEM_HEAP_SAMPLE_DEFAULT 524288  // mean bytes between samples when CLIPMEM_HEAP_SAMPLE is unset (tcmalloc's)

// Failure flags.
#define CLIPMEM_FAILURE_SIZE_OVERFLOW 1u  // calloc/reallocarray: nmemb*size overflowed; size holds the low 64 bits
#define CLIPMEM_FAILURE_INJECTED 2u       // made to fail by CLIPMEM_FAIL, not by the system

// What a failure's Python stack holds (ClipmemFailure.py_status).
#define CLIPMEM_PY_NONE 0        // not a CPython process, or a version whose layout the tracker does not know
#define CLIPMEM_PY_CAPTURED 1    // the failing thread's frames (py_depth 0: it runs no Python code now)
#define CLIPMEM_PY_NO_THREAD 2   // CPython, but the failing thread has no Python thread state
#define CLIPMEM_PY_UNREADABLE 3  // a read of the interpreter's memory failed: the frames before it are kept

// Record states (RecordHeader.state).
#define CLIPMEM_STATE_RUNNING 1u
#define CLIPMEM_STATE_EXITED 2u  // the process ran its exit handlers (a SIGKILL leaves RUNNING)

// Per-thread counters. Each thread owns one slot and writes it without atomics (single writer); the
// reader sums all slots. The last slot is shared by threads that find none free and is updated atomically.
typedef struct ClipmemThreadSlot {
  int32_t tid;
  uint32_t shared;     // 1 for the last slot, used by every thread that found no free one: atomic updates
  int64_t heap_delta;  // heap bytes allocated minus freed not yet folded into RecordHeader.heap_current
  int64_t grow_left;   // writer's bookkeeping: bytes heap_delta may grow before a new peak is possible (or a fold)
  uint64_t request;    // writer's bookkeeping: the size asked by this thread's latest malloc
  uint64_t calls[CLIPMEM_FN_COUNT];
  uint64_t histogram[CLIPMEM_HISTOGRAM_BUCKETS];
  // writer's bookkeeping: bytes before this thread's next heap sample (native/preload/heap_profile.h); in
  // the slot, whose address the fast path keeps across the call to the real malloc
  int64_t sample_left;
  // writer's bookkeeping: bytes this thread may free before heap_delta may pass the fold below zero
  int64_t shrink_left;
  uint8_t padding[64 - (8 + 8 + 8 + 8 + 8 * CLIPMEM_FN_COUNT + 8 * CLIPMEM_HISTOGRAM_BUCKETS + 8 + 8) % 64];
} ClipmemThreadSlot;

// One Python frame: the line executing, the function's qualified name (co_qualname; co_name before 3.11)
// and its file (co_filename), UTF-8, NUL-terminated; a longer file keeps its end after "...".
typedef struct ClipmemPyFrame {
  int32_t line;  // -1: unknown
  char function[CLIPMEM_PY_FUNCTION_BYTES];
  char file[CLIPMEM_PY_FILE_BYTES];
} ClipmemPyFrame;

// Another process using the device at a GPU failure (NVML).
typedef struct ClipmemGpuProcess {
  int32_t pid;
  uint32_t reserved;
  int64_t used;  // bytes (-1: NVML could not attribute them)
  char name[CLIPMEM_GPU_NAME_BYTES];
} ClipmemGpuProcess;

typedef struct ClipmemFailure {
  uint64_t sequence;   // 1-based failure number; 0 while the entry is being written (native/record/ring.h)
  uint32_t fn;         // ClipmemFn
  uint32_t flags;      // CLIPMEM_FAILURE_*
  uint64_t size;       // requested bytes exactly as asked (calloc: nmemb*size; mremap: new size; mprotect: length)
  uint64_t nmemb;      // calloc/reallocarray element count (else 0)
  uint64_t elem_size;  // calloc/reallocarray element size (else 0)
  uint64_t alignment;  // memalign family (else 0)
  uint64_t old_size;   // realloc: usable size of the old block; mremap: old size
  uint64_t address;    // mmap/mremap hint or old address; mprotect: the start of the range
  int32_t prot;        // mmap, mprotect
  int32_t map_flags;   // mmap flags, mremap flags; mprotect: the mapping's MAP_SHARED or MAP_PRIVATE (| MAP_ANONYMOUS)
  int32_t fd;          // mmap (-1 for anonymous and for mprotect)
  int32_t error;       // errno (pthread_create / posix_memalign: the returned error)
  int64_t offset;      // mmap file offset
  char fd_path[CLIPMEM_PATH_BYTES];  // mmap: the file of fd; mprotect: the file mapped there (/proc/self/maps)
  // Process state at the instant of the failure (bytes; -1 where unknown).
  int64_t vm_size;
  int64_t vm_data;
  int64_t rss;
  int64_t map_count;          // lines of /proc/self/maps
  int64_t max_map_count;      // /proc/sys/vm/max_map_count
  int64_t commit_limit;       // /proc/meminfo CommitLimit
  int64_t committed_as;       // /proc/meminfo Committed_AS
  int64_t mem_total;          // /proc/meminfo MemTotal + SwapTotal
  int32_t overcommit_memory;  // /proc/sys/vm/overcommit_memory
  int32_t tid;
  uint64_t time_ns;      // CLOCK_MONOTONIC
  int64_t heap_current;  // tracker counters at the failure
  int64_t anon_mapped;
  int64_t file_mapped;
  uint32_t phase_index;  // 1-based index of the phase marker in force (0: none)
  uint32_t stack_depth;
  char phase[CLIPMEM_PHASE_LABEL_BYTES];
  uint64_t stack[CLIPMEM_STACK_DEPTH];  // return addresses, innermost first
  // Resolved in the process at the failure (dladdr), since addresses mean nothing outside it: the module
  // (index into the module table, CLIPMEM_NO_MODULE if none) and the nearest exported symbol, mangled,
  // truncated to CLIPMEM_SYMBOL_BYTES-1.
  uint16_t frame_module[CLIPMEM_STACK_DEPTH];
  char frame_symbol[CLIPMEM_STACK_DEPTH][CLIPMEM_SYMBOL_BYTES];
  // The Python stack of the failing thread, read from the interpreter's own structures at the failure
  // (native/preload/python.cc): nothing of Python runs in the allocator.
  uint32_t py_version;                         // PY_VERSION_HEX major/minor (0x030b0000 for 3.11); 0 when not CPython
  uint32_t py_status;                          // CLIPMEM_PY_*
  uint32_t py_depth;                           // frames in py_frames
  uint32_t py_more;                            // 1 when the stack had more (outer) frames than CLIPMEM_PY_DEPTH
  ClipmemPyFrame py_frames[CLIPMEM_PY_DEPTH];  // innermost first
  // A GPU failure (fn >= CLIPMEM_DEVICE_FN_BASE; error is then 0): the device's state at that moment,
  // through the real driver (cuMemGetInfo in the failing thread's context) and NVML (per process).
  int32_t device;               // CUDA ordinal of the current context (CLIPMEM_NO_DEVICE: unknown, or a host failure)
  int32_t cuda_error;           // the status returned: cudaError_t (runtime) or CUresult (driver)
  int64_t device_total;         // cuMemGetInfo total bytes (-1 unknown)
  int64_t device_free;          // cuMemGetInfo free bytes (-1 unknown)
  int64_t device_process_used;  // NVML: this process's bytes on the device (-1 unknown)
  int64_t device_tracked;       // the tracker's own count of this process's live bytes on the device
  uint32_t gpu_process_count;   // other processes NVML listed on the device (the first SLOTS are kept)
  uint32_t reserved_device;
  ClipmemGpuProcess gpu_processes[CLIPMEM_GPU_PROCESS_SLOTS];
} ClipmemFailure;

// GPU memory the tracked process allocated, per CUDA device ordinal (successful calls of the device list;
// cuMemAddressReserve only reserves addresses and is not counted). One cache line per device.
typedef struct ClipmemDevice {
  int64_t live;  // bytes allocated and not yet freed
  int64_t peak;
  uint64_t allocations;
  uint64_t frees;
  uint64_t failures;
  int64_t largest;  // the largest single allocation
  int64_t total;    // the device's total bytes (cuMemGetInfo), once known (else 0)
  uint64_t reserved;
} ClipmemDevice;

// A loaded object seen in a failure's stack: the reader runs addr2line on path at (address - base).
typedef struct ClipmemModule {
  uint64_t base;  // dli_fbase
  char path[CLIPMEM_PATH_BYTES];
} ClipmemModule;

// One call site of the sampled live-heap profile (native/preload/heap_profile.cc): allocations are sampled
// by bytes (a sample point every `mean` bytes on average, exponential gaps), a sampled block of S bytes
// sampled with probability p = 1 - exp(-S/mean) counts S/p bytes; its free takes them back. The sum over
// sites estimates the live bytes without bias; live_variance is that estimate's variance.
typedef struct ClipmemHeapSite {
  uint64_t hash;         // of fn and the stack; 0 while free; stored last (release) once the rest is written
  int64_t live_bytes;    // estimated live bytes allocated here
  int64_t live_blocks;   // sampled blocks live
  double live_variance;  // sum of (S/p)^2 (1-p) over the live sampled blocks (bytes^2)
  int64_t alloc_bytes;   // estimated bytes ever allocated here
  uint32_t fn;           // ClipmemFn of the sampled calls (malloc, mmap, ...)
  uint32_t stack_depth;  // 0 for the last site: samples from sites that found the table full
  uint64_t stack[CLIPMEM_STACK_DEPTH];         // return addresses, innermost first (as in a failure)
  uint16_t frame_module[CLIPMEM_STACK_DEPTH];  // index into the module table, CLIPMEM_NO_MODULE if none
  uint32_t phase;     // the phase marker in force at its samples (1-based, as current_phase; 0: none): part of
                      // the site's identity, so that one allocator's blocks are told apart by what the program
                      // was doing (a runtime's weights and its optimizer state share every native frame)
  uint32_t reserved;  // 0
} ClipmemHeapSite;

// The top sites when the estimated live total reached a new peak (rate-limited: within 1/64 of it, or a
// new peak 10 ms later), or when a call failed.
typedef struct ClipmemHeapSnapshot {
  uint64_t sequence;  // 1-based; 0 while being written (native/record/ring.h)
  uint64_t time_ns;
  uint64_t failure;      // the failure's sequence number (failure ring) for a snapshot at a failure; 0 at a peak
  int64_t total_bytes;   // estimated live bytes of all sites at the snapshot
  int64_t heap_current;  // the tracker's heap counter then (folded part and this thread's delta)
  int64_t anon_mapped;
  uint32_t phase_index;
  uint32_t count;  // entries of site/live_bytes/live_variance used
  uint32_t site[CLIPMEM_HEAP_SNAPSHOT_SITES];
  int64_t live_bytes[CLIPMEM_HEAP_SNAPSHOT_SITES];
  double live_variance[CLIPMEM_HEAP_SNAPSHOT_SITES];
} ClipmemHeapSnapshot;

typedef struct ClipmemSample {
  uint64_t sequence;  // 1-based sample number; 0 while the entry is being written (native/record/ring.h)
  uint64_t time_ns;
  int64_t heap_current;
  int64_t anon_mapped;
  int64_t file_mapped;
  int64_t reserved_mapped;
  int64_t vm_size;  // from /proc/self/statm at the sample
  int64_t rss;
  uint32_t phase_index;
  uint32_t reserved;
  int64_t device_live;  // GPU bytes this process holds, all devices together (the device table's live)
} ClipmemSample;

typedef struct ClipmemPhase {
  uint64_t sequence;  // 1-based; 0 while being written (native/record/ring.h)
  uint64_t time_ns;
  int64_t heap_current;
  int64_t anon_mapped;
  int64_t file_mapped;
  char label[CLIPMEM_PHASE_LABEL_BYTES];
} ClipmemPhase;

typedef struct ClipmemRecordHeader {
  char magic[8];  // CLIPMEM_RECORD_MAGIC, written last at creation
  uint32_t version;
  uint32_t header_size;  // sizeof(ClipmemRecordHeader) of the writer
  uint64_t total_size;   // bytes of the file
  // Array geometry: offset from the start of the file, entry count, entry size.
  uint64_t slots_offset;
  uint32_t slots_count, slot_size;
  uint64_t failures_offset;
  uint32_t failures_capacity, failure_size;
  uint64_t timeline_offset;
  uint32_t timeline_capacity, sample_size;
  uint64_t phases_offset;
  uint32_t phases_capacity, phase_size;
  uint64_t modules_offset;
  uint32_t modules_capacity, module_size;

  int32_t pid;
  int32_t parent_pid;        // for a forked child: the process it was forked from (its record is the parent's)
  uint32_t exec_generation;  // n in <pid>.<n>.rec: 0 for a process's first image, +1 for each exec
  uint32_t state;            // CLIPMEM_STATE_*
  uint64_t start_ns;         // CLOCK_MONOTONIC when the record was created
  uint64_t end_ns;           // when the exit handlers ran (0 if never)
  int64_t rlimit_as;         // -1: unlimited
  int64_t rlimit_data;
  char exe[CLIPMEM_PATH_BYTES];

  // Counters. heap_current is the folded part; the true current heap is heap_current + sum of slot deltas.
  int64_t heap_current;
  int64_t heap_peak;
  int64_t anon_mapped;
  int64_t anon_peak;
  int64_t file_mapped;
  int64_t file_peak;
  int64_t reserved_mapped;  // PROT_NONE at mmap time (address space reserved, not committed)
  int64_t reserved_peak;
  int64_t
      unmapped_unknown;  // munmap of ranges the tracker did not see mapped (mapped before it, or by libc internally)
  int64_t vm_peak;       // VmPeak / VmHWM: from /proc/self/status at exit, else the largest sample
  int64_t rss_peak;
  uint32_t slots_used;  // thread slots handed out (the last slot is shared once all are taken)
  uint32_t injected_faults;
  uint64_t failures_total;  // failures ever; the ring keeps the latest failures_capacity
  uint64_t samples_total;
  uint64_t phases_total;
  uint32_t current_phase;   // 1-based index of the latest phase marker (0: none)
  uint32_t modules_used;    // entries of the module table claimed (an entry is complete once its base is non-zero)
  uint64_t devices_offset;  // the device table (ClipmemDevice per CUDA ordinal)
  uint32_t devices_capacity, device_size;
  int64_t pinned_current;  // page-locked host memory from cudaMallocHost, cudaHostAlloc, cuMemAllocHost
  int64_t pinned_peak;
  uint64_t device_untracked;  // device calls not counted: a free of an address never seen allocated, a full
                              // table, an ordinal past CLIPMEM_DEVICE_CAPACITY

  // The live-heap profile.
  uint64_t heap_sites_offset;
  uint32_t heap_sites_capacity, heap_site_size;
  uint64_t heap_snapshots_offset;
  uint32_t heap_snapshots_capacity, heap_snapshot_size;
  uint64_t heap_failure_snapshots_offset;  // same entries as the peak snapshots
  uint32_t heap_failure_snapshots_capacity;
  uint32_t heap_sites_used;               // sites claimed
  uint64_t heap_sample_mean;              // mean bytes between samples (0: no profile)
  int64_t heap_sampled_live;              // estimated live bytes over all sites
  int64_t heap_sampled_peak;              // its largest value
  uint64_t heap_snapshots_total;          // peak snapshots ever taken
  uint64_t heap_failure_snapshots_total;  // failure snapshots ever taken
  uint64_t heap_samples_total;            // blocks ever sampled
  uint32_t heap_dropped;                  // samples not kept: the table of sampled blocks was full
  int32_t exit_code;  // the status exit() or _exit() was given, & 0xff; -1: neither ran (killed, or not yet ended)
  // RLIMIT_AS and RLIMIT_DATA at the latest failure (-1: unlimited; read once a failure is recorded): a
  // program may lower its own after it started (Python's resource.setrlimit).
  int64_t failure_rlimit_as;
  int64_t failure_rlimit_data;
} ClipmemRecordHeader;

// ---------------------------------------------------------------- layout pins
// The reader (native/addon/record.cc, and through it src/track/record.ts) and docs/record-format.md rely
// on these exact sizes and offsets. A change that trips one of these changes the file format: bump
// CLIPMEM_RECORD_VERSION, update docs/record-format.md, then the numbers here.
#ifdef __cplusplus
#define CLIPMEM_LAYOUT(condition) static_assert(condition, "record layout changed: see docs/record-format.md")
#define CLIPMEM_ALIGNOF(type) alignof(type)
#else
#define CLIPMEM_LAYOUT(condition) _Static_assert(condition, "record layout changed: see docs/record-format.md")
#define CLIPMEM_ALIGNOF(type) _Alignof(type)
#endif
#define CLIPMEM_OFFSET(type, field, offset) CLIPMEM_LAYOUT(offsetof(type, field) == (offset))

// The call table: adding a hooked function changes the slot (and the version), never an existing index.
CLIPMEM_LAYOUT(CLIPMEM_FN_COUNT == 17);
CLIPMEM_LAYOUT(CLIPMEM_FN_MALLOC == 0 && CLIPMEM_FN_FREE == 4 && CLIPMEM_FN_MMAP == 10 && CLIPMEM_FN_MPROTECT == 15 &&
               CLIPMEM_FN_FORK == 16);
// Each thread slot fills whole 64-byte cache lines: threads writing neighbouring slots never share one.
CLIPMEM_LAYOUT(sizeof(ClipmemThreadSlot) % 64 == 0);
// Fixed-width fields only: a 64-bit reader reads any 64-bit writer.
CLIPMEM_LAYOUT(sizeof(void*) == 8);

// ClipmemThreadSlot
CLIPMEM_LAYOUT(sizeof(ClipmemThreadSlot) == 576);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemThreadSlot) == 8);
// The device list: its numbers start past any host function.
CLIPMEM_LAYOUT(CLIPMEM_DEVICE_FN_COUNT == 21 && CLIPMEM_FN_COUNT <= CLIPMEM_DEVICE_FN_BASE);
CLIPMEM_LAYOUT(CLIPMEM_DEVICE_FN_CUDA_MALLOC == 0 && CLIPMEM_DEVICE_FN_CU_MEM_ALLOC == 8 &&
               CLIPMEM_DEVICE_FN_CU_GET_PROC_ADDRESS_V2 == 20);
CLIPMEM_OFFSET(ClipmemThreadSlot, tid, 0);
CLIPMEM_OFFSET(ClipmemThreadSlot, shared, 4);
CLIPMEM_OFFSET(ClipmemThreadSlot, heap_delta, 8);
CLIPMEM_OFFSET(ClipmemThreadSlot, grow_left, 16);
CLIPMEM_OFFSET(ClipmemThreadSlot, request, 24);
CLIPMEM_OFFSET(ClipmemThreadSlot, calls, 32);
CLIPMEM_OFFSET(ClipmemThreadSlot, histogram, 168);
CLIPMEM_OFFSET(ClipmemThreadSlot, sample_left, 552);
CLIPMEM_OFFSET(ClipmemThreadSlot, shrink_left, 560);
// ClipmemFailure
CLIPMEM_LAYOUT(sizeof(ClipmemFailure) == 7608);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemFailure) == 8);
CLIPMEM_OFFSET(ClipmemFailure, sequence, 0);
CLIPMEM_OFFSET(ClipmemFailure, fn, 8);
CLIPMEM_OFFSET(ClipmemFailure, flags, 12);
CLIPMEM_OFFSET(ClipmemFailure, size, 16);
CLIPMEM_OFFSET(ClipmemFailure, nmemb, 24);
CLIPMEM_OFFSET(ClipmemFailure, elem_size, 32);
CLIPMEM_OFFSET(ClipmemFailure, alignment, 40);
CLIPMEM_OFFSET(ClipmemFailure, old_size, 48);
CLIPMEM_OFFSET(ClipmemFailure, address, 56);
CLIPMEM_OFFSET(ClipmemFailure, prot, 64);
CLIPMEM_OFFSET(ClipmemFailure, map_flags, 68);
CLIPMEM_OFFSET(ClipmemFailure, fd, 72);
CLIPMEM_OFFSET(ClipmemFailure, error, 76);
CLIPMEM_OFFSET(ClipmemFailure, offset, 80);
CLIPMEM_OFFSET(ClipmemFailure, fd_path, 88);
CLIPMEM_OFFSET(ClipmemFailure, vm_size, 344);
CLIPMEM_OFFSET(ClipmemFailure, vm_data, 352);
CLIPMEM_OFFSET(ClipmemFailure, rss, 360);
CLIPMEM_OFFSET(ClipmemFailure, map_count, 368);
CLIPMEM_OFFSET(ClipmemFailure, max_map_count, 376);
CLIPMEM_OFFSET(ClipmemFailure, commit_limit, 384);
CLIPMEM_OFFSET(ClipmemFailure, committed_as, 392);
CLIPMEM_OFFSET(ClipmemFailure, mem_total, 400);
CLIPMEM_OFFSET(ClipmemFailure, overcommit_memory, 408);
CLIPMEM_OFFSET(ClipmemFailure, tid, 412);
CLIPMEM_OFFSET(ClipmemFailure, time_ns, 416);
CLIPMEM_OFFSET(ClipmemFailure, heap_current, 424);
CLIPMEM_OFFSET(ClipmemFailure, anon_mapped, 432);
CLIPMEM_OFFSET(ClipmemFailure, file_mapped, 440);
CLIPMEM_OFFSET(ClipmemFailure, phase_index, 448);
CLIPMEM_OFFSET(ClipmemFailure, stack_depth, 452);
CLIPMEM_OFFSET(ClipmemFailure, phase, 456);
CLIPMEM_OFFSET(ClipmemFailure, stack, 568);
CLIPMEM_OFFSET(ClipmemFailure, frame_module, 824);
CLIPMEM_OFFSET(ClipmemFailure, frame_symbol, 888);
CLIPMEM_OFFSET(ClipmemFailure, py_version, 2936);
CLIPMEM_OFFSET(ClipmemFailure, py_status, 2940);
CLIPMEM_OFFSET(ClipmemFailure, py_depth, 2944);
CLIPMEM_OFFSET(ClipmemFailure, py_more, 2948);
CLIPMEM_OFFSET(ClipmemFailure, py_frames, 2952);
CLIPMEM_OFFSET(ClipmemFailure, device, 7368);
CLIPMEM_OFFSET(ClipmemFailure, cuda_error, 7372);
CLIPMEM_OFFSET(ClipmemFailure, device_total, 7376);
CLIPMEM_OFFSET(ClipmemFailure, device_free, 7384);
CLIPMEM_OFFSET(ClipmemFailure, device_process_used, 7392);
CLIPMEM_OFFSET(ClipmemFailure, device_tracked, 7400);
CLIPMEM_OFFSET(ClipmemFailure, gpu_process_count, 7408);
CLIPMEM_OFFSET(ClipmemFailure, reserved_device, 7412);
CLIPMEM_OFFSET(ClipmemFailure, gpu_processes, 7416);
// ClipmemPyFrame
CLIPMEM_LAYOUT(sizeof(ClipmemPyFrame) == 184);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemPyFrame) == 4);
CLIPMEM_OFFSET(ClipmemPyFrame, line, 0);
CLIPMEM_OFFSET(ClipmemPyFrame, function, 4);
CLIPMEM_OFFSET(ClipmemPyFrame, file, 56);
// ClipmemGpuProcess
CLIPMEM_LAYOUT(sizeof(ClipmemGpuProcess) == 48);
// ClipmemDevice
CLIPMEM_LAYOUT(sizeof(ClipmemDevice) == 64);
CLIPMEM_OFFSET(ClipmemDevice, live, 0);
CLIPMEM_OFFSET(ClipmemDevice, peak, 8);
CLIPMEM_OFFSET(ClipmemDevice, allocations, 16);
CLIPMEM_OFFSET(ClipmemDevice, frees, 24);
CLIPMEM_OFFSET(ClipmemDevice, failures, 32);
CLIPMEM_OFFSET(ClipmemDevice, largest, 40);
CLIPMEM_OFFSET(ClipmemDevice, total, 48);
// ClipmemModule
CLIPMEM_LAYOUT(sizeof(ClipmemModule) == 264);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemModule) == 8);
CLIPMEM_OFFSET(ClipmemModule, base, 0);
CLIPMEM_OFFSET(ClipmemModule, path, 8);
// ClipmemHeapSite
CLIPMEM_LAYOUT(sizeof(ClipmemHeapSite) == 376);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemHeapSite) == 8);
CLIPMEM_OFFSET(ClipmemHeapSite, hash, 0);
CLIPMEM_OFFSET(ClipmemHeapSite, live_bytes, 8);
CLIPMEM_OFFSET(ClipmemHeapSite, live_blocks, 16);
CLIPMEM_OFFSET(ClipmemHeapSite, live_variance, 24);
CLIPMEM_OFFSET(ClipmemHeapSite, alloc_bytes, 32);
CLIPMEM_OFFSET(ClipmemHeapSite, fn, 40);
CLIPMEM_OFFSET(ClipmemHeapSite, stack_depth, 44);
CLIPMEM_OFFSET(ClipmemHeapSite, stack, 48);
CLIPMEM_OFFSET(ClipmemHeapSite, frame_module, 304);
CLIPMEM_OFFSET(ClipmemHeapSite, phase, 368);
// ClipmemHeapSnapshot
CLIPMEM_LAYOUT(sizeof(ClipmemHeapSnapshot) == 1336);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemHeapSnapshot) == 8);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, sequence, 0);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, time_ns, 8);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, failure, 16);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, total_bytes, 24);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, heap_current, 32);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, anon_mapped, 40);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, phase_index, 48);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, count, 52);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, site, 56);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, live_bytes, 312);
CLIPMEM_OFFSET(ClipmemHeapSnapshot, live_variance, 824);
// ClipmemSample
CLIPMEM_LAYOUT(sizeof(ClipmemSample) == 80);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemSample) == 8);
CLIPMEM_OFFSET(ClipmemSample, sequence, 0);
CLIPMEM_OFFSET(ClipmemSample, time_ns, 8);
CLIPMEM_OFFSET(ClipmemSample, heap_current, 16);
CLIPMEM_OFFSET(ClipmemSample, anon_mapped, 24);
CLIPMEM_OFFSET(ClipmemSample, file_mapped, 32);
CLIPMEM_OFFSET(ClipmemSample, reserved_mapped, 40);
CLIPMEM_OFFSET(ClipmemSample, vm_size, 48);
CLIPMEM_OFFSET(ClipmemSample, rss, 56);
CLIPMEM_OFFSET(ClipmemSample, phase_index, 64);
CLIPMEM_OFFSET(ClipmemSample, reserved, 68);
CLIPMEM_OFFSET(ClipmemSample, device_live, 72);
// ClipmemPhase
CLIPMEM_LAYOUT(sizeof(ClipmemPhase) == 152);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemPhase) == 8);
CLIPMEM_OFFSET(ClipmemPhase, sequence, 0);
CLIPMEM_OFFSET(ClipmemPhase, time_ns, 8);
CLIPMEM_OFFSET(ClipmemPhase, heap_current, 16);
CLIPMEM_OFFSET(ClipmemPhase, anon_mapped, 24);
CLIPMEM_OFFSET(ClipmemPhase, file_mapped, 32);
CLIPMEM_OFFSET(ClipmemPhase, label, 40);
// ClipmemRecordHeader
CLIPMEM_LAYOUT(sizeof(ClipmemRecordHeader) == 696);
CLIPMEM_LAYOUT(CLIPMEM_ALIGNOF(ClipmemRecordHeader) == 8);
CLIPMEM_OFFSET(ClipmemRecordHeader, magic, 0);
CLIPMEM_OFFSET(ClipmemRecordHeader, version, 8);
CLIPMEM_OFFSET(ClipmemRecordHeader, header_size, 12);
CLIPMEM_OFFSET(ClipmemRecordHeader, total_size, 16);
CLIPMEM_OFFSET(ClipmemRecordHeader, slots_offset, 24);
CLIPMEM_OFFSET(ClipmemRecordHeader, slots_count, 32);
CLIPMEM_OFFSET(ClipmemRecordHeader, slot_size, 36);
CLIPMEM_OFFSET(ClipmemRecordHeader, failures_offset, 40);
CLIPMEM_OFFSET(ClipmemRecordHeader, failures_capacity, 48);
CLIPMEM_OFFSET(ClipmemRecordHeader, failure_size, 52);
CLIPMEM_OFFSET(ClipmemRecordHeader, timeline_offset, 56);
CLIPMEM_OFFSET(ClipmemRecordHeader, timeline_capacity, 64);
CLIPMEM_OFFSET(ClipmemRecordHeader, sample_size, 68);
CLIPMEM_OFFSET(ClipmemRecordHeader, phases_offset, 72);
CLIPMEM_OFFSET(ClipmemRecordHeader, phases_capacity, 80);
CLIPMEM_OFFSET(ClipmemRecordHeader, phase_size, 84);
CLIPMEM_OFFSET(ClipmemRecordHeader, modules_offset, 88);
CLIPMEM_OFFSET(ClipmemRecordHeader, modules_capacity, 96);
CLIPMEM_OFFSET(ClipmemRecordHeader, module_size, 100);
CLIPMEM_OFFSET(ClipmemRecordHeader, pid, 104);
CLIPMEM_OFFSET(ClipmemRecordHeader, parent_pid, 108);
CLIPMEM_OFFSET(ClipmemRecordHeader, exec_generation, 112);
CLIPMEM_OFFSET(ClipmemRecordHeader, state, 116);
CLIPMEM_OFFSET(ClipmemRecordHeader, start_ns, 120);
CLIPMEM_OFFSET(ClipmemRecordHeader, end_ns, 128);
CLIPMEM_OFFSET(ClipmemRecordHeader, rlimit_as, 136);
CLIPMEM_OFFSET(ClipmemRecordHeader, rlimit_data, 144);
CLIPMEM_OFFSET(ClipmemRecordHeader, exe, 152);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_current, 408);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_peak, 416);
CLIPMEM_OFFSET(ClipmemRecordHeader, anon_mapped, 424);
CLIPMEM_OFFSET(ClipmemRecordHeader, anon_peak, 432);
CLIPMEM_OFFSET(ClipmemRecordHeader, file_mapped, 440);
CLIPMEM_OFFSET(ClipmemRecordHeader, file_peak, 448);
CLIPMEM_OFFSET(ClipmemRecordHeader, reserved_mapped, 456);
CLIPMEM_OFFSET(ClipmemRecordHeader, reserved_peak, 464);
CLIPMEM_OFFSET(ClipmemRecordHeader, unmapped_unknown, 472);
CLIPMEM_OFFSET(ClipmemRecordHeader, vm_peak, 480);
CLIPMEM_OFFSET(ClipmemRecordHeader, rss_peak, 488);
CLIPMEM_OFFSET(ClipmemRecordHeader, slots_used, 496);
CLIPMEM_OFFSET(ClipmemRecordHeader, injected_faults, 500);
CLIPMEM_OFFSET(ClipmemRecordHeader, failures_total, 504);
CLIPMEM_OFFSET(ClipmemRecordHeader, samples_total, 512);
CLIPMEM_OFFSET(ClipmemRecordHeader, phases_total, 520);
CLIPMEM_OFFSET(ClipmemRecordHeader, current_phase, 528);
CLIPMEM_OFFSET(ClipmemRecordHeader, modules_used, 532);
CLIPMEM_OFFSET(ClipmemRecordHeader, devices_offset, 536);
CLIPMEM_OFFSET(ClipmemRecordHeader, devices_capacity, 544);
CLIPMEM_OFFSET(ClipmemRecordHeader, device_size, 548);
CLIPMEM_OFFSET(ClipmemRecordHeader, pinned_current, 552);
CLIPMEM_OFFSET(ClipmemRecordHeader, pinned_peak, 560);
CLIPMEM_OFFSET(ClipmemRecordHeader, device_untracked, 568);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sites_offset, 576);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sites_capacity, 584);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_site_size, 588);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_snapshots_offset, 592);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_snapshots_capacity, 600);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_snapshot_size, 604);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_failure_snapshots_offset, 608);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_failure_snapshots_capacity, 616);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sites_used, 620);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sample_mean, 624);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sampled_live, 632);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_sampled_peak, 640);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_snapshots_total, 648);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_failure_snapshots_total, 656);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_samples_total, 664);
CLIPMEM_OFFSET(ClipmemRecordHeader, heap_dropped, 672);
CLIPMEM_OFFSET(ClipmemRecordHeader, exit_code, 676);
CLIPMEM_OFFSET(ClipmemRecordHeader, failure_rlimit_as, 680);
CLIPMEM_OFFSET(ClipmemRecordHeader, failure_rlimit_data, 688);
#undef CLIPMEM_OFFSET
#undef CLIPMEM_ALIGNOF
#undef CLIPMEM_LAYOUT

// The whole file: header then arrays, each 64-byte aligned.
static inline uint64_t clipmem_align64(uint64_t n) { return (n + 63u) & ~(uint64_t)63u; }
static inline uint64_t clipmem_slots_offset(void) { return clipmem_align64(sizeof(ClipmemRecordHeader)); }
static inline uint64_t clipmem_failures_offset(void) {
  return clipmem_align64(clipmem_slots_offset() + (uint64_t)CLIPMEM_THREAD_SLOTS * sizeof(ClipmemThreadSlot));
}
static inline uint64_t clipmem_timeline_offset(void) {
  return clipmem_align64(clipmem_failures_offset() + (uint64_t)CLIPMEM_FAILURE_CAPACITY * sizeof(ClipmemFailure));
}
static inline uint64_t clipmem_phases_offset(void) {
  return clipmem_align64(clipmem_timeline_offset() + (uint64_t)CLIPMEM_TIMELINE_CAPACITY * sizeof(ClipmemSample));
}
static inline uint64_t clipmem_modules_offset(void) {
  return clipmem_align64(clipmem_phases_offset() + (uint64_t)CLIPMEM_PHASE_CAPACITY * sizeof(ClipmemPhase));
}
static inline uint64_t clipmem_devices_offset(void) {
  return clipmem_align64(clipmem_modules_offset() + (uint64_t)CLIPMEM_MODULE_CAPACITY * sizeof(ClipmemModule));
}
static inline uint64_t clipmem_heap_sites_offset(void) {
  return clipmem_align64(clipmem_devices_offset() + (uint64_t)CLIPMEM_DEVICE_CAPACITY * sizeof(ClipmemDevice));
}
static inline uint64_t clipmem_heap_snapshots_offset(void) {
  return clipmem_align64(clipmem_heap_sites_offset() + (uint64_t)CLIPMEM_HEAP_SITE_CAPACITY * sizeof(ClipmemHeapSite));
}
static inline uint64_t clipmem_heap_failure_snapshots_offset(void) {
  return clipmem_align64(clipmem_heap_snapshots_offset() +
                         (uint64_t)CLIPMEM_HEAP_SNAPSHOT_CAPACITY * sizeof(ClipmemHeapSnapshot));
}
static inline uint64_t clipmem_record_size(void) {
  return (clipmem_heap_failure_snapshots_offset() +
          (uint64_t)CLIPMEM_HEAP_FAILURE_SNAPSHOTS * sizeof(ClipmemHeapSnapshot) + 4095u) &
         ~(uint64_t)4095u;
}

// Fills a zeroed header with the layout above (everything but magic, which the writer stores last).
static inline void clipmem_header_layout(ClipmemRecordHeader* h) {
  h->version = CLIPMEM_RECORD_VERSION;
  h->header_size = (uint32_t)sizeof(ClipmemRecordHeader);
  h->total_size = clipmem_record_size();
  h->slots_offset = clipmem_slots_offset();
  h->slots_count = CLIPMEM_THREAD_SLOTS;
  h->slot_size = (uint32_t)sizeof(ClipmemThreadSlot);
  h->failures_offset = clipmem_failures_offset();
  h->failures_capacity = CLIPMEM_FAILURE_CAPACITY;
  h->failure_size = (uint32_t)sizeof(ClipmemFailure);
  h->timeline_offset = clipmem_timeline_offset();
  h->timeline_capacity = CLIPMEM_TIMELINE_CAPACITY;
  h->sample_size = (uint32_t)sizeof(ClipmemSample);
  h->phases_offset = clipmem_phases_offset();
  h->phases_capacity = CLIPMEM_PHASE_CAPACITY;
  h->phase_size = (uint32_t)sizeof(ClipmemPhase);
  h->modules_offset = clipmem_modules_offset();
  h->modules_capacity = CLIPMEM_MODULE_CAPACITY;
  h->module_size = (uint32_t)sizeof(ClipmemModule);
  h->devices_offset = clipmem_devices_offset();
  h->devices_capacity = CLIPMEM_DEVICE_CAPACITY;
  h->device_size = (uint32_t)sizeof(ClipmemDevice);
  h->heap_sites_offset = clipmem_heap_sites_offset();
  h->heap_sites_capacity = CLIPMEM_HEAP_SITE_CAPACITY;
  h->heap_site_size = (uint32_t)sizeof(ClipmemHeapSite);
  h->heap_snapshots_offset = clipmem_heap_snapshots_offset();
  h->heap_snapshots_capacity = CLIPMEM_HEAP_SNAPSHOT_CAPACITY;
  h->heap_snapshot_size = (uint32_t)sizeof(ClipmemHeapSnapshot);
  h->heap_failure_snapshots_offset = clipmem_heap_failure_snapshots_offset();
  h->heap_failure_snapshots_capacity = CLIPMEM_HEAP_FAILURE_SNAPSHOTS;
  h->exit_code = -1;
  h->failure_rlimit_as = h->failure_rlimit_data = -1;
}

// Checks that a mapped file of `file_size` bytes is a record this reader understands; returns NULL or a
// sentence saying what is wrong.
static inline const char* clipmem_header_problem(const ClipmemRecordHeader* h, uint64_t file_size) {
  if (file_size < sizeof(ClipmemRecordHeader)) return "file is shorter than a record header";
  for (int i = 0; i < 8; i++)
    if (h->magic[i] != CLIPMEM_RECORD_MAGIC[i]) return "bad magic (not a clip-mem record, or still being created)";
  if (h->version != CLIPMEM_RECORD_VERSION) return "unsupported record version";
  if (h->header_size != sizeof(ClipmemRecordHeader)) return "header size differs from this reader's";
  if (h->total_size > file_size) return "file is shorter than the size its header states";
  ClipmemRecordHeader expected = {};
  clipmem_header_layout(&expected);
  // The reader walks the arrays at the offsets below: a header understating total_size must not let it
  // read past the end of the mapped file (SIGBUS).
  if (h->total_size != expected.total_size) return "array layout differs from this reader's";
  if (h->slots_offset != expected.slots_offset || h->slot_size != expected.slot_size ||
      h->failures_offset != expected.failures_offset || h->failure_size != expected.failure_size ||
      h->timeline_offset != expected.timeline_offset || h->sample_size != expected.sample_size ||
      h->phases_offset != expected.phases_offset || h->phase_size != expected.phase_size ||
      h->modules_offset != expected.modules_offset || h->module_size != expected.module_size ||
      h->modules_capacity != expected.modules_capacity || h->slots_count != expected.slots_count ||
      h->failures_capacity != expected.failures_capacity || h->timeline_capacity != expected.timeline_capacity ||
      h->phases_capacity != expected.phases_capacity || h->devices_offset != expected.devices_offset ||
      h->devices_capacity != expected.devices_capacity || h->device_size != expected.device_size ||
      h->heap_sites_offset != expected.heap_sites_offset || h->heap_sites_capacity != expected.heap_sites_capacity ||
      h->heap_site_size != expected.heap_site_size || h->heap_snapshots_offset != expected.heap_snapshots_offset ||
      h->heap_snapshots_capacity != expected.heap_snapshots_capacity ||
      h->heap_snapshot_size != expected.heap_snapshot_size ||
      h->heap_failure_snapshots_offset != expected.heap_failure_snapshots_offset ||
      h->heap_failure_snapshots_capacity != expected.heap_failure_snapshots_capacity)
    return "array layout differs from this reader's";
  return 0;
}

// The byte ranges of a record its process has written (the header, the claimed entries of each array),
// for giving the rest of the file's blocks back once the process is gone. Fills `ranges` (start, length
// pairs, in file order) and returns how many; at most CLIPMEM_WRITTEN_RANGES.
#define CLIPMEM_WRITTEN_RANGES 11
static inline uint64_t clipmem_min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline unsigned clipmem_written_ranges(const ClipmemRecordHeader* h, uint64_t ranges[][2]) {
  unsigned n = 0;
#define CLIPMEM_WRITTEN(start, length) (ranges[n][0] = (start), ranges[n][1] = (length), n++)
  CLIPMEM_WRITTEN(0, h->slots_offset + clipmem_min_u64(h->slots_used, h->slots_count) * h->slot_size);
  CLIPMEM_WRITTEN(h->slots_offset + (uint64_t)(h->slots_count - 1) * h->slot_size, h->slot_size);  // the shared slot
  CLIPMEM_WRITTEN(h->failures_offset, clipmem_min_u64(h->failures_total, h->failures_capacity) * h->failure_size);
  CLIPMEM_WRITTEN(h->timeline_offset, clipmem_min_u64(h->samples_total, h->timeline_capacity) * h->sample_size);
  CLIPMEM_WRITTEN(h->phases_offset, clipmem_min_u64(h->phases_total, h->phases_capacity) * h->phase_size);
  CLIPMEM_WRITTEN(h->modules_offset, clipmem_min_u64(h->modules_used, h->modules_capacity) * h->module_size);
  CLIPMEM_WRITTEN(h->devices_offset, (uint64_t)h->devices_capacity * h->device_size);
  CLIPMEM_WRITTEN(h->heap_sites_offset,
                  clipmem_min_u64(h->heap_sites_used, h->heap_sites_capacity) * h->heap_site_size);
  CLIPMEM_WRITTEN(h->heap_sites_offset + (uint64_t)(h->heap_sites_capacity - 1) * h->heap_site_size,
                  h->heap_site_size);  // the entry that gathers samples once the others are taken
  CLIPMEM_WRITTEN(h->heap_snapshots_offset,
                  clipmem_min_u64(h->heap_snapshots_total, h->heap_snapshots_capacity) * h->heap_snapshot_size);
  CLIPMEM_WRITTEN(
      h->heap_failure_snapshots_offset,
      clipmem_min_u64(h->heap_failure_snapshots_total, h->heap_failure_snapshots_capacity) * h->heap_snapshot_size);
#undef CLIPMEM_WRITTEN
  return n;
}

// ceil(log2(size)) without branches: the bit length of size-1, taken as 63 - clz(2n+1) so that n = 0
// needs no special case; n is capped so that every size above 2^(BUCKETS-2) lands in the last bucket.
// (The tracker's malloc fast path takes the same value for 1 byte to 2 GiB without the clamps:
// histogram_bucket_fast in native/preload/counters.h.)
static inline unsigned clipmem_histogram_bucket(uint64_t size) {
  const uint64_t cap = (uint64_t)1 << (CLIPMEM_HISTOGRAM_BUCKETS - 2);
  uint64_t n = size - (size != 0);
  n = n < cap ? n : cap;
  return 63u - (unsigned)__builtin_clzll(2 * n + 1);
}
