// The addon's capabilities: each file under native/addon contributes the functions declared here, and
// module.cc registers them all from one list (kFunctions), so the addon's whole surface reads in one place.
#pragma once
#include <napi.h>

namespace clipmem {

using AddonFunction = Napi::Value (*)(const Napi::CallbackInfo& info);

// children.cc
Napi::Value BecomeChildSubreaper(const Napi::CallbackInfo& info);
Napi::Value ReapChild(const Napi::CallbackInfo& info);
// gpu.cc
Napi::Value ProbeGpu(const Napi::CallbackInfo& info);
// mapping.cc
Napi::Value MapFile(const Napi::CallbackInfo& info);
Napi::Value UnmapFile(const Napi::CallbackInfo& info);
Napi::Value MappedBytes(const Napi::CallbackInfo& info);
Napi::Value ResidentBytes(const Napi::CallbackInfo& info);
// prefault.cc
Napi::Value PrefaultForWrite(const Napi::CallbackInfo& info);
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info);
// probe_allocator.cc
Napi::Value ProbeAllocator(const Napi::CallbackInfo& info);
// probe_limits.cc
Napi::Value ReadResourceLimits(const Napi::CallbackInfo& info);
Napi::Value ReadMallinfo(const Napi::CallbackInfo& info);
// record.cc
Napi::Value ReadRecord(const Napi::CallbackInfo& info);
Napi::Value ReleaseRecordSpace(const Napi::CallbackInfo& info);
Napi::Value SetPhase(const Napi::CallbackInfo& info);
Napi::Value Demangle(const Napi::CallbackInfo& info);
Napi::Value TrackedFunctions(const Napi::CallbackInfo& info);
Napi::Value DeviceFunctions(const Napi::CallbackInfo& info);

}  // namespace clipmem
