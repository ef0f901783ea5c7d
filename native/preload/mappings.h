// The mapping table: the mappings the tracker saw (mmap, mremap), by start address, so that munmap,
// mremap and mprotect can move or subtract exactly what mmap added to the anonymous, file and reserved
// counters.
#pragma once
#include <stdint.h>

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

enum MapKind { kAnon, kFile, kReserved };

// Counts [start, start+length) as mapped of `kind` and remembers it.
void map_add(uintptr_t start, uint64_t length, int kind);
// Subtracts [start, start+length) from what the tracker counts as mapped.
void map_remove(uintptr_t start, uint64_t length);
// The kind of the tracked mapping holding `start` (anonymous if the tracker never saw it).
int map_kind_at(uintptr_t start, uintptr_t end);
// The kind a mapping of `kind` has after mprotect(prot).
int reprotected_kind(int kind, int prot);
// Moves the bytes of [start, start+length) between reserved and committed after mprotect(prot).
void map_reprotect(uintptr_t start, uint64_t length, int prot);

}  // namespace clipmem

#pragma GCC visibility pop
