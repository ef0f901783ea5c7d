// Capability: GPU memory through NVML and the CUDA driver, both loaded by dlopen (native/probe/gpu_probe.h).
#include "addon/module.h"
#include "probe/gpu_probe.h"

namespace {

// What NVML's and CUDA's reports share: the library, "unavailable" with the reason, else the driver's
// version and each device as `deviceToObject` makes it.
template <typename Report, typename DeviceToObject>
Napi::Object reportToObject(Napi::Env env, const Report& report, DeviceToObject deviceToObject) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("library", report.library);
  if (!report.unavailable.empty()) {
    object.Set("unavailable", report.unavailable);
    return object;
  }
  object.Set("driverVersion", report.driverVersion);
  Napi::Array devices = Napi::Array::New(env, report.devices.size());
  for (size_t i = 0; i < report.devices.size(); ++i)
    devices.Set(static_cast<uint32_t>(i), deviceToObject(report.devices[i]));
  object.Set("devices", devices);
  return object;
}

Napi::Object nvmlDeviceToObject(Napi::Env env, const clipmem::NvmlDevice& device) {
  Napi::Object entry = Napi::Object::New(env);
  entry.Set("index", device.index);
  entry.Set("name", device.name);
  if (device.memoryError.empty()) {
    entry.Set("total", static_cast<double>(device.totalBytes));
    entry.Set("used", static_cast<double>(device.usedBytes));
    entry.Set("free", static_cast<double>(device.freeBytes));
  } else {
    entry.Set("memoryError", device.memoryError);
  }
  if (device.processesError.empty()) {
    Napi::Array processes = Napi::Array::New(env, device.processes.size());
    for (size_t p = 0; p < device.processes.size(); ++p) {
      const clipmem::GpuProcess& process = device.processes[p];
      Napi::Object processEntry = Napi::Object::New(env);
      processEntry.Set("pid", process.pid);
      processEntry.Set("name", process.name);
      if (process.usedKnown) processEntry.Set("used", static_cast<double>(process.usedBytes));
      processes.Set(static_cast<uint32_t>(p), processEntry);
    }
    entry.Set("processes", processes);
  } else {
    entry.Set("processesError", device.processesError);
  }
  return entry;
}

Napi::Object cudaDeviceToObject(Napi::Env env, const clipmem::CudaDevice& device) {
  Napi::Object entry = Napi::Object::New(env);
  entry.Set("ordinal", device.ordinal);
  entry.Set("name", device.name);
  if (device.error.empty()) {
    entry.Set("free", static_cast<double>(device.freeBytes));
    entry.Set("total", static_cast<double>(device.totalBytes));
  } else {
    entry.Set("error", device.error);
  }
  return entry;
}

}  // namespace

namespace clipmem {

// probeGpu(nvmlLibrary, cudaLibrary): the paths come from the TS layer (defaults or env overrides).
Napi::Value ProbeGpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "probeGpu(nvmlLibrary: string, cudaLibrary: string)");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("nvml",
             reportToObject(env, clipmem::probeNvml(info[0].As<Napi::String>().Utf8Value()),
                            [env](const clipmem::NvmlDevice& device) { return nvmlDeviceToObject(env, device); }));
  result.Set("cuda",
             reportToObject(env, clipmem::probeCuda(info[1].As<Napi::String>().Utf8Value()),
                            [env](const clipmem::CudaDevice& device) { return cudaDeviceToObject(env, device); }));
  return result;
}

}  // namespace clipmem
