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
const char* const kDeviceNames[] = CLIPMEM_DEVICE_FN_NAMES;

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

// A TypeScript union of src/track/record.ts against a native list.
void expect_same_names(const std::string& type, const std::set<std::string>& native, const char* list) {
  const std::string file = std::string(CLIP_MEM_SOURCE_DIR) + "/src/track/record.ts";
  std::ifstream in(file);
  ASSERT_TRUE(in) << "cannot read " << file;
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> names = typescript_union(text.str(), type);
  ASSERT_FALSE(names.empty()) << "no `export type " << type << " = 'a' | 'b' ...;` in " << file;
  std::set<std::string> typescript(names.begin(), names.end());
  for (const std::string& name : native)
    EXPECT_TRUE(typescript.count(name)) << name << " is hooked (" << list << ") but missing from " << type << " in "
                                        << file;
  for (const std::string& name : typescript)
    EXPECT_TRUE(native.count(name)) << name << " is in " << type << " (" << file << ") but not in the hook list "
                                    << list;
  EXPECT_EQ(names.size(), typescript.size()) << type << " names a function twice";
}

TEST(HookList, TypeScriptTrackedFnNamesTheSameFunctions) {
  expect_same_names("TrackedFn", std::set<std::string>(std::begin(kNames), std::end(kNames)), "native/record/hooks.h");
}

TEST(HookList, TypeScriptDeviceFnNamesTheSameFunctions) {
  ASSERT_EQ(sizeof kDeviceNames / sizeof kDeviceNames[0], size_t(CLIPMEM_DEVICE_FN_COUNT));
  EXPECT_STREQ(kDeviceNames[CLIPMEM_DEVICE_FN_CUDA_MALLOC], "cudaMalloc");
  EXPECT_STREQ(kDeviceNames[CLIPMEM_DEVICE_FN_CU_MEM_ALLOC], "cuMemAlloc_v2");
  expect_same_names("DeviceFn", std::set<std::string>(std::begin(kDeviceNames), std::end(kDeviceNames)),
                    "native/record/device_hooks.h");
}

}  // namespace
