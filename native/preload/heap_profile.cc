// The sampled live-heap profile (see heap_profile.h).
#include "preload/heap_profile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/counters.h"
#include "preload/failure.h"
#include "record/ring.h"

namespace clipmem {

SampledFilterCounter sampled_filter[1u << kSampledFilterBits];

namespace {

__thread uint64_t random_state __attribute__((tls_model("initial-exec"))) = 0;
uint64_t mean = 0;  // bytes between samples on average; 0: no profile

// One lock for the tables below and the record's sites: taken only on samples and on frees of sampled blocks.
int lock_word = 0;
struct Lock {
  Lock() {
    while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
      while (load(lock_word)) __builtin_ia32_pause();
  }
  ~Lock() { __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE); }
};

// The sampled blocks by address: linear probing, backward-shift deletion (no tombstones), under the lock.
constexpr unsigned kBlockBits = 16;
constexpr uint32_t kBlockSlots = 1u << kBlockBits;
SampledBlock blocks[kBlockSlots];
uint32_t blocks_used = 0;

uint32_t block_home(uintptr_t address) { return uint32_t((address * 0x9E3779B97F4A7C15ull) >> (64 - kBlockBits)); }

ClipmemHeapSite* sites() {
  return reinterpret_cast<ClipmemHeapSite*>(reinterpret_cast<char*>(record) + record->heap_sites_offset);
}
ClipmemHeapSnapshot* snapshots(uint64_t offset) {
  return reinterpret_cast<ClipmemHeapSnapshot*>(reinterpret_cast<char*>(record) + offset);
}

// xorshift64*: uniform in (0, 1].
double next_uniform() {
  uint64_t x = random_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  random_state = x;
  return double(((x * 0x2545F4914F6CDD1Dull) >> 11) + 1) * 0x1.0p-53;
}
// The gap to the next sample point: exponential with the mean (a Poisson process over the bytes).
int64_t next_gap() { return int64_t(-log(next_uniform()) * double(mean)) + 1; }

// The bytes a sampled block stands for, and that estimate's variance.
double estimate(const SampledBlock& b) { return double(b.bytes) * b.weight; }
double variance(const SampledBlock& b) {
  double e = estimate(b);
  return e * e * (1 - 1 / b.weight);
}

void account(const SampledBlock& b, int sign) {
  ClipmemHeapSite& site = sites()[b.site];
  int64_t bytes = int64_t(estimate(b));
  store(site.live_bytes, load(site.live_bytes) + sign * bytes);
  store(site.live_blocks, load(site.live_blocks) + sign);
  double v = site.live_variance + sign * variance(b);  // an aligned 8-byte store: never read torn
  site.live_variance = v > 0 ? v : 0.0;
  if (sign > 0) store(site.alloc_bytes, load(site.alloc_bytes) + bytes);
  store(record->heap_sampled_live, load(record->heap_sampled_live) + sign * bytes);
}

uint64_t stack_hash(int fn, const uint64_t* stack, uint32_t depth) {
  uint64_t h = 0xcbf29ce484222325ull ^ uint64_t(fn);
  for (uint32_t i = 0; i < depth; ++i) h = (h ^ stack[i]) * 0x100000001b3ull;
  return h ? h : 1;
}

// The sites by stack hash: site number + 1 (0: empty), linear probing, under the lock. Kept here, not in
// the record, so that the record's sites stay dense (claimed in order): a hash table in the file would
// scatter a few sites over every page of it, and each page written is page cache charged to the program's
// memory cgroup. A forked child inherits this index with a copy of the sites at the same numbers.
constexpr unsigned kSiteIndexBits = 13;  // 8,192 slots for at most 4,095 sites: never more than half full
static_assert((1u << kSiteIndexBits) >= 2 * CLIPMEM_HEAP_SITE_CAPACITY, "the site index must stay half empty");
uint16_t site_index[1u << kSiteIndexBits];

// The site of this stack, claimed and described if new; the last site gathers samples once the others are taken.
uint32_t site_of(int fn, const uint64_t* stack, uint32_t depth) {
  ClipmemHeapSite* all = sites();
  constexpr uint32_t kRest = CLIPMEM_HEAP_SITE_CAPACITY - 1;
  constexpr uint32_t kMask = (1u << kSiteIndexBits) - 1;
  uint32_t phase = load(record->current_phase);
  uint64_t hash = stack_hash(fn, stack, depth) ^ (uint64_t(phase) * 0x9E3779B97F4A7C15ull);
  hash = hash ? hash : 1;
  uint32_t slot = uint32_t(hash) & kMask;
  for (; site_index[slot]; slot = (slot + 1) & kMask)
    if (all[site_index[slot] - 1].hash == hash) return site_index[slot] - 1u;
  uint32_t n = load(record->heap_sites_used);
  if (n < kRest) {
    ClipmemHeapSite& site = all[n];
    site.fn = uint32_t(fn);
    site.stack_depth = depth;
    site.phase = phase;
    for (uint32_t f = 0; f < depth; ++f) {
      site.stack[f] = stack[f];
      site.frame_module[f] = frame_module(stack[f]);
    }
    store(record->heap_sites_used, n + 1);
    __atomic_store_n(&site.hash, hash, __ATOMIC_RELEASE);
    site_index[slot] = uint16_t(n + 1);
    return n;
  }
  ClipmemHeapSite& rest = all[kRest];
  if (!load(rest.hash)) {
    rest.fn = uint32_t(fn);
    __atomic_store_n(&rest.hash, uint64_t(1), __ATOMIC_RELEASE);
  }
  return kRest;
}

bool insert_block(const SampledBlock& b) {
  if (blocks_used + 1 >= kBlockSlots * 3 / 4) return false;
  uint32_t i = block_home(b.address);
  while (blocks[i].address) i = (i + 1) & (kBlockSlots - 1);
  blocks[i] = b;
  ++blocks_used;
  uint16_t& filter = sampled_filter_count(b.address);
  __atomic_store_n(&filter, uint16_t(filter + 1), __ATOMIC_RELAXED);
  return true;
}

SampledBlock take_block(uintptr_t address) {
  uint32_t i = block_home(address);
  while (blocks[i].address && blocks[i].address != address) i = (i + 1) & (kBlockSlots - 1);
  SampledBlock found = blocks[i];
  if (!found.address) return found;
  // Backward shift: move later entries of the run into the hole when their home allows it.
  uint32_t hole = i;
  for (uint32_t j = (i + 1) & (kBlockSlots - 1); blocks[j].address; j = (j + 1) & (kBlockSlots - 1)) {
    uint32_t home = block_home(blocks[j].address);
    if (((j - home) & (kBlockSlots - 1)) >= ((j - hole) & (kBlockSlots - 1))) {
      blocks[hole] = blocks[j];
      hole = j;
    }
  }
  blocks[hole] = SampledBlock{};
  --blocks_used;
  uint16_t& filter = sampled_filter_count(address);
  __atomic_store_n(&filter, uint16_t(filter - 1), __ATOMIC_RELAXED);
  return found;
}

// The top sites when the estimated live total reaches a new peak: within 1/64 of it, or 10 ms after the last.
uint64_t last_snapshot_ns = 0;
int64_t last_snapshot_total = 0;
constexpr uint64_t kSnapshotGapNs = 10 * 1000 * 1000;

// Writes the top sites into the next entry of a snapshot ring.
void snapshot(uint64_t* total_taken, uint64_t offset, uint64_t capacity, uint64_t failure, uint64_t now) {
  uint64_t sequence;
  ClipmemHeapSnapshot* s = claim_ring_entry(total_taken, snapshots(offset), capacity, &sequence);
  s->time_ns = now;
  s->failure = failure;
  s->total_bytes = load(record->heap_sampled_live);
  s->heap_current = load(record->heap_current) + load(my_slot()->heap_delta);
  s->anon_mapped = load(record->anon_mapped);
  s->phase_index = load(record->current_phase);
  // The largest sites, by insertion into a list kept sorted (largest first).
  uint32_t count = 0;
  const ClipmemHeapSite* all = sites();
  auto consider = [&](uint32_t i) {
    int64_t bytes = load(all[i].live_bytes);
    if (bytes <= 0 || (count == CLIPMEM_HEAP_SNAPSHOT_SITES && bytes <= s->live_bytes[count - 1])) return;
    uint32_t at = count < CLIPMEM_HEAP_SNAPSHOT_SITES ? count++ : count - 1;
    while (at > 0 && s->live_bytes[at - 1] < bytes) {
      s->site[at] = s->site[at - 1];
      s->live_bytes[at] = s->live_bytes[at - 1];
      s->live_variance[at] = s->live_variance[at - 1];
      --at;
    }
    s->site[at] = i;
    s->live_bytes[at] = bytes;
    s->live_variance[at] = all[i].live_variance;
  };
  // The claimed sites, then the last entry: reading the unclaimed ones would fault their pages in.
  constexpr uint32_t kRest = CLIPMEM_HEAP_SITE_CAPACITY - 1;
  for (uint32_t i = 0, used = load(record->heap_sites_used); i < used && i < kRest; ++i) consider(i);
  consider(kRest);
  s->count = count;
  publish_ring_entry(s, sequence);
}

void maybe_snapshot() {
  int64_t total = load(record->heap_sampled_live);
  if (total <= load(record->heap_sampled_peak)) return;
  store(record->heap_sampled_peak, total);
  uint64_t now = now_ns();
  if (total < last_snapshot_total + last_snapshot_total / 64 && now - last_snapshot_ns < kSnapshotGapNs) return;
  last_snapshot_ns = now;
  last_snapshot_total = total;
  snapshot(&record->heap_snapshots_total, record->heap_snapshots_offset, CLIPMEM_HEAP_SNAPSHOT_CAPACITY, 0, now);
}

}  // namespace

