// /proc readers (no allocation): see proc.h.
#include "preload/proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "preload/state.h"

namespace clipmem {

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
      if (*field == '/')
        snprintf(path, path_size, "%s", field);
      else
        *flags |= MAP_ANONYMOUS, path[0] = 0;
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

void read_rlimits(int64_t* as, int64_t* data) {
  rlimit limit;
  *as = getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? int64_t(limit.rlim_cur) : -1;
  *data = getrlimit(RLIMIT_DATA, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? int64_t(limit.rlim_cur) : -1;
}

}  // namespace clipmem
