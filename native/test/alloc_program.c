/* A small program the tracker's tests run under clip-mem trace: each mode makes allocations that fail
 * under a limit or fault injection, with sizes the tests check byte for byte.
 *   alloc_program probes        every tracked function once with a large, distinct size
 *   alloc_program repeat        malloc of 256 MiB + 1, + 3, + 2 from one call site, then of 256 MiB + 4 from another
 *   alloc_program stripped LIB BYTES   dlopens LIB (stripped_lib.c) and calls its stripped_last(BYTES)
 *   alloc_program small         every tracked function once with a small, distinct size (for CLIPMEM_FAIL)
 *   alloc_program calloc-overflow
 *   alloc_program mapfile PATH BYTES   a read-only private mapping of a sparse file
 *   alloc_program stress THREADS PAIRS malloc/free pairs on THREADS threads, then fork + exec
 *   alloc_program peak                 heap growth and shrinkage: prints its peak above the start (exact)
 *   alloc_program loop PAIRS [THREADS] 64-byte malloc/free pairs, split evenly over THREADS threads (default 1:
 *                                      the main thread itself) (scripts/bench-tracker)
 *   alloc_program threads COUNT        COUNT short threads one after another (more than the record's slots)
 *   alloc_program errno                errno survives tracked calls that succeed (exit 0) or not (exit 1)
 *   alloc_program dontunmap            1 MiB anonymous mapping moved by mremap(MREMAP_DONTUNMAP): 2 MiB stay mapped
 *   alloc_program unmap-parts          1 MiB anonymous mapping: munmap of its middle, its tail, then of the whole
 *                                      MiB (512 KiB of it already gone), a phase after each; then a 1 MiB PROT_NONE
 *                                      reservation: 256 KiB of its middle made read-write, 128 KiB of that back
 *                                      to PROT_NONE, the whole unmapped; then 16 KiB of this program's file mapped
 *                                      PROT_NONE, made readable, unmapped
 *   alloc_program remap-parts          mremap of ranges inside mappings: the tail of a 1 MiB mapping grown in place,
 *                                      its middle moved (MREMAP_FIXED) into a PROT_NONE reservation and grown, then
 *                                      shrunk in place there, a piece of the tail copied with MREMAP_DONTUNMAP; all
 *                                      unmapped (over the holes left); a phase after each
 *   alloc_program commit BYTES         reserves BYTES (rounded up to pages) PROT_NONE, then makes exactly BYTES
 *                                      of it read-write with mprotect (how V8 and glibc arenas commit memory)
 *   alloc_program fork BYTES           maps BYTES private read-write (untouched), prints what a fork must commit
 *                                      (VmData + VmStk, as "fork commits N"), forks a child that exits at once
 *   alloc_program hugetlb              maps 2 MiB with MAP_HUGETLB (refused with ENOMEM when no huge page is free) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MREMAP_DONTUNMAP /* Linux 5.7; older glibc headers lack the name */
#define MREMAP_DONTUNMAP 4
#endif

static void phase(const char* label) {
  int (*set_phase)(const char*) = (int (*)(const char*))dlsym(RTLD_DEFAULT, "clipmem_tracker_set_phase");
  if (set_phase) set_phase(label);
}

static void* idle(void* arg) { return arg; }

static void report(const char* what, int ok) { printf("%s %s\n", what, ok ? "ok" : "failed"); }

/* A "Key:   N kB" line of /proc/self/status, in KiB (0 when absent). */
static unsigned long long status_kib(const char* key) {
  char text[4096];
  FILE* file = fopen("/proc/self/status", "r");
  size_t n = file ? fread(text, 1, sizeof text - 1, file) : 0;
  if (file) fclose(file);
  text[n] = 0;
  const char* line = strstr(text, key);
  return line ? strtoull(line + strlen(key), NULL, 10) : 0;
}

