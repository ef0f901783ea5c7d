// native-probe's GPU figures without Node, for scripts/device-check: the same probes the addon runs
// (native/probe/gpu_probe.h), printed one device per line:
//   nvml <index> total=<bytes> used=<bytes> free=<bytes>
//   cuda <ordinal> total=<bytes> free=<bytes>
// or "nvml unavailable: <why>" / "cuda unavailable: <why>". Usage: gpu_probe_dump [nvml-library [cuda-library]]
#include <cstdio>

#include "probe/gpu_probe.h"

int main(int argc, char** argv) {
  clipmem::NvmlReport nvml = clipmem::probeNvml(argc > 1 ? argv[1] : "libnvidia-ml.so.1");
  if (!nvml.unavailable.empty()) std::printf("nvml unavailable: %s\n", nvml.unavailable.c_str());
  for (const auto& d : nvml.devices)
    std::printf("nvml %u total=%llu used=%llu free=%llu\n", d.index, d.totalBytes, d.usedBytes, d.freeBytes);
  clipmem::CudaReport cuda = clipmem::probeCuda(argc > 2 ? argv[2] : "libcuda.so.1");
  if (!cuda.unavailable.empty()) std::printf("cuda unavailable: %s\n", cuda.unavailable.c_str());
  for (const auto& d : cuda.devices)
    std::printf("cuda %d total=%zu free=%zu%s%s\n", d.ordinal, d.totalBytes, d.freeBytes,
                d.error.empty() ? "" : " error=", d.error.c_str());
  return 0;
}
