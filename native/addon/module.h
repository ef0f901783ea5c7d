// Each capability file (probe.cc, mapping.cc, ...) registers an initializer that adds its functions to
// the addon's exports, so adding a capability never touches a central list.
#pragma once
#include <napi.h>

namespace clipmem {

using Initializer = void (*)(Napi::Env env, Napi::Object exports);

struct Capability {
  explicit Capability(Initializer init);
};

}  // namespace clipmem
