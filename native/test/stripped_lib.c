// A stripped shared library (.dynsym only) with a static function between two exported ones, built with
// its functions kept in this order: the middle one's addresses follow stripped_first's, so a
// nearest-symbol lookup (addr2line on a stripped file) names them stripped_first. The frame of
// stripped_middle must carry no name (test/track-stacks.test.ts).
#include <stdlib.h>
#include <string.h>

__attribute__((visibility("default"), noinline)) int stripped_first(size_t size);
__attribute__((visibility("default"), noinline)) int stripped_last(size_t size);
static __attribute__((noinline)) int stripped_middle(size_t size);

int stripped_first(size_t size) { return stripped_middle(size) + 1; }

// Uses the block after the call, so the call to malloc is not a tail call and this frame stays on the stack.
static int stripped_middle(size_t size) {
  char* volatile block = malloc(size);
  int ok = block != NULL;
  if (ok) memset(block, 1, 64);
  free(block);
  return ok;
}

int stripped_last(size_t size) { return stripped_first(size) + 1; }