__attribute__((noinline)) void heap_sample(ClipmemThreadSlot* slot, int fn, uintptr_t address, uint64_t bytes) {
  if (UNLIKELY(!mean)) {  // no profile: never due again
    slot->sample_left = INT64_MAX;
    return;
  }
  if (UNLIKELY(!random_state)) {  // this thread's first allocation: its first sample point is still ahead
    random_state = (uint64_t(syscall(SYS_gettid)) << 32 ^ now_ns()) | 1;
    slot->sample_left += next_gap();
    if (slot->sample_left >= 0) return;
  }
  // The gap to the next point starts after this block (the process is memoryless).
  slot->sample_left = next_gap();
  Guard g;
  ErrnoKeeper keep;
  uint64_t stack[CLIPMEM_STACK_DEPTH];
  uint32_t depth = capture_stack(stack);
  SampledBlock block{address, bytes, 1 / -expm1(-double(bytes) / double(mean)), 0};
  Lock lock;
  block.site = site_of(fn, stack, depth);
  if (!insert_block(block)) {
    store(record->heap_dropped, load(record->heap_dropped) + 1);
    return;
  }
  store(record->heap_samples_total, load(record->heap_samples_total) + 1);
  account(block, +1);
  maybe_snapshot();
}

SampledBlock heap_unsample(uintptr_t address) {
  Lock lock;
  SampledBlock block = take_block(address);
  if (block.address) account(block, -1);
  return block;
}

