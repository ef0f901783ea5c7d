// The hook list (native/record/hooks.h) is the one list of hooked functions: the call table's names come
// from it, and TypeScript's TrackedFn union (src/track/record.ts) must name the same functions. The union
// is a type, gone at run time, so this test reads it from the source and fails on a drift.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "record/record.h"

namespace {

const char* const kNames[] = CLIPMEM_FN_NAMES;

TEST(HookList, NamesTheCallTableInOrder) {
  ASSERT_EQ(sizeof kNames / sizeof kNames[0], size_t(CLIPMEM_FN_COUNT));
  EXPECT_STREQ(kNames[CLIPMEM_FN_MALLOC], "malloc");
  EXPECT_STREQ(kNames[CLIPMEM_FN_MMAP64], "mmap64");
  EXPECT_STREQ(kNames[CLIPMEM_FN_PTHREAD_CREATE], "pthread_create");
  EXPECT_STREQ(kNames[CLIPMEM_FN_MPROTECT], "mprotect");
  std::set<std::string> unique(std::begin(kNames), std::end(kNames));
  EXPECT_EQ(unique.size(), size_t(CLIPMEM_FN_COUNT)) << "a function is listed twice in native/record/hooks.h";
}

// The quoted names between `export type TrackedFn =` and the `;` that ends it.
std::vector<std::string> typescript_union(const std::string& source, const std::string& type) {
  std::vector<std::string> names;
  size_t at = source.find("export type " + type + " =");
  if (at == std::string::npos) return names;
  size_t end = source.find(';', at);
  for (size_t quote = source.find('\'', at); quote < end; quote = source.find('\'', quote + 1)) {
    size_t close = source.find('\'', quote + 1);
    names.push_back(source.substr(quote + 1, close - quote - 1));
    quote = close;
  }
  return names;
}

TEST(HookList, TypeScriptTrackedFnNamesTheSameFunctions) {
  const std::string file = std::string(CLIP_MEM_SOURCE_DIR) + "/src/track/record.ts";
  std::ifstream in(file);
  ASSERT_TRUE(in) << "cannot read " << file;
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> names = typescript_union(text.str(), "TrackedFn");
  ASSERT_FALSE(names.empty()) << "no `export type TrackedFn = 'a' | 'b' ...;` in " << file;
  std::set<std::string> typescript(names.begin(), names.end());
  std::set<std::string> native(std::begin(kNames), std::end(kNames));
  for (const std::string& name : native)
    EXPECT_TRUE(typescript.count(name)) << name << " is hooked (native/record/hooks.h) but missing from TrackedFn in "
                                        << file;
  for (const std::string& name : typescript)
    EXPECT_TRUE(native.count(name)) << name << " is in TrackedFn (" << file
                                    << ") but not in the hook list native/record/hooks.h";
  EXPECT_EQ(names.size(), typescript.size()) << "TrackedFn names a function twice";
}

}  // namespace
