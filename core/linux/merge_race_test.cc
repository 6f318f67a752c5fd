// A write racing with a merge or an unmerge always lands: writer threads
// hammer pages with sequence-stamped words (each checks its write back at
// once) while the main thread merges, harvests and unmerges the same pages
// over and over. At the end every word must hold the last value written.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pksm/linux/process_memory.h"
#include "test_support.h"

namespace pksm {
namespace {

constexpr size_t kPages = 96;
constexpr size_t kWriters = 4;
constexpr size_t kWordsPerWriter = 4;
constexpr int kWritesPerWriter = 4000;
constexpr int kMinRounds = 200;  // writer w owns words w*64 + k*8 of every page

size_t OwnedWord(size_t w, size_t k) { return w * 64 + k * 8; }

struct Area {
  AnonMapping map{kPages};
  std::vector<uint64_t> base;  // base content (one page) as words
};

class MergeRace : public ::testing::Test {
 protected:
  void SetUp() override {
    base_.resize(kPageSize / 8);
    FillSeed(reinterpret_cast<uint8_t*>(base_.data()), 42);
    for (size_t i = 0; i < kPages; ++i) {
      memcpy(dup_.page(i), base_.data(), kPageSize);
      memset(zero_.page(i), 0, kPageSize);
    }
    expected_dup_.assign(kWriters * kWordsPerWriter * kPages, 0);
    expected_zero_.assign(kWriters * kWordsPerWriter * kPages, 0);
    for (size_t w = 0; w < kWriters; ++w)
      for (size_t k = 0; k < kWordsPerWriter; ++k)
        for (size_t p = 0; p < kPages; ++p) expected_dup_[Slot(w, k, p)] = base_[OwnedWord(w, k)];
  }
  static size_t Slot(size_t w, size_t k, size_t p) { return (w * kWordsPerWriter + k) * kPages + p; }

  // One writer: stamps (writer, sequence) into one of its words of a random
  // page, reads it back, and most of the time puts the base value back so the
  // page becomes mergeable again.
  void Writer(size_t w) {
    std::mt19937_64 rng(w + 1);
    uint64_t seq = 0;
    for (int n = 0; n < kWritesPerWriter; ++n) {
      bool zero = rng() & 1;
      size_t p = rng() % kPages, k = rng() % kWordsPerWriter;
      uint8_t* page = zero ? zero_.page(p) : dup_.page(p);
      auto* word = reinterpret_cast<uint64_t*>(page + OwnedWord(w, k) * 8);
      uint64_t& expect = zero ? expected_zero_[Slot(w, k, p)] : expected_dup_[Slot(w, k, p)];
      uint64_t v = (uint64_t{w + 1} << 56) | ++seq;
      __atomic_store_n(word, v, __ATOMIC_RELAXED);
      if (__atomic_load_n(word, __ATOMIC_RELAXED) != v) lost_.fetch_add(1);
      expect = v;
      if (rng() % 128 != 0) {
        uint64_t b = zero ? 0 : base_[OwnedWord(w, k)];
        __atomic_store_n(word, b, __ATOMIC_RELAXED);
        if (__atomic_load_n(word, __ATOMIC_RELAXED) != b) lost_.fetch_add(1);
        expect = b;
      }
      writes_.fetch_add(1, std::memory_order_relaxed);
      // Leave the merger gaps in which pages are mergeable.
      for (int i = 0; i < 200; ++i) __builtin_ia32_pause();  // no yield: under load it sleeps for ms
    }
    writers_done_.fetch_add(1);
  }

