#include "addon/module.h"

#include <vector>

namespace clipmem {

static std::vector<Initializer>& initializers() {
  static std::vector<Initializer> list;  // function-local: safe against static initialization order
  return list;
}

Capability::Capability(Initializer init) { initializers().push_back(init); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (Initializer init : initializers()) init(env, exports);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace clipmem

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return clipmem::Init(env, exports); }

NODE_API_MODULE(clip_mem, InitModule)
