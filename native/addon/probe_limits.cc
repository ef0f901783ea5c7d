// Capability: the process's resource limits (getrlimit) and glibc's malloc state (mallinfo2).
#include <malloc.h>
#include <sys/resource.h>

#include "addon/module.h"

namespace {

Napi::Value limitValue(Napi::Env env, rlim_t value) {
  if (value == RLIM_INFINITY) return Napi::String::New(env, "unlimited");
  return Napi::Number::New(env, static_cast<double>(value));
}

}  // namespace

namespace clipmem {

// { as: { soft, hard }, data: ..., ... }: a number, or "unlimited".
Napi::Value ReadResourceLimits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static const struct {
    const char* name;
    int resource;
  } resources[] = {
      {"as", RLIMIT_AS},       {"data", RLIMIT_DATA},       {"rss", RLIMIT_RSS},
      {"stack", RLIMIT_STACK}, {"memlock", RLIMIT_MEMLOCK}, {"nproc", RLIMIT_NPROC},
  };
  Napi::Object limits = Napi::Object::New(env);
  for (const auto& resource : resources) {
    struct rlimit limit {};
    if (getrlimit(resource.resource, &limit) != 0) continue;  // cannot fail for these resources on Linux
    Napi::Object pair = Napi::Object::New(env);
    pair.Set("soft", limitValue(env, limit.rlim_cur));
    pair.Set("hard", limitValue(env, limit.rlim_max));
    limits.Set(resource.name, pair);
  }
  return limits;
}

// glibc's view of its heap: how much it holds from the kernel, how much of that is in use. Clusters run old
// glibc: before 2.33 only mallinfo() exists, whose int fields wrap above 2 GiB.
Napi::Value ReadMallinfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if __GLIBC_PREREQ(2, 33)
  struct mallinfo2 state = mallinfo2();
#else
  struct mallinfo state = mallinfo();
#endif
  Napi::Object result = Napi::Object::New(env);
  result.Set("arena", Napi::Number::New(env, static_cast<double>(state.arena)));        // main heap from brk
  result.Set("hblkhd", Napi::Number::New(env, static_cast<double>(state.hblkhd)));      // bytes in mmap'd blocks
  result.Set("hblks", Napi::Number::New(env, static_cast<double>(state.hblks)));        // number of mmap'd blocks
  result.Set("uordblks", Napi::Number::New(env, static_cast<double>(state.uordblks)));  // allocated bytes
  result.Set("fordblks", Napi::Number::New(env, static_cast<double>(state.fordblks)));  // free bytes held
  result.Set("keepcost", Napi::Number::New(env, static_cast<double>(state.keepcost)));  // releasable top
  return result;
}

}  // namespace clipmem
