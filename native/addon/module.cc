// The addon's entry point and its one list of exports. A new capability: a file under native/addon
// (CMakeLists.txt and binding.gyp pick up every .cc there), its functions declared in module.h, one line
// each below.
#include "addon/module.h"

#include "record/record.h"

namespace clipmem {
namespace {

struct Export {
  const char* name;  // the name TypeScript calls it by
  AddonFunction function;
};

const Export kFunctions[] = {
    {"becomeChildSubreaper", BecomeChildSubreaper},  // children.cc: orphans of a traced run stay clip-mem's
    {"reapChild", ReapChild},                        //
    {"probeGpu", ProbeGpu},                          // gpu.cc: NVML and the CUDA driver, loaded with dlopen
    {"mapFile", MapFile},                            // mapping.cc: a file mapped as an ArrayBuffer
    {"unmapFile", UnmapFile},                        //
    {"mappedBytes", MappedBytes},                    //
    {"residentBytes", ResidentBytes},                //
    {"prefaultForWrite", PrefaultForWrite},          // prefault.cc: a fresh buffer's pages, before a read fills it
    {"adviseHugePages", AdviseHugePages},            //
    {"probeAllocator", ProbeAllocator},              // probe_allocator.cc: what can be allocated now
    {"readResourceLimits", ReadResourceLimits},      // probe_limits.cc: getrlimit
    {"readMallinfo", ReadMallinfo},                  //
    {"readRecord", ReadRecord},                      // record.cc: the tracker's record file
    {"releaseRecordSpace", ReleaseRecordSpace},      //
    {"setPhase", SetPhase},                          //
    {"demangle", Demangle},                          //
    {"trackedFunctions", TrackedFunctions},          //
    {"deviceFunctions", DeviceFunctions},            //
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (const Export& entry : kFunctions) exports.Set(entry.name, Napi::Function::New(env, entry.function, entry.name));
  exports.Set("recordVersion", Napi::Number::New(env, CLIPMEM_RECORD_VERSION));       // record.cc reads this version
  exports.Set("recordBytes", Napi::Number::New(env, double(clipmem_record_size())));  // one process's record file
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace
}  // namespace clipmem

// NODE_API_MODULE pastes its second argument into a name: it takes an unqualified function.
static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return clipmem::Init(env, exports); }

NODE_API_MODULE(clip_mem, InitModule)
