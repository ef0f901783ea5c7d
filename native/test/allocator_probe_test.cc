#include "probe/allocator_probe.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace {

constexpr size_t kMiB = size_t(1) << 20;

// The search itself, on a known threshold.
TEST(LargestSuccess, FindsTheThresholdToTheGranularityAndKeepsTheFailingErrno) {
  const size_t threshold = 123456789;
  clipmem::SearchResult result =
      clipmem::largestSuccess(size_t(1) << 40, 4096, [&](size_t size) { return size <= threshold ? 0 : ENOMEM; });
  EXPECT_LE(result.largest, threshold);
  EXPECT_GT(result.largest + 4096, threshold);
  EXPECT_GT(result.failedAt, threshold);
  EXPECT_LE(result.failedAt, result.largest + 4096);
  EXPECT_EQ(result.failedErrno, ENOMEM);
}

TEST(LargestSuccess, UpperBoundThatSucceedsIsReturnedAsIs) {
  clipmem::SearchResult result = clipmem::largestSuccess(8192, 4096, [](size_t) { return 0; });
  EXPECT_EQ(result.largest, 8192u);
  EXPECT_EQ(result.failedAt, 0u);
  EXPECT_EQ(result.failedErrno, 0);
}

size_t vmSize() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

// Runs `body` in a forked child under the given rlimit; the child's exit status says whether it passed.
template <typename Body>
void underLimit(int resource, rlim_t limit, Body body) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    struct rlimit value {
      limit, limit
    };
    if (setrlimit(resource, &value) != 0) _exit(3);
    _exit(body() ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(AllocatorProbe, ReservableAddressSpaceIsTheAddressSpaceLimitLessVmSize) {
  const size_t headroom = 256 * kMiB;
  const size_t limit = vmSize() + headroom;
  underLimit(RLIMIT_AS, limit, [&] {
    clipmem::ReservableResult reservable = clipmem::probeReservableAddressSpace();
    size_t expected = limit - vmSize();
    bool close = reservable.total <= expected && reservable.total + expected / 20 >= expected;
    if (!close) std::fprintf(stderr, "reservable %zu, limit - VmSize %zu\n", reservable.total, expected);
    return close && reservable.stopErrno == ENOMEM && clipmem::probeLargestReservation().largest <= expected;
  });
}

TEST(AllocatorProbe, LargestMallocAndMappingRespectTheDataLimit) {
  const size_t limit = 512 * kMiB;
  underLimit(RLIMIT_DATA, limit, [&] {
    clipmem::SearchResult mapping = clipmem::probeLargestReadWriteMapping();
    clipmem::SearchResult block = clipmem::probeLargestMalloc();
    // Reservations (PROT_NONE) are not data: they go far beyond it.
    clipmem::SearchResult reservation = clipmem::probeLargestReservation();
    return mapping.largest < limit && mapping.largest > limit / 2 && mapping.failedErrno == ENOMEM &&
           block.largest < limit && block.largest > limit / 2 && reservation.largest > 4 * limit;
  });
}

TEST(AllocatorProbe, ProbingTouchesNoPages) {
  auto rss = [] {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    }
    return 0ull;
  };
  const auto before = rss();
  clipmem::probeLargestMalloc();
  clipmem::probeLargestReadWriteMapping();
  clipmem::probeReservableAddressSpace();
  EXPECT_LT(rss(), before + 2 * kMiB);  // RSS may also drop (file pages reclaimed): no unsigned difference
}

}  // namespace
