// The record format shared by the interposer (writer) and the addon (reader).
#include "record/record.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace {

std::vector<char> fresh_record() {
  std::vector<char> file(clipmem_record_size(), 0);
  auto* header = reinterpret_cast<ClipmemRecordHeader*>(file.data());
  clipmem_header_layout(header);
  memcpy(header->magic, CLIPMEM_RECORD_MAGIC, 8);
  return file;
}

TEST(RecordFormat, ArraysAreAlignedOrderedAndInsideTheFile) {
  uint64_t offsets[] = {
      clipmem_slots_offset(),      clipmem_failures_offset(),       clipmem_timeline_offset(),
      clipmem_phases_offset(),     clipmem_modules_offset(),        clipmem_devices_offset(),
      clipmem_heap_sites_offset(), clipmem_heap_snapshots_offset(), clipmem_heap_failure_snapshots_offset()};
  EXPECT_GE(offsets[0], sizeof(ClipmemRecordHeader));
  for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; ++i) {
    EXPECT_EQ(offsets[i] % 64, 0u) << "array " << i;
    if (i) {
      EXPECT_GT(offsets[i], offsets[i - 1]);
    }
  }
  EXPECT_EQ(clipmem_failures_offset() - clipmem_slots_offset(),
            uint64_t(CLIPMEM_THREAD_SLOTS) * sizeof(ClipmemThreadSlot));
  EXPECT_LE(clipmem_heap_failure_snapshots_offset() + CLIPMEM_HEAP_FAILURE_SNAPSHOTS * sizeof(ClipmemHeapSnapshot),
            clipmem_record_size());
  EXPECT_EQ(clipmem_record_size() % 4096, 0u);
}

TEST(RecordFormat, ThreadSlotsFillWholeCacheLines) {
  // Each thread writes only its own slot: slots must not share a cache line.
  EXPECT_EQ(sizeof(ClipmemThreadSlot) % 64, 0u);
}

TEST(RecordFormat, FixedSizesOfTheLayout) {
  // A change here changes the file format: bump CLIPMEM_RECORD_VERSION with it.
  EXPECT_EQ(sizeof(ClipmemThreadSlot), 576u);
  EXPECT_EQ(sizeof(ClipmemSample), 80u);
  EXPECT_EQ(sizeof(ClipmemPhase), 152u);
  EXPECT_EQ(sizeof(ClipmemModule), 264u);
  EXPECT_EQ(sizeof(ClipmemFailure), 7608u);
  EXPECT_EQ(sizeof(ClipmemPyFrame), 184u);
  EXPECT_EQ(sizeof(ClipmemDevice), 64u);
  EXPECT_EQ(sizeof(ClipmemHeapSite), 376u);
  EXPECT_EQ(sizeof(ClipmemHeapSnapshot), 1336u);
  EXPECT_EQ(sizeof(ClipmemRecordHeader), 696u);
  EXPECT_EQ(offsetof(ClipmemRecordHeader, magic), 0u);
  EXPECT_EQ(offsetof(ClipmemRecordHeader, version), 8u);
  EXPECT_EQ(offsetof(ClipmemRecordHeader, header_size), 12u);
}

TEST(RecordFormat, ArrayOffsetsAsDocumented) {
  // docs/record-format.md gives these offsets; the struct sizes they follow from are pinned in record.h.
  EXPECT_EQ(clipmem_slots_offset(), 704u);
  EXPECT_EQ(clipmem_failures_offset(), 295616u);
  EXPECT_EQ(clipmem_timeline_offset(), 2243264u);
  EXPECT_EQ(clipmem_phases_offset(), 2570944u);
  EXPECT_EQ(clipmem_modules_offset(), 2726592u);
  EXPECT_EQ(clipmem_devices_offset(), 2760384u);
  EXPECT_EQ(clipmem_heap_sites_offset(), 2761408u);
  EXPECT_EQ(clipmem_heap_snapshots_offset(), 4301504u);
  EXPECT_EQ(clipmem_heap_failure_snapshots_offset(), 4304192u);
  EXPECT_EQ(clipmem_record_size(), 4317184u);
}

