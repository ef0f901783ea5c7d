// The record's lifecycle: creation at the first hooked call, a new record for a forked child, the exit
// handler, and the two functions the tracked program (clip-mem's addon) calls through dlsym.
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/counters.h"
#include "preload/failure.h"
#include "preload/heap_profile.h"
#include "preload/inject.h"
#include "preload/proc.h"
#include "preload/python.h"
#include "record/ring.h"

namespace clipmem {
namespace {

// True if real.malloc is glibc's and its chunk headers read as malloc_usable_size says, for small,
// large (mmapped) and aligned blocks.
bool check_glibc_chunks() {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (!libc) return false;
  bool same = real_dlsym(libc, "malloc") == reinterpret_cast<void*>(real.malloc) &&
              real_dlsym(libc, "free") == reinterpret_cast<void*>(real.free);
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
  // Fault in only the pages written. Without it a write fault reads ahead around the page (read_ahead_kb:
  // 8 MiB on some disks) and the whole record enters the page cache, charged to the traced program's
  // memory cgroup: 4 MiB for a /bin/true.
  madvise(base, size, MADV_RANDOM);
  auto* header = static_cast<ClipmemRecordHeader*>(base);
  clipmem_header_layout(header);
  header->pid = int32_t(getpid());
  header->parent_pid = parent_pid;
  header->exec_generation = generation;
  header->state = CLIPMEM_STATE_RUNNING;
  header->start_ns = now_ns();
  read_rlimits(&header->rlimit_as, &header->rlimit_data);
  ssize_t n = readlink("/proc/self/exe", header->exe, sizeof header->exe - 1);
  header->exe[n > 0 ? n : 0] = 0;
  char* bytes = static_cast<char*>(base);
  slots = reinterpret_cast<ClipmemThreadSlot*>(bytes + header->slots_offset);
  slots[CLIPMEM_THREAD_SLOTS - 1].shared = 1;
  failures = reinterpret_cast<ClipmemFailure*>(bytes + header->failures_offset);
  timeline = reinterpret_cast<ClipmemSample*>(bytes + header->timeline_offset);
  phases = reinterpret_cast<ClipmemPhase*>(bytes + header->phases_offset);
  modules = reinterpret_cast<ClipmemModule*>(bytes + header->modules_offset);
  devices = reinterpret_cast<ClipmemDevice*>(bytes + header->devices_offset);
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
  heap_profile_after_fork(parent);
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
  reset_injection_calls();
}

void mark_exit(int status) {
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
  store(record->exit_code, status & 0xff);
  __atomic_store_n(&record->state, uint32_t(CLIPMEM_STATE_EXITED), __ATOMIC_RELEASE);
}

// on_exit, not atexit: its handler is given the status, however exit was reached (a return from main
// calls libc's exit internally, past any hook on exit itself).
void at_exit_handler(int status, void*) { mark_exit(status); }

}  // namespace

void exit_now_hook(int status) {
  // A vfork child shares its parent's memory, tracker state included: only the record's own process
  // marks it (getpid is a system call in glibc >= 2.25, so it names the caller, not a cached parent).
  if (record && record->pid == int32_t(getpid())) mark_exit(status);
  // What glibc's _exit does: end every thread of the process.
  for (;;) syscall(SYS_exit_group, status);
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
  stack_init();  // before the first heap sample captures a stack
  heap_profile_start(getenv(CLIPMEM_ENV_HEAP_SAMPLE));
  glibc_chunks = check_glibc_chunks();
  void* frames[4];
  backtrace(frames, 4);  // loads libgcc_s now, so that a later stack capture never allocates
  python_init();         // dlsym now: a failure only reads memory
  pthread_atfork(before_fork, nullptr, after_fork_in_child);
  on_exit(at_exit_handler, nullptr);
  take_sample(now_ns());
  store(last_sample_ns, now_ns());
  __atomic_store_n(&state, int(kTracking), __ATOMIC_RELEASE);
}

__attribute__((constructor)) void initialize_at_load() {
  ensure_resolved();
  initialize();
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
