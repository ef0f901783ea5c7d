/* The live-heap profile's test program (test/track-heap-profile.test.ts): one function holds 200 MiB, another
 * grows in 1 MiB steps until the memory runs out; both print what they hold, so the test knows the truth.
 *   holder_program kill   the grower never stops: a cgroup memory limit kills the process
 *   holder_program fail   the grower stops at its first failed malloc (under an address-space limit), exit 1
 * Blocks are written so that their pages count against a cgroup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024)

__attribute__((noinline)) static void* hold_big(void) {
  char* block = malloc(200 * MIB);
  if (block) memset(block, 1, 200 * MIB);
  printf("hold_big %d\n", 200 * MIB);
  fflush(stdout);
  return block;
}

/* Returns the number of MiB held when a malloc failed (never returns under a memory limit that kills). */
__attribute__((noinline)) static long grow_steps(void** keep, long capacity) {
  long held = 0;
  for (; held < capacity; ++held) {
    char* step = malloc(MIB);
    if (!step) break;
    memset(step, 2, MIB);
    keep[held] = step;
    printf("grow_steps %ld\n", (held + 1) * MIB);
    fflush(stdout);
  }
  return held;
}

int main(int argc, char** argv) {
  if (argc < 2 || (strcmp(argv[1], "kill") != 0 && strcmp(argv[1], "fail") != 0)) {
    fprintf(stderr, "usage: holder_program kill|fail\n");
    return 2;
  }
  static void* keep[4096];
  void* big = hold_big();
  long held = grow_steps(keep, 4096);
  printf("failed after %ld MiB\n", held);
  fflush(stdout);
  return big ? 1 : 3;
}