/* One call of each tracked function, sized `base + k` so every failure is recognizable. */
static void each_function(size_t base) {
  void* p = malloc(base + 1);
  report("malloc", p != NULL);
  free(p);
  p = calloc(base + 2, 1);
  report("calloc", p != NULL);
  free(p);
  void* small = malloc(16);
  p = realloc(small, base + 3);
  report("realloc", p != NULL);
  free(p ? p : small);
  p = NULL;
  int error = posix_memalign(&p, 64, base + 4);
  report("posix_memalign", error == 0);
  free(p);
  p = aligned_alloc(4096, base + 4096 * 2);
  report("aligned_alloc", p != NULL);
  free(p);
  p = mmap(NULL, base + 5, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  report("mmap", p != MAP_FAILED);
  if (p != MAP_FAILED) munmap(p, base + 5);
  void* page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  p = mremap(page, 4096, base + 6 * 4096, MREMAP_MAYMOVE);
  report("mremap", p != MAP_FAILED);
  munmap(p != MAP_FAILED ? p : page, p != MAP_FAILED ? base + 6 * 4096 : 4096);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, base + 7 * 4096);
  pthread_t thread;
  error = pthread_create(&thread, &attr, idle, NULL);
  report("pthread_create", error == 0);
  if (error == 0) pthread_join(thread, NULL);
  pthread_attr_destroy(&attr);
}

struct Stress {
  long pairs;
};

static void* stress_thread(void* arg) {
  long pairs = ((struct Stress*)arg)->pairs;
  void* window[16] = {0};
  uint32_t seed = (uint32_t)(uintptr_t)&window;
  for (long i = 0; i < pairs; i++) {
    seed = seed * 1664525u + 1013904223u;
    int slot = (int)(seed >> 28);
    free(window[slot]);
    window[slot] = malloc(1 + (seed >> 8) % 4096);
  }
  for (int i = 0; i < 16; i++) free(window[i]);
  return NULL;
}

static void* loop_thread(void* arg) {
  long pairs = ((struct Stress*)arg)->pairs;
  for (long i = 0; i < pairs; i++) {
    void* volatile p = malloc(64);
    free(p);
  }
  return NULL;
}

