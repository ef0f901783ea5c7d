#include "probe/gpu_probe.h"

#include <gtest/gtest.h>

namespace {

constexpr unsigned long long kGiB = 1ULL << 30, kMiB = 1ULL << 20;

TEST(GpuProbe, StubNvmlDevicesMemoryAndProcessesComeThroughDlopen) {
  clipmem::NvmlReport report = clipmem::probeNvml(CLIP_MEM_STUB_GPU_LIBRARY);
  ASSERT_EQ(report.unavailable, "");
  EXPECT_EQ(report.driverVersion, "999.99.stub");
  ASSERT_EQ(report.devices.size(), 2u);
  const clipmem::NvmlDevice& first = report.devices[0];
  EXPECT_EQ(first.name, "clip-mem stub GPU 0 (40 GiB)");
  EXPECT_EQ(first.totalBytes, 40 * kGiB);
  EXPECT_EQ(first.usedBytes, 3 * kGiB);
  EXPECT_EQ(first.freeBytes, 37 * kGiB);
  ASSERT_EQ(first.processes.size(), 1u);
  EXPECT_EQ(first.processes[0].pid, 4242u);
  EXPECT_EQ(first.processes[0].usedBytes, 2 * kGiB + 512 * kMiB);
  EXPECT_EQ(first.processes[0].name, "python train_clip.py");
  EXPECT_TRUE(report.devices[1].processes.empty());
}

TEST(GpuProbe, StubCudaMemGetInfoPerDevice) {
  clipmem::CudaReport report = clipmem::probeCuda(CLIP_MEM_STUB_GPU_LIBRARY);
  ASSERT_EQ(report.unavailable, "");
  EXPECT_EQ(report.driverVersion, 12040);
  ASSERT_EQ(report.devices.size(), 2u);
  EXPECT_EQ(report.devices[0].error, "");
  EXPECT_EQ(report.devices[0].totalBytes, 40 * kGiB);
  EXPECT_EQ(report.devices[0].freeBytes, 37 * kGiB - 300 * kMiB);
  EXPECT_EQ(report.devices[1].freeBytes, 15 * kGiB + 200 * kMiB);
}

TEST(GpuProbe, MissingLibraryIsAReasonNotAnError) {
  clipmem::NvmlReport nvml = clipmem::probeNvml("/nonexistent/libnvidia-ml.so.1");
  EXPECT_NE(nvml.unavailable.find("/nonexistent/libnvidia-ml.so.1: cannot open shared object file"), std::string::npos)
      << nvml.unavailable;
  EXPECT_TRUE(nvml.devices.empty());
  clipmem::CudaReport cuda = clipmem::probeCuda("/nonexistent/libcuda.so.1");
  EXPECT_NE(cuda.unavailable.find("cannot open shared object file"), std::string::npos) << cuda.unavailable;
}

TEST(GpuProbe, ALibraryWithoutTheFunctionsSaysWhichIsMissing) {
  clipmem::NvmlReport report = clipmem::probeNvml("libm.so.6");
  EXPECT_EQ(report.unavailable, "libm.so.6 has no nvmlInit_v2 (NVML too old?)");
}

}  // namespace