  std::vector<uint64_t> base_;
  AnonMapping dup_{kPages}, zero_{kPages};
  std::vector<uint64_t> expected_dup_, expected_zero_;
  std::atomic<size_t> writers_done_{0};
  std::atomic<uint64_t> lost_{0}, writes_{0};
};

TEST_F(MergeRace, WritesRacingMergeAndUnmergeAlwaysLand) {
  std::string err;
  ProcessMemoryOptions o;
  o.log = [](const std::string&) {};
  auto pm = ProcessMemory::Create(o, &err);
  ASSERT_NE(pm, nullptr) << err;
  ASSERT_TRUE(pm->AddRegion(1, dup_.data(), kPages, &err)) << err;
  ASSERT_TRUE(pm->AddRegion(2, zero_.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  std::vector<uint64_t> dirty((kPages + 63) / 64);

  std::vector<std::thread> writers;
  for (size_t w = 0; w < kWriters; ++w) writers.emplace_back([this, w] { Writer(w); });

  uint64_t merged = 0, zero_merged = 0, changed = 0, broken_seen = 0;
  // Merge and unmerge in rounds until every writer has done all its writes.
  for (int round = 0; round < kMinRounds || writers_done_.load() < kWriters; ++round) {
    StableHandle s;
    size_t first = static_cast<size_t>(round) % kPages;
    MergeResult r = mg->CreateStable({1, first}, &s);
    ASSERT_TRUE(r == MergeResult::kMerged) << ToString(r);
    std::vector<size_t> in_stable{first};
    for (size_t p = 0; p < kPages; ++p) {
      if (p == first) continue;
      r = mg->MergeInto(s, {1, p});
      ASSERT_TRUE(r == MergeResult::kMerged || r == MergeResult::kChanged) << ToString(r);
      if (r == MergeResult::kMerged) ++merged, in_stable.push_back(p);
      else ++changed;
      r = mg->MergeZero({2, p});
      ASSERT_TRUE(r == MergeResult::kMerged || r == MergeResult::kChanged ||
                  r == MergeResult::kNotPopulated) << ToString(r);
      zero_merged += r == MergeResult::kMerged;
    }
    std::fill(dirty.begin(), dirty.end(), 0);
    pm->dirty_log()->Harvest(1, kPages, dirty.data());
    pm->dirty_log()->Harvest(2, kPages, dirty.data());
    for (size_t p : in_stable) broken_seen += !mg->IsMerged({1, p});
    // Unmerge everything (broken pages too: Unmerge is a no-op for them).
    for (size_t p = 0; p < kPages; ++p) {
      ASSERT_TRUE(mg->Unmerge({1, p})) << p;
      ASSERT_TRUE(mg->Unmerge({2, p})) << p;
    }
    mg->ReleaseStable(s);
    ASSERT_EQ(pm->pool_pages(), 0u) << "round " << round;
  }
  for (auto& t : writers) t.join();

  size_t mismatches = 0;
  for (size_t w = 0; w < kWriters; ++w) {
    for (size_t k = 0; k < kWordsPerWriter; ++k) {
      for (size_t p = 0; p < kPages; ++p) {
        auto* d = reinterpret_cast<uint64_t*>(dup_.page(p)) + OwnedWord(w, k);
        auto* z = reinterpret_cast<uint64_t*>(zero_.page(p)) + OwnedWord(w, k);
        mismatches += *d != expected_dup_[Slot(w, k, p)];
        mismatches += *z != expected_zero_[Slot(w, k, p)];
      }
    }
  }
  // Words nobody owns never change.
  for (size_t p = 0; p < kPages; ++p) {
    auto* d = reinterpret_cast<uint64_t*>(dup_.page(p));
    auto* z = reinterpret_cast<uint64_t*>(zero_.page(p));
    for (size_t i = 0; i < kPageSize / 8; ++i) {
      if (i % 8 == 0 && i / 64 < kWriters && (i % 64) / 8 < kWordsPerWriter) continue;
      mismatches += d[i] != base_[i];
      mismatches += z[i] != 0;
    }
  }
  ProcessMemoryStats st = pm->stats();
  printf("writes %llu, merges %llu (zero %llu), changed %llu, broken %llu, wp_faults %llu, racing %llu, "
         "us/merge %.2f\n",
         (unsigned long long)writes_.load(), (unsigned long long)merged, (unsigned long long)zero_merged,
         (unsigned long long)changed, (unsigned long long)broken_seen, (unsigned long long)st.wp_faults,
         (unsigned long long)st.racing_writes,
         st.merges ? static_cast<double>(st.merge_ns) / 1e3 / static_cast<double>(st.merges) : 0.0);
  EXPECT_EQ(lost_.load(), 0u);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(st.errors, 0u);
  // The race was really exercised: merges happened, and writers faulted.
  EXPECT_GT(merged, 0u);
  EXPECT_GT(zero_merged, 0u);
  EXPECT_GT(st.wp_faults, 0u);
  EXPECT_EQ(writes_.load(), kWriters * kWritesPerWriter);
  pm->RemoveRegion(1);
  pm->RemoveRegion(2);
}

// The merger no longer wakes writers itself (no UFFDIO_WAKE per merge): a
// writer that blocks on a page while it is merged must still be woken (by
// the fault thread serving its fault) and its write must land. Each round
// releases a writer at the moment the main thread starts merging that very
// page; the writer's first write hits the protected page. A writer left
// asleep would hang the test (the meson timeout fails it).
//
// Run with both dirty logs: with uffd-async the writer blocks in a MISSING
// fault on the moved-out candidate instead of a write-protect fault.
class MergeWake : public ::testing::TestWithParam<DirtyLogKind> {};

TEST_P(MergeWake, WriterBlockedDuringMergeIsWokenWithoutMergerWake) {
  constexpr size_t kRounds = 500;
  AnonMapping map(kRounds);
  for (size_t i = 0; i < kRounds; ++i) FillSeed(map.page(i), 5);
  std::string err;
  ProcessMemoryOptions o;
  o.dirty_log = GetParam();
  o.log = [](const std::string&) {};
  auto pm = ProcessMemory::Create(o, &err);
  ASSERT_NE(pm, nullptr) << err;
  ASSERT_TRUE(pm->AddRegion(1, map.data(), kRounds, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({1, 0}, &s), MergeResult::kMerged);
  std::atomic<size_t> go{0}, done{0};
  std::thread writer([&] {
    for (size_t i = 1; i < kRounds; ++i) {
      while (go.load(std::memory_order_acquire) < i) std::this_thread::yield();
      auto* w = reinterpret_cast<uint64_t*>(map.page(i)) + 7;
      __atomic_store_n(w, 0x5151'0000'0000'0000ULL | i, __ATOMIC_RELAXED);
      done.store(i, std::memory_order_release);
    }
  });
  size_t merged = 0, changed = 0;
  for (size_t i = 1; i < kRounds; ++i) {
    go.store(i, std::memory_order_release);
    MergeResult r = mg->MergeInto(s, {1, i});
    ASSERT_TRUE(r == MergeResult::kMerged || r == MergeResult::kChanged) << ToString(r);
    merged += r == MergeResult::kMerged;
    changed += r == MergeResult::kChanged;
    while (done.load(std::memory_order_acquire) < i) std::this_thread::yield();  // the writer was woken
  }
  writer.join();
  size_t lost = 0;
  for (size_t i = 1; i < kRounds; ++i) {
    lost += reinterpret_cast<uint64_t*>(map.page(i))[7] != (0x5151'0000'0000'0000ULL | i);
  }
  // The dirty log saw every write: through a fault, or (a write that fell
  // into the remap window, no fault) through the harvest's window check.
  std::vector<uint64_t> dirty((kRounds + 63) / 64, 0);
  pm->dirty_log()->Harvest(1, kRounds, dirty.data());
  size_t unreported = 0;
  for (size_t i = 1; i < kRounds; ++i) unreported += !(dirty[i / 64] >> (i % 64) & 1);
  ProcessMemoryStats st = pm->stats();
  printf("merged %zu, changed %zu, wp_faults %llu, racing %llu\n", merged, changed,
         (unsigned long long)st.wp_faults, (unsigned long long)st.racing_writes);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(unreported, 0u);
  EXPECT_EQ(st.errors, 0u);
  if (GetParam() == DirtyLogKind::kUffdSync) {
    // Every write met the protected page (or fell into the remap window).
    EXPECT_GE(st.wp_faults + st.racing_writes, kRounds - 1);
  } else {
    // Nothing blocks on protection: a write lands before the move (the
    // merge then finds the page changed) or waits on the moved-out page.
    EXPECT_EQ(st.wp_faults, 0u);
    EXPECT_GE(changed + st.missing_faults + st.racing_writes, 1u);
  }
  pm->RemoveRegion(1);
}

INSTANTIATE_TEST_SUITE_P(DirtyLogs, MergeWake, ::testing::Values(DirtyLogKind::kUffdSync, DirtyLogKind::kUffdAsync),
                         [](const ::testing::TestParamInfo<DirtyLogKind>& i) {
                           return i.param == DirtyLogKind::kUffdSync ? std::string("sync") : std::string("async");
                         });

}  // namespace
}  // namespace pksm
