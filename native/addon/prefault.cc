// prefaultForWrite(buffer) -> { hugePageBytes, populatedBytes }: readies a fresh ArrayBuffer's pages before a
// read(2) fills it (the copy load of a checkpoint, src/clip/safetensors.ts). Filling fresh anonymous memory
// costs a page fault per 4 KiB inside the read, and on this VM each 4 KiB page also costs TLB misses while
// the bytes are copied: a plain read of 577 MiB into a fresh buffer took ~2.2 s, of which ~2.1 s system time.
//   - the buffer's 2 MiB-aligned interior is advised MADV_HUGEPAGE, so that where transparent huge pages
//     are in `madvise` mode (or `always`) the kernel backs it with 2 MiB pages: one fault and one TLB entry
//     per 2 MiB. Only whole 2 MiB ranges inside the buffer, which the read writes entirely: RSS cannot grow;
//   - its page-aligned interior is populated at once (MADV_POPULATE_WRITE, Linux 5.14), which takes the
//     faults in one call instead of one exception each during the copy.
// Neither allocates: the buffer stays the one allocation the program made (a failure under a limit stays
// that allocation's), and the pages populated are the ones the read would have faulted in. Either advice
// is skipped where the kernel refuses it (0 bytes reported): the read then faults the pages in as before.
//
// adviseHugePages(buffer) -> bytes advised: the huge-page advice alone, for a fresh buffer the program fills
// bit by bit (the training step's AdamW moments, written as each gradient comes): populating it at once would
// make it resident before the program writes it, which RSS would show earlier than without clip-mem's help.
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "addon/module.h"

#ifndef MADV_POPULATE_WRITE  // Linux 5.14; older glibc headers lack the name
#define MADV_POPULATE_WRITE 23
#endif

namespace clipmem {
namespace {

constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

// The bytes of [begin, end) advised with `advice` once rounded inward to `unit`; 0 when empty or refused.
size_t AdviseInterior(uintptr_t begin, uintptr_t end, uintptr_t unit, int advice) {
  const uintptr_t first = (begin + unit - 1) & ~(unit - 1);
  const uintptr_t last = end & ~(unit - 1);
  if (last <= first) return 0;
  return madvise(reinterpret_cast<void*>(first), last - first, advice) == 0 ? last - first : 0;
}

// The [begin, end) of the ArrayBuffer in info[0]; a TypeError naming `function` when it is not one.
std::pair<uintptr_t, uintptr_t> BufferBounds(const Napi::CallbackInfo& info, const char* function) {
  if (info.Length() < 1 || !info[0].IsArrayBuffer())
    throw Napi::TypeError::New(info.Env(), std::string(function) + "(buffer): buffer must be an ArrayBuffer");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buffer.Data());
  return {begin, begin + buffer.ByteLength()};
}

}  // namespace

Napi::Value PrefaultForWrite(const Napi::CallbackInfo& info) {
  const auto [begin, end] = BufferBounds(info, "prefaultForWrite");
  Napi::Env env = info.Env();
  // Huge pages first: populating first would fault in 4 KiB pages that the advice then cannot use.
  const size_t huge = AdviseInterior(begin, end, kHugePage, MADV_HUGEPAGE);
  const size_t populated = AdviseInterior(begin, end, uintptr_t(sysconf(_SC_PAGESIZE)), MADV_POPULATE_WRITE);
  Napi::Object result = Napi::Object::New(env);
  result.Set("hugePageBytes", Napi::Number::New(env, double(huge)));
  result.Set("populatedBytes", Napi::Number::New(env, double(populated)));
  return result;
}

Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  const auto [begin, end] = BufferBounds(info, "adviseHugePages");
  return Napi::Number::New(info.Env(), double(AdviseInterior(begin, end, kHugePage, MADV_HUGEPAGE)));
}

}  // namespace clipmem
