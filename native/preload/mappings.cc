// The mapping table (see mappings.h).
#include "preload/mappings.h"

#include <sys/mman.h>

#include "preload/state.h"

namespace clipmem {
namespace {

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

}  // namespace

void map_add(uintptr_t start, uint64_t length, int kind) {
  raise_peak(kind_peak(kind), add(kind_counter(kind), int64_t(length)));
  map_insert(start, length, kind);
}

namespace {

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

}  // namespace

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

}  // namespace clipmem