void heap_resample(SampledBlock block, uintptr_t address, uint64_t bytes) {
  if (!block.address || !address) return;
  block.address = address;
  block.bytes = bytes;
  Lock lock;
  if (!insert_block(block)) {
    store(record->heap_dropped, load(record->heap_dropped) + 1);
    return;
  }
  account(block, +1);
  maybe_snapshot();
}

void heap_profile_at_failure(uint64_t failure) {
  // The first failures: later ones are mostly consequences (a program probing smaller sizes, cleanup).
  if (!mean || failure > CLIPMEM_HEAP_FAILURE_SNAPSHOTS) return;
  Lock lock;
  snapshot(&record->heap_failure_snapshots_total, record->heap_failure_snapshots_offset, CLIPMEM_HEAP_FAILURE_SNAPSHOTS,
           failure, now_ns());
}

void heap_profile_start(const char* text) {
  // Held at 1 from here on: free(NULL) takes free's slow path at the filter test (hooks.cc), before
  // tracking starts. Blocks sharing this counter (address bits 4..19 all zero) only take the slow path.
  sampled_filter_count(0) = 1;
  mean = CLIPMEM_HEAP_SAMPLE_DEFAULT;
  if (text && *text) {
    char* end;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end || text[0] == '-')
      say(CLIPMEM_ENV_HEAP_SAMPLE " is not a number of bytes: ", text, "; the default is used", "");
    else
      mean = value;
  }
  store(record->heap_sample_mean, mean);
}

void heap_profile_after_fork(const ClipmemRecordHeader* parent) {
  lock_word = 0;
  random_state = 0;  // the child's slot starts a count of its own: its first gap is drawn, not taken as crossed
  // Only what the parent used: the rest of the child's record stays unwritten (no page cache).
  const auto* from =
      reinterpret_cast<const ClipmemHeapSite*>(reinterpret_cast<const char*>(parent) + parent->heap_sites_offset);
  constexpr uint32_t kRest = CLIPMEM_HEAP_SITE_CAPACITY - 1;
  memcpy(sites(), from, parent->heap_sites_used * sizeof(ClipmemHeapSite));
  if (from[kRest].hash) sites()[kRest] = from[kRest];
  // The sites' frames name modules by their index in the parent's table.
  memcpy(modules, reinterpret_cast<const char*>(parent) + parent->modules_offset,
         parent->modules_used * sizeof(ClipmemModule));
  record->modules_used = parent->modules_used;
  record->heap_sample_mean = parent->heap_sample_mean;
  record->heap_sampled_live = record->heap_sampled_peak = parent->heap_sampled_live;
  record->heap_sites_used = parent->heap_sites_used;
  record->heap_samples_total = parent->heap_samples_total;
  last_snapshot_ns = 0;
  last_snapshot_total = 0;
}

}  // namespace clipmem
