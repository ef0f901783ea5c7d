// Readers of /proc for the failure path and the samples. None allocates: they run inside a failing
// allocation, where malloc may be exactly what fails.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// Internal to libclipmem_preload.so: hidden, so calls and data accesses across its files stay direct
// (no PLT or GOT indirection), as they were when the tracker was one file.
#pragma GCC visibility push(hidden)

namespace clipmem {

// Reads a small file into buf (NUL-terminated); returns the length or -1.
ssize_t read_small_file(const char* path, char* buf, size_t size);
// "Key:   1234 kB" -> bytes; -1 if the key is absent.
int64_t field_kib(const char* text, const char* key);
int64_t read_number_file(const char* path);
// One pass over /proc/self/maps: the number of mappings, and (address nonzero) the mapping holding it.
int64_t scan_maps(uintptr_t address, int* flags, char* path, size_t path_size);
// /proc/self/statm: virtual size and resident bytes (-1 if unreadable).
void read_statm(int64_t* vm_size, int64_t* rss);
// RLIMIT_AS and RLIMIT_DATA in force now, in bytes (-1: unlimited).
void read_rlimits(int64_t* as, int64_t* data);

}  // namespace clipmem

#pragma GCC visibility pop
