// GPU memory through the vendor libraries, loaded with dlopen so clip-mem needs no CUDA to build or run:
// NVML (libnvidia-ml.so.1) for the driver, devices, memory and processes, and the CUDA driver
// (libcuda.so.1) for cuMemGetInfo as a process sees it. A missing library or driver is a reason string,
// never an error. Header-only: used by the addon (native/addon/gpu.cc) and by the C++ tests.
#pragma once
#include <dlfcn.h>

#include <cstddef>
#include <string>
#include <vector>

namespace clipmem {

struct GpuProcess {
  unsigned pid = 0;
  unsigned long long usedBytes = 0;
  bool usedKnown = false;  // NVML cannot always attribute memory to a process (e.g. in containers)
  std::string name;
};

struct NvmlDevice {
  unsigned index = 0;
  std::string name;
  unsigned long long totalBytes = 0, usedBytes = 0, freeBytes = 0;
  std::string memoryError;  // set when the memory could not be read
  std::vector<GpuProcess> processes;
  std::string processesError;
};

struct NvmlReport {
  std::string library;      // the path passed to dlopen
  std::string unavailable;  // empty when available, else why not
  std::string driverVersion;
  std::vector<NvmlDevice> devices;
};

struct CudaDevice {
  int ordinal = 0;
  std::string name;
  size_t freeBytes = 0, totalBytes = 0;
  std::string error;  // set when cuMemGetInfo could not run for this device
};

struct CudaReport {
  std::string library;
  std::string unavailable;
  int driverVersion = 0;  // e.g. 12020 for CUDA 12.2
  std::vector<CudaDevice> devices;
};

// dlopen + dlsym with the reason kept for the report. Never unloaded: the vendor libraries start
// threads and install handlers that outlive their shutdown calls.
class SharedLibrary {
 public:
  explicit SharedLibrary(const std::string& path) : handle_(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
    if (!handle_) {
      const char* message = dlerror();
      error_ = message ? message : ("dlopen(" + path + ") failed");
    }
  }
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  bool loaded() const { return handle_ != nullptr; }
  const std::string& error() const { return error_; }

  // The function, or nullptr with `missing` naming it.
  template <typename Function>
  Function symbol(const char* name, std::string* missing) const {
    void* address = handle_ ? dlsym(handle_, name) : nullptr;
    if (!address && missing && missing->empty()) *missing = name;
    return reinterpret_cast<Function>(address);
  }

