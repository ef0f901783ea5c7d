// Fault injection (see inject.h).
#include "preload/inject.h"

#include <stdlib.h>
#include <string.h>

namespace clipmem {
namespace {

// Fault injection (CLIPMEM_FAIL).
struct Injection {
  bool active;
  uint64_t nth;  // fail exactly the nth call (1-based), 0: unused
  bool has_above;
  uint64_t above;  // fail every call asking for more than this many bytes
  uint64_t calls;
};
Injection injections[CLIPMEM_FN_COUNT];

int fn_by_name(const char* name, size_t length) {
  static const char* const names[] = CLIPMEM_FN_NAMES;
  for (int i = 0; i < CLIPMEM_FN_COUNT; ++i)
    if (strlen(names[i]) == length && strncmp(names[i], name, length) == 0) return i;
  return -1;
}

}  // namespace

bool inject(int fn, uint64_t size) {
  Injection& rule = injections[fn];
  if (!rule.active) return false;
  uint64_t call = __atomic_add_fetch(&rule.calls, uint64_t(1), __ATOMIC_RELAXED);
  if ((rule.nth && call == rule.nth) || (rule.has_above && size > rule.above)) {
    add(record->injected_faults, 1u);
    return true;
  }
  return false;
}

// CLIPMEM_FAIL="fn:nth=N,fn:above=S,...". A bad rule is loud and ignored.
void parse_injections(const char* spec) {
  while (spec && *spec) {
    const char* end = strchr(spec, ',');
    size_t length = end ? size_t(end - spec) : strlen(spec);
    const char* colon = static_cast<const char*>(memchr(spec, ':', length));
    int fn = colon ? fn_by_name(spec, size_t(colon - spec)) : -1;
    char* number_end = nullptr;
    unsigned long long value = 0;
    bool nth = false, ok = false;
    if (fn >= 0) {
      const char* number = nullptr;
      if (strncmp(colon + 1, "nth=", 4) == 0)
        nth = true, number = colon + 5;
      else if (strncmp(colon + 1, "above=", 6) == 0)
        number = colon + 7;
      // Digits only, up to the rule's end: strtoull alone takes "" as 0 (nth=0 never fails, above=0
      // fails everything) and "-1" as 2^64-1.
      if (number && *number >= '0' && *number <= '9') value = strtoull(number, &number_end, 10);
      ok = number_end == spec + length && !(nth && value == 0);
    }
    if (!ok) {
      char rule[128];
      snprintf(rule, sizeof rule, "%.*s", int(length), spec);
      say(CLIPMEM_ENV_FAIL ": cannot read rule \"", rule,
          "\"; write fn:nth=N (N >= 1) or fn:above=BYTES with fn one of malloc, calloc, realloc, ..., mmap, mremap, "
          "pthread_create, mprotect, fork");
    } else {
      injections[fn].active = true;
      if (nth)
        injections[fn].nth = value;
      else
        injections[fn].has_above = true, injections[fn].above = value;
      any_injection = true;
    }
    spec = end ? end + 1 : nullptr;
  }
}

void reset_injection_calls() {
  for (Injection& rule : injections) rule.calls = 0;
}

__attribute__((noinline, cold)) bool inject_heap(int fn, uint64_t size, uint64_t nmemb, uint64_t elem_size,
                                                 uint64_t alignment, const void* old, uint64_t old_size,
                                                 uint32_t flags) {
  if (!inject(fn, size)) return false;
  heap_failure(fn, size, nmemb, elem_size, alignment, old, old_size, ENOMEM, flags | CLIPMEM_FAILURE_INJECTED);
  return true;
}

}  // namespace clipmem