static int stress(int threads, long pairs) {
  pthread_t ids[64];
  struct Stress arg = {pairs};
  struct Stress warm = {1000};
  if (threads > 64) threads = 64;
  printf("stress: %d threads x %ld malloc/free pairs\n", threads, pairs);
  fflush(stdout);
  /* Warm-up: glibc caches thread stacks and their TLS blocks; the measured round reuses them. */
  for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, stress_thread, &warm);
  for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  phase("before stress");
  for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, stress_thread, &arg);
  for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  pid_t child = fork();
  if (child == 0) {
    struct Stress small = {100000};
    stress_thread(&small);
    execl("/bin/true", "true", (char*)NULL);
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  phase("after stress");
  printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("alloc_program %s\n", argc > 1 ? argv[1] : "");
  if (argc > 1 && strcmp(argv[1], "probes") == 0) {
    phase("probes");
    each_function(256u << 20); /* 256 MiB: fails under a 64 MiB RLIMIT_AS */
  } else if (argc > 1 && strcmp(argv[1], "repeat") == 0) {
    static const size_t extra[] = {1, 3, 2};
    for (int i = 0; i < 3; i++) report("malloc", malloc((256u << 20) + extra[i]) != NULL);
    report("malloc", malloc((256u << 20) + 4) != NULL);
  } else if (argc > 3 && strcmp(argv[1], "stripped") == 0) {
    void* lib = dlopen(argv[2], RTLD_NOW);
    int (*last)(size_t) = lib ? (int (*)(size_t))dlsym(lib, "stripped_last") : NULL;
    if (!last) return fprintf(stderr, "%s\n", dlerror()), 2;
    report("stripped_last", last(strtoull(argv[3], NULL, 10)) == 3);
  } else if (argc > 1 && strcmp(argv[1], "small") == 0) {
    phase("small");
    each_function(1000000); /* CLIPMEM_FAIL=...:above=999999 fails exactly these */
  } else if (argc > 1 && strcmp(argv[1], "calloc-overflow") == 0) {
    volatile size_t count = (size_t)1 << 62; /* volatile: the compiler must not see the overflow coming */
    void* p = calloc(count, 16);
    report("calloc", p != NULL);
  } else if (argc > 3 && strcmp(argv[1], "mapfile") == 0) {
    size_t bytes = strtoull(argv[3], NULL, 10);
    int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) return perror(argv[2]), 2;
    phase("map weights read-only");
    void* p = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    report("mmap", p != MAP_FAILED);
    close(fd);
    return p == MAP_FAILED ? 1 : 0;
  } else if (argc > 1 && strcmp(argv[1], "peak") == 0) {
    /* The heap grows across many of the tracker's 1 MiB folds, shrinks, grows again less far (malloc,
     * calloc, realloc both ways, realloc to 0), and returns to where it started; prints the highest point
     * above the start in malloc_usable_size bytes. */
    enum { kBlocks = 4000 };
    static void* blocks[kBlocks];
    long long running = 0, highest = 0;
    phase("before peak");
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(100 + (size_t)i * 3);
      running += (long long)malloc_usable_size(blocks[i]);
      if (running > highest) highest = running;
    }
    for (int i = 0; i < kBlocks; i += 2) running -= (long long)malloc_usable_size(blocks[i]), free(blocks[i]);
    for (int i = 0; i < kBlocks; i += 2) {
      blocks[i] = i % 4 ? calloc(50 + (size_t)i, 1) : malloc(50 + (size_t)i);
      running += (long long)malloc_usable_size(blocks[i]);
      if (running > highest) highest = running;
    }
    for (int i = 1; i < kBlocks; i += 2) { /* realloc in place or moved, larger and smaller */
      running -= (long long)malloc_usable_size(blocks[i]);
      blocks[i] = realloc(blocks[i], i % 3 ? 20 + (size_t)i : 200 + (size_t)i * 5);
      running += (long long)malloc_usable_size(blocks[i]);
      if (running > highest) highest = running;
    }
    running -= (long long)malloc_usable_size(blocks[1]);
    if (realloc(blocks[1], 0) != NULL) return printf("realloc(p, 0) did not free\n"), 1;
    blocks[1] = NULL;
    for (int i = 0; i < kBlocks; i++) free(blocks[i]);
    phase("after peak");
    printf("peak above start %lld\n", highest);
  } else if (argc > 2 && strcmp(argv[1], "loop") == 0) {
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (threads < 1 || threads > 64) return fprintf(stderr, "loop: THREADS must be 1 to 64\n"), 2;
    struct Stress share = {atol(argv[2]) / threads};
    if (threads == 1) {
      loop_thread(&share);
    } else {
      pthread_t ids[64];
      for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, loop_thread, &share);
      for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    }
  } else if (argc > 1 && strcmp(argv[1], "errno") == 0) {
    /* Enough traffic to cross the tracker's fold and sampling points (1 MiB, 64 MiB of change). */
    for (int round = 0; round < 200; round++) {
      errno = 4321;
      void* big = malloc(1 << 20);
      void* mapped = mmap(NULL, 70 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      munmap(mapped, 70 << 20);
      free(big);
      if (errno != 4321) return printf("errno changed to %d in round %d\n", errno, round), 1;
    }
    printf("errno preserved\n");
  } else if (argc > 2 && strcmp(argv[1], "threads") == 0) {
    struct Stress few = {1000};
    pthread_t id;
    pthread_create(&id, NULL, stress_thread, &few); /* warm glibc's stack cache */
    pthread_join(id, NULL);
    phase("before threads");
    for (int i = 0, n = atoi(argv[2]); i < n; i++) {
      pthread_create(&id, NULL, stress_thread, &few);
      pthread_join(id, NULL);
    }
    phase("after threads");
  } else if (argc > 1 && strcmp(argv[1], "dontunmap") == 0) {
    void* old = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* moved = old == MAP_FAILED ? MAP_FAILED : mremap(old, 1 << 20, 1 << 20, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    report("mremap", moved != MAP_FAILED);
  } else if (argc > 1 && strcmp(argv[1], "unmap-parts") == 0) {
    const size_t kib = 1024;
    phase("start");
    char* region = mmap(NULL, 1024 * kib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return report("mmap", 0), 1;
    phase("mapped");
    int ok = munmap(region + 256 * kib, 256 * kib) == 0; /* the middle */
    phase("middle unmapped");
    ok = ok && munmap(region + 768 * kib, 256 * kib) == 0; /* the tail */
    phase("tail unmapped");
    ok = ok && munmap(region, 1024 * kib) == 0; /* the two pieces left and the two holes */
    phase("all unmapped");
    char* reservation = mmap(NULL, 1024 * kib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reservation == MAP_FAILED) return report("mmap", 0), 1;
    phase("reserved");
    ok = ok && mprotect(reservation + 256 * kib, 256 * kib, PROT_READ | PROT_WRITE) == 0;
    phase("committed");
    ok = ok && mprotect(reservation + 256 * kib, 128 * kib, PROT_NONE) == 0;
    phase("decommitted");
    ok = ok && munmap(reservation, 1024 * kib) == 0;
    phase("reservation unmapped");
    int fd = open("/proc/self/exe", O_RDONLY);
    char* file = fd < 0 ? MAP_FAILED : mmap(NULL, 16 * kib, PROT_NONE, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) return report("mmap", 0), 1;
    close(fd);
    phase("file reserved");
    ok = ok && mprotect(file, 16 * kib, PROT_READ) == 0;
    phase("file readable");
    ok = ok && munmap(file, 16 * kib) == 0;
    phase("file unmapped");
    report("munmap", ok);
  } else if (argc > 1 && strcmp(argv[1], "remap-parts") == 0) {
    const size_t kib = 1024;
    phase("start");
    char* region = mmap(NULL, 2048 * kib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return report("mmap", 0), 1;
    /* 1 MiB stays; the free MiB above it is room to grow in place (nothing else maps in between). */
    int ok = munmap(region + 1024 * kib, 1024 * kib) == 0;
    phase("mapped");
    ok = ok && mremap(region + 768 * kib, 256 * kib, 768 * kib, 0) == region + 768 * kib;
    phase("tail grown in place");
    char* dest = mmap(NULL, 1024 * kib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (dest == MAP_FAILED) return report("mmap", 0), 1;
    phase("destination reserved");
    char* moved = ok ? mremap(region + 256 * kib, 256 * kib, 512 * kib, MREMAP_MAYMOVE | MREMAP_FIXED, dest + 256 * kib)
                     : MAP_FAILED;
    ok = moved == dest + 256 * kib;
    phase("middle moved");
    ok = ok && mremap(moved, 512 * kib, 128 * kib, 0) == moved;
    phase("moved shrunk in place");
    char* copy = ok ? mremap(region + 1024 * kib, 256 * kib, 256 * kib, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) : MAP_FAILED;
    ok = copy != MAP_FAILED;
    phase("part copied with DONTUNMAP");
    ok = ok && munmap(region, 1536 * kib) == 0 && munmap(dest, 1024 * kib) == 0 && munmap(copy, 256 * kib) == 0;
    phase("all unmapped");
    report("mremap", ok);
  } else if (argc > 2 && strcmp(argv[1], "commit") == 0) {
    size_t bytes = strtoull(argv[2], NULL, 10);
    size_t reserved = (bytes + 4095) & ~(size_t)4095;
    phase("reserve");
    void* reservation = mmap(NULL, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reservation == MAP_FAILED) return report("mmap", 0), 1;
    phase("commit");
    int ok = mprotect(reservation, bytes, PROT_READ | PROT_WRITE) == 0;
    report("mprotect", ok);
    return ok ? 0 : 1;
  } else if (argc > 1 && strcmp(argv[1], "hugetlb") == 0) {
    int ok =
        mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0) != MAP_FAILED;
    report("mmap", ok);
    return ok ? 0 : 1;
  } else if (argc > 2 && strcmp(argv[1], "fork") == 0) {
    size_t bytes = strtoull(argv[2], NULL, 10);
    if (mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
      return report("mmap", 0), 1;
    printf("fork commits %llu\n", (unsigned long long)status_kib("VmData:") * 1024 + status_kib("VmStk:") * 1024);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) _exit(0);
    int status = 0;
    int ok = child > 0 && waitpid(child, &status, 0) == child;
    if (!ok) perror("fork");
    report("fork", ok);
    return ok ? 0 : 1;
  } else if (argc > 3 && strcmp(argv[1], "stress") == 0) {
    return stress(atoi(argv[2]), atol(argv[3]));
  } else {
    fprintf(stderr,
            "usage: alloc_program probes|small|calloc-overflow|mapfile PATH BYTES|stress THREADS PAIRS|peak|loop "
            "PAIRS [THREADS]|threads COUNT|errno|dontunmap|unmap-parts|remap-parts|commit BYTES|fork BYTES|hugetlb\n");
    return 2;
  }
  return 0;
}