TEST(RecordFormat, HeaderLayoutDescribesTheArrays) {
  std::vector<char> file = fresh_record();
  auto* header = reinterpret_cast<ClipmemRecordHeader*>(file.data());
  EXPECT_EQ(header->version, CLIPMEM_RECORD_VERSION);
  EXPECT_EQ(header->header_size, sizeof(ClipmemRecordHeader));
  EXPECT_EQ(header->total_size, clipmem_record_size());
  EXPECT_EQ(header->failures_offset, clipmem_failures_offset());
  EXPECT_EQ(header->failures_capacity, uint32_t(CLIPMEM_FAILURE_CAPACITY));
  EXPECT_EQ(header->failure_size, sizeof(ClipmemFailure));
  EXPECT_EQ(header->timeline_capacity, uint32_t(CLIPMEM_TIMELINE_CAPACITY));
  EXPECT_EQ(header->phases_capacity, uint32_t(CLIPMEM_PHASE_CAPACITY));
  EXPECT_EQ(header->modules_capacity, uint32_t(CLIPMEM_MODULE_CAPACITY));
  EXPECT_EQ(header->devices_offset, clipmem_devices_offset());
  EXPECT_EQ(header->devices_capacity, uint32_t(CLIPMEM_DEVICE_CAPACITY));
  EXPECT_EQ(header->device_size, sizeof(ClipmemDevice));
  EXPECT_EQ(header->heap_sites_offset, clipmem_heap_sites_offset());
  EXPECT_EQ(header->heap_sites_capacity, uint32_t(CLIPMEM_HEAP_SITE_CAPACITY));
  EXPECT_EQ(header->heap_snapshots_capacity, uint32_t(CLIPMEM_HEAP_SNAPSHOT_CAPACITY));
  EXPECT_EQ(header->heap_failure_snapshots_capacity, uint32_t(CLIPMEM_HEAP_FAILURE_SNAPSHOTS));
  EXPECT_EQ(clipmem_header_problem(header, file.size()), nullptr);
}

TEST(RecordFormat, ReaderRejectsWhatItCannotTrust) {
  std::vector<char> file = fresh_record();
  auto* header = reinterpret_cast<ClipmemRecordHeader*>(file.data());
  EXPECT_STREQ(clipmem_header_problem(header, 16), "file is shorter than a record header");
  EXPECT_STREQ(clipmem_header_problem(header, file.size() - 4096), "file is shorter than the size its header states");
  header->magic[0] = 0;  // the writer stores the magic last: a half-created record reads as this
  EXPECT_STREQ(clipmem_header_problem(header, file.size()),
               "bad magic (not a clip-mem record, or still being created)");
  header->magic[0] = 'C';
  header->version = CLIPMEM_RECORD_VERSION + 1;
  EXPECT_STREQ(clipmem_header_problem(header, file.size()), "unsupported record version");
  header->version = CLIPMEM_RECORD_VERSION;
  header->failure_size += 8;
  EXPECT_STREQ(clipmem_header_problem(header, file.size()), "array layout differs from this reader's");
}

TEST(RecordFormat, ReaderRejectsAFileTooShortForTheArraysWhateverItsHeaderClaims) {
  // A truncated (or forged) record whose header understates its size: the arrays would end past the file.
  std::vector<char> file = fresh_record();
  auto* header = reinterpret_cast<ClipmemRecordHeader*>(file.data());
  uint64_t short_size = clipmem_failures_offset();
  header->total_size = short_size;
  EXPECT_STREQ(clipmem_header_problem(header, short_size), "array layout differs from this reader's");
}

TEST(RecordFormat, HistogramBucketsArePowersOfTwo) {
  EXPECT_EQ(clipmem_histogram_bucket(0), 0u);
  EXPECT_EQ(clipmem_histogram_bucket(1), 0u);
  EXPECT_EQ(clipmem_histogram_bucket(2), 1u);
  EXPECT_EQ(clipmem_histogram_bucket(3), 2u);
  EXPECT_EQ(clipmem_histogram_bucket(64), 6u);
  EXPECT_EQ(clipmem_histogram_bucket(65), 7u);
  EXPECT_EQ(clipmem_histogram_bucket(101187584), 27u);  // CLIP's token embedding: 2^26 < n <= 2^27
  EXPECT_EQ(clipmem_histogram_bucket(1ull << 46), 46u);
  EXPECT_EQ(clipmem_histogram_bucket((1ull << 46) + 1), unsigned(CLIPMEM_HISTOGRAM_BUCKETS - 1));
  EXPECT_EQ(clipmem_histogram_bucket(1ull << 63), unsigned(CLIPMEM_HISTOGRAM_BUCKETS - 1));
  EXPECT_EQ(clipmem_histogram_bucket(~0ull), unsigned(CLIPMEM_HISTOGRAM_BUCKETS - 1));
}

TEST(RecordFormat, FunctionNamesFollowTheEnum) {
  const char* names[] = CLIPMEM_FN_NAMES;
  ASSERT_EQ(sizeof names / sizeof names[0], size_t(CLIPMEM_FN_COUNT));
  EXPECT_STREQ(names[CLIPMEM_FN_MALLOC], "malloc");
  EXPECT_STREQ(names[CLIPMEM_FN_POSIX_MEMALIGN], "posix_memalign");
  EXPECT_STREQ(names[CLIPMEM_FN_MMAP64], "mmap64");
  EXPECT_STREQ(names[CLIPMEM_FN_PTHREAD_CREATE], "pthread_create");
  EXPECT_STREQ(names[CLIPMEM_FN_MPROTECT], "mprotect");
}

}  // namespace
