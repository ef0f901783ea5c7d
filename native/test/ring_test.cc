// The record's seqlock rings (native/record/ring.h) read while other threads write them: every entry a
// reader returns is whole. Each writer fills every field of a sample from its sequence number, so a torn
// copy (fields of two writes, or of a half-written entry) cannot pass for a whole one.
#include "record/ring.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "record/record.h"

namespace {

void write_sample(ClipmemSample* ring, uint64_t capacity, uint64_t* total) {
  uint64_t sequence;
  ClipmemSample* sample = clipmem::claim_ring_entry(total, ring, capacity, &sequence);
  int64_t n = int64_t(sequence);
  sample->time_ns = sequence;
  sample->heap_current = n * 2;
  sample->anon_mapped = n * 3;
  sample->file_mapped = n * 5;
  sample->reserved_mapped = n * 7;
  sample->vm_size = n * 11;
  sample->rss = n * 13;
  sample->phase_index = uint32_t(sequence);
  sample->reserved = uint32_t(~sequence);
  clipmem::publish_ring_entry(sample, sequence);
}

bool whole(const ClipmemSample& s, uint64_t sequence) {
  int64_t n = int64_t(sequence);
  return s.sequence == sequence && s.time_ns == sequence && s.heap_current == n * 2 && s.anon_mapped == n * 3 &&
         s.file_mapped == n * 5 && s.reserved_mapped == n * 7 && s.vm_size == n * 11 && s.rss == n * 13 &&
         s.phase_index == uint32_t(sequence) && s.reserved == uint32_t(~sequence);
}

struct ReadCounts {
  uint64_t whole = 0, torn = 0, out_of_order = 0;
};

// Reads the ring over and over until `done`, counting what for_each_ring_entry returns.
ReadCounts read_until(const ClipmemSample* ring, uint64_t capacity, const uint64_t* total,
                      const std::atomic<bool>& done) {
  ReadCounts counts;
  while (!done.load()) {
    uint64_t last = 0;
    clipmem::for_each_ring_entry(ring, capacity, __atomic_load_n(total, __ATOMIC_ACQUIRE),
                                 [&](const ClipmemSample& s, uint64_t sequence) {
                                   ++(whole(s, sequence) ? counts.whole : counts.torn);
                                   if (sequence <= last) ++counts.out_of_order;
                                   last = sequence;
                                 });
  }
  return counts;
}

TEST(RecordRing, ASingleWriterLappingASmallRingNeverHandsOutATornSample) {
  // 4 entries rewritten 2,000,000 times: the reader constantly meets entries being rewritten.
  constexpr uint64_t kCapacity = 4;
  std::vector<ClipmemSample> ring(kCapacity);
  uint64_t total = 0;
  std::atomic<bool> done{false};
  ReadCounts counts;
  std::thread reader([&] { counts = read_until(ring.data(), kCapacity, &total, done); });
  for (int i = 0; i < 2000000; ++i) write_sample(ring.data(), kCapacity, &total);
  done = true;
  reader.join();
  EXPECT_EQ(counts.torn, 0u) << "whole " << counts.whole;
  EXPECT_EQ(counts.out_of_order, 0u);
  // Once the writer stopped, the latest `capacity` samples are all there.
  std::vector<uint64_t> seen;
  clipmem::for_each_ring_entry(ring.data(), kCapacity, total, [&](const ClipmemSample& s, uint64_t sequence) {
    EXPECT_TRUE(whole(s, sequence));
    seen.push_back(sequence);
  });
  EXPECT_EQ(seen, (std::vector<uint64_t>{1999997, 1999998, 1999999, 2000000}));
}

TEST(RecordRing, SamplesWrittenByFourThreadsAreReadWholeAndInOrder) {
  // 4 x 1000 samples into the record's timeline ring: fewer than its capacity, so no two writers ever share
  // an entry (ring.h's stated limit); the reader runs throughout.
  constexpr int kThreads = 4, kPerThread = 1000;
  static_assert(kThreads * kPerThread <= CLIPMEM_TIMELINE_CAPACITY, "writers must not lap the ring");
  std::vector<ClipmemSample> ring(CLIPMEM_TIMELINE_CAPACITY);
  uint64_t total = 0;
  std::atomic<bool> done{false};
  ReadCounts counts;
  std::thread reader([&] { counts = read_until(ring.data(), CLIPMEM_TIMELINE_CAPACITY, &total, done); });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t)
    writers.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) write_sample(ring.data(), CLIPMEM_TIMELINE_CAPACITY, &total);
    });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(counts.torn, 0u) << "whole " << counts.whole;
  EXPECT_EQ(counts.out_of_order, 0u);
  uint64_t next = 1;
  clipmem::for_each_ring_entry(ring.data(), CLIPMEM_TIMELINE_CAPACITY, total,
                               [&](const ClipmemSample& s, uint64_t sequence) {
                                 EXPECT_TRUE(whole(s, sequence));
                                 EXPECT_EQ(sequence, next++);
                               });
  EXPECT_EQ(next - 1, uint64_t(kThreads * kPerThread));
}

TEST(RecordRing, AnEntryClaimedButNotPublishedIsSkipped) {
  std::vector<ClipmemSample> ring(8);
  uint64_t total = 0;
  write_sample(ring.data(), 8, &total);
  uint64_t sequence;
  ClipmemSample* pending = clipmem::claim_ring_entry(&total, ring.data(), 8, &sequence);
  pending->time_ns = sequence;  // a writer stopped here (or killed): the reader must not return it
  std::vector<uint64_t> seen;
  clipmem::for_each_ring_entry(ring.data(), 8, total, [&](const ClipmemSample&, uint64_t s) { seen.push_back(s); });
  EXPECT_EQ(seen, std::vector<uint64_t>{1});
}

}  // namespace