 private:
  void* handle_;
  std::string error_;
};

namespace nvml {
// The subset of nvml.h used here (stable ABI since NVML 5).
using Return = int;
using Device = void*;
struct Memory {
  unsigned long long total, free, used;
};
struct ProcessInfo {  // nvmlProcessInfo_t as used by the _v2/_v3 process queries
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
};
constexpr Return kSuccess = 0;
constexpr Return kInsufficientSize = 7;
constexpr unsigned long long kValueNotAvailable = ~0ULL;
}  // namespace nvml

inline NvmlReport probeNvml(const std::string& library) {
  NvmlReport report;
  report.library = library;
  SharedLibrary nvmlLibrary(library);
  if (!nvmlLibrary.loaded()) {
    report.unavailable = nvmlLibrary.error();
    return report;
  }
  std::string missing;
  auto init = nvmlLibrary.symbol<nvml::Return (*)()>("nvmlInit_v2", &missing);
  auto shutdown = nvmlLibrary.symbol<nvml::Return (*)()>("nvmlShutdown", &missing);
  auto errorString = nvmlLibrary.symbol<const char* (*)(nvml::Return)>("nvmlErrorString", &missing);
  auto driverVersion = nvmlLibrary.symbol<nvml::Return (*)(char*, unsigned)>("nvmlSystemGetDriverVersion", &missing);
  auto deviceCount = nvmlLibrary.symbol<nvml::Return (*)(unsigned*)>("nvmlDeviceGetCount_v2", &missing);
  auto deviceByIndex =
      nvmlLibrary.symbol<nvml::Return (*)(unsigned, nvml::Device*)>("nvmlDeviceGetHandleByIndex_v2", &missing);
  auto deviceName = nvmlLibrary.symbol<nvml::Return (*)(nvml::Device, char*, unsigned)>("nvmlDeviceGetName", &missing);
  auto memoryInfo =
      nvmlLibrary.symbol<nvml::Return (*)(nvml::Device, nvml::Memory*)>("nvmlDeviceGetMemoryInfo", &missing);
  auto processName =
      nvmlLibrary.symbol<nvml::Return (*)(unsigned, char*, unsigned)>("nvmlSystemGetProcessName", &missing);
  if (!missing.empty()) {
    report.unavailable = library + " has no " + missing + " (NVML too old?)";
    return report;
  }
  using ProcessQuery = nvml::Return (*)(nvml::Device, unsigned*, nvml::ProcessInfo*);
  auto computeProcesses = nvmlLibrary.symbol<ProcessQuery>("nvmlDeviceGetComputeRunningProcesses_v3", nullptr);
  if (!computeProcesses)
    computeProcesses = nvmlLibrary.symbol<ProcessQuery>("nvmlDeviceGetComputeRunningProcesses_v2", nullptr);

  nvml::Return status = init();
  if (status != nvml::kSuccess) {
    report.unavailable = std::string("nvmlInit failed: ") + errorString(status);
    return report;
  }
  char text[96] = {0};
  if (driverVersion(text, sizeof text) == nvml::kSuccess) report.driverVersion = text;
  unsigned count = 0;
  status = deviceCount(&count);
  if (status != nvml::kSuccess) {
    report.unavailable = std::string("nvmlDeviceGetCount failed: ") + errorString(status);
    shutdown();
    return report;
  }
  for (unsigned index = 0; index < count; ++index) {
    NvmlDevice device;
    device.index = index;
    nvml::Device handle = nullptr;
    status = deviceByIndex(index, &handle);
    if (status != nvml::kSuccess) {
      device.memoryError = std::string("nvmlDeviceGetHandleByIndex failed: ") + errorString(status);
      report.devices.push_back(device);
      continue;
    }
    char name[96] = {0};
    if (deviceName(handle, name, sizeof name) == nvml::kSuccess) device.name = name;
    nvml::Memory memory{};
    status = memoryInfo(handle, &memory);
    if (status == nvml::kSuccess) {
      device.totalBytes = memory.total;
      device.usedBytes = memory.used;
      device.freeBytes = memory.free;
    } else {
      device.memoryError = std::string("nvmlDeviceGetMemoryInfo failed: ") + errorString(status);
    }
    if (!computeProcesses) {
      device.processesError = library + " has no nvmlDeviceGetComputeRunningProcesses_v2/_v3";
    } else {
      std::vector<nvml::ProcessInfo> infos(64);
      unsigned processCount = static_cast<unsigned>(infos.size());
      status = computeProcesses(handle, &processCount, infos.data());
      if (status == nvml::kInsufficientSize) {
        infos.resize(processCount + 16);
        processCount = static_cast<unsigned>(infos.size());
        status = computeProcesses(handle, &processCount, infos.data());
      }
      if (status != nvml::kSuccess) {
        device.processesError = std::string("nvmlDeviceGetComputeRunningProcesses failed: ") + errorString(status);
      } else {
        for (unsigned i = 0; i < processCount && i < infos.size(); ++i) {
          GpuProcess process;
          process.pid = infos[i].pid;
          process.usedKnown = infos[i].usedGpuMemory != nvml::kValueNotAvailable;
          process.usedBytes = process.usedKnown ? infos[i].usedGpuMemory : 0;
          char processNameText[256] = {0};
          if (processName(process.pid, processNameText, sizeof processNameText) == nvml::kSuccess)
            process.name = processNameText;
          device.processes.push_back(process);
        }
      }
    }
    report.devices.push_back(device);
  }
  shutdown();
  return report;
}

namespace cuda {
// The subset of cuda.h used here (the driver API, stable ABI).
using Result = int;
using Device = int;
using Context = void*;
constexpr Result kSuccess = 0;
}  // namespace cuda

inline CudaReport probeCuda(const std::string& library) {
  CudaReport report;
  report.library = library;
  SharedLibrary cudaLibrary(library);
  if (!cudaLibrary.loaded()) {
    report.unavailable = cudaLibrary.error();
    return report;
  }
  std::string missing;
  auto init = cudaLibrary.symbol<cuda::Result (*)(unsigned)>("cuInit", &missing);
  auto errorName = cudaLibrary.symbol<cuda::Result (*)(cuda::Result, const char**)>("cuGetErrorName", &missing);
  auto driverVersion = cudaLibrary.symbol<cuda::Result (*)(int*)>("cuDriverGetVersion", &missing);
  auto deviceCount = cudaLibrary.symbol<cuda::Result (*)(int*)>("cuDeviceGetCount", &missing);
  auto deviceGet = cudaLibrary.symbol<cuda::Result (*)(cuda::Device*, int)>("cuDeviceGet", &missing);
  auto deviceName = cudaLibrary.symbol<cuda::Result (*)(char*, int, cuda::Device)>("cuDeviceGetName", &missing);
  auto retain =
      cudaLibrary.symbol<cuda::Result (*)(cuda::Context*, cuda::Device)>("cuDevicePrimaryCtxRetain", &missing);
  auto release = cudaLibrary.symbol<cuda::Result (*)(cuda::Device)>("cuDevicePrimaryCtxRelease_v2", &missing);
  auto push = cudaLibrary.symbol<cuda::Result (*)(cuda::Context)>("cuCtxPushCurrent_v2", &missing);
  auto pop = cudaLibrary.symbol<cuda::Result (*)(cuda::Context*)>("cuCtxPopCurrent_v2", &missing);
  auto memoryInfo = cudaLibrary.symbol<cuda::Result (*)(size_t*, size_t*)>("cuMemGetInfo_v2", &missing);
  if (!missing.empty()) {
    report.unavailable = library + " has no " + missing + " (CUDA driver too old?)";
    return report;
  }
  auto describe = [&](const char* call, cuda::Result result) {
    const char* name = nullptr;
    errorName(result, &name);
    return std::string(call) + " failed: " + (name ? name : std::to_string(result));
  };
  cuda::Result result = init(0);
  if (result != cuda::kSuccess) {
    report.unavailable = describe("cuInit", result);
    return report;
  }
  driverVersion(&report.driverVersion);
  int count = 0;
  result = deviceCount(&count);
  if (result != cuda::kSuccess) {
    report.unavailable = describe("cuDeviceGetCount", result);
    return report;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CudaDevice device;
    device.ordinal = ordinal;
    cuda::Device handle = 0;
    result = deviceGet(&handle, ordinal);
    if (result != cuda::kSuccess) {
      device.error = describe("cuDeviceGet", result);
      report.devices.push_back(device);
      continue;
    }
    char name[256] = {0};
    if (deviceName(name, sizeof name, handle) == cuda::kSuccess) device.name = name;
    // cuMemGetInfo needs a context: the primary one is shared with any framework in this process.
    cuda::Context context = nullptr;
    result = retain(&context, handle);
    if (result != cuda::kSuccess) {
      device.error = describe("cuDevicePrimaryCtxRetain", result);
    } else {
      result = push(context);
      if (result != cuda::kSuccess) {
        device.error = describe("cuCtxPushCurrent", result);
      } else {
        result = memoryInfo(&device.freeBytes, &device.totalBytes);
        if (result != cuda::kSuccess) device.error = describe("cuMemGetInfo", result);
        cuda::Context popped = nullptr;
        pop(&popped);
      }
      release(handle);
    }
    report.devices.push_back(device);
  }
  return report;
}

}  // namespace clipmem
