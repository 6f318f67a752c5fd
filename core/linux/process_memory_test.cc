// ProcessMemory on real memory of this process: merge and unmerge of every
// kind of page, the dirty log, COW breaks, the VMA budget, failures.
#include "pksm/linux/process_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "pksm/linux/proc_self.h"
#include "test_support.h"

namespace pksm {
namespace {

TEST(ProcessMemory, ReportsProviderAndFeatures) {
  auto pm = MakePm();
  ASSERT_NE(pm, nullptr);
  EXPECT_TRUE(pm->merging_enabled()) << pm->unavailable_reason();
  EXPECT_EQ(pm->dirty_log_name(), "uffd-sync");
  ASSERT_NE(pm->dirty_log(), nullptr);
  EXPECT_EQ(pm->dirty_log()->Name(), "uffd-sync");
  EXPECT_GT(pm->vma_budget(), 1000u);  // derived from vm.max_map_count
  printf("kernel features: %s\n", pm->kernel_features().c_str());
  EXPECT_NE(pm->kernel_features().find("WP_UNPOPULATED"), std::string::npos);
}

TEST(ProcessMemory, StableMergeSharesMemoryAndUnmergeRestoresPrivateCopies) {
  constexpr size_t kPages = 64;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), i < 32 ? 7 : 1000 + i);
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(1, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  const uint64_t anon_before = RangeAnonKib(m.data(), kPages * kPageSize);
  EXPECT_EQ(anon_before, kPages * 4);

  StableHandle s;
  ASSERT_EQ(mg->CreateStable({1, 0}, &s), MergeResult::kMerged);
  for (size_t i = 1; i < 32; ++i) ASSERT_EQ(mg->MergeInto(s, {1, i}), MergeResult::kMerged) << i;
  EXPECT_EQ(mg->MergeInto(s, {1, 40}), MergeResult::kChanged);  // different content
  EXPECT_TRUE(HasSeed(m.page(40), 1040));
  EXPECT_EQ(pm->pool_pages(), 1u);
  EXPECT_TRUE(HasSeed(mg->StableData(s), 7));
  mg->Flush();  // the remaps were queued (see Merger::Flush)

  for (size_t i = 0; i < 32; ++i) {
    EXPECT_TRUE(HasSeed(m.page(i), 7)) << i;  // content preserved (reads fault the pool page in)
    PagemapEntry e = EntryOf(m.page(i));
    EXPECT_TRUE(e.present && e.file) << "page " << i << " should map the pool page";
    EXPECT_TRUE(mg->IsMerged({1, i}));
  }
  // Shared: all 32 map one physical page (root sees pfns).
  if (EntryOf(m.page(0)).pfn != 0) {
    for (size_t i = 1; i < 32; ++i) EXPECT_EQ(EntryOf(m.page(i)).pfn, EntryOf(m.page(0)).pfn);
  }
  // Private memory was freed: 32 anonymous pages (128 KiB) are gone; the
  // one pool page they share is shmem.
  EXPECT_EQ(RangeAnonKib(m.data(), kPages * kPageSize), anon_before - 32 * 4);
  for (size_t i = 0; i < 32; ++i) EXPECT_FALSE(EntryOf(m.page(i)).exclusive && !EntryOf(m.page(i)).file);

  for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(mg->Unmerge({1, i})) << i;
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_TRUE(HasSeed(m.page(i), 7)) << i;
    PagemapEntry e = EntryOf(m.page(i));
    EXPECT_TRUE(e.present && !e.file && e.exclusive) << "page " << i << " should be private again";
    EXPECT_FALSE(mg->IsMerged({1, i}));
  }
  mg->ReleaseStable(s);
  EXPECT_EQ(pm->pool_pages(), 0u);
  EXPECT_EQ(pm->stats().errors, 0u);
  pm->RemoveRegion(1);
}

TEST(ProcessMemory, ZeroMergeDropsMemoryAndUnpopulatedIsReported) {
  constexpr size_t kPages = 16;
  AnonMapping m(kPages);
  for (size_t i = 0; i < 8; ++i) memset(m.page(i), 0, kPageSize), m.page(i)[0] = 1, m.page(i)[0] = 0;
  FillSeed(m.page(8), 3);
  // pages 9..15 never touched
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(2, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  const uint64_t anon_before = RangeAnonKib(m.data(), kPages * kPageSize);
  EXPECT_EQ(anon_before, 9u * 4);  // 8 zero-filled pages and one with content
  for (size_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(EntryOf(m.page(i)).present);
    ASSERT_EQ(mg->MergeZero({2, i}), MergeResult::kMerged) << i;
    mg->Flush();
    PagemapEntry e = EntryOf(m.page(i));
    EXPECT_TRUE(!e.present || !e.exclusive) << "page " << i << " still has private memory";
    EXPECT_TRUE(mg->IsMerged({2, i}));
  }
  EXPECT_EQ(RangeAnonKib(m.data(), kPages * kPageSize), 4u) << "the 8 zero pages' memory was freed";
  EXPECT_EQ(mg->MergeZero({2, 8}), MergeResult::kChanged);
  EXPECT_TRUE(HasSeed(m.page(8), 3));
  EXPECT_EQ(mg->MergeZero({2, 9}), MergeResult::kNotPopulated);
  for (size_t i = 0; i < 8; ++i) {
    for (size_t b = 0; b < kPageSize; ++b) ASSERT_EQ(m.page(i)[b], 0) << i;
    PagemapEntry pe = EntryOf(m.page(i));
    EXPECT_TRUE(mg->IsMerged({2, i})) << "reading keeps it merged " << pe.present << pe.file << pe.exclusive << pe.swapped << " pfn " << pe.pfn;
  }
  // Unmerge gives a private zero page.
  ASSERT_TRUE(mg->Unmerge({2, 3}));
  PagemapEntry e = EntryOf(m.page(3));
  EXPECT_TRUE(e.present && e.exclusive);
  EXPECT_FALSE(mg->IsMerged({2, 3}));
  for (size_t b = 0; b < kPageSize; ++b) ASSERT_EQ(m.page(3)[b], 0);
  EXPECT_EQ(pm->stats().zero_merges, 8u);
  pm->RemoveRegion(2);
}

// Never-populated pages (untouched guest RAM) read zero but have no memory
// behind them: CreateStable and MergeInto refuse them as kNotPopulated
// (nothing changed, no pool page, no VMA spent), as MergeZero does.
TEST(ProcessMemory, NeverPopulatedPagesGetNoStablePage) {
  constexpr size_t kPages = 8;
  AnonMapping m(kPages);
  memset(m.page(0), 0, kPageSize);  // populated, all zero
  // pages 1..7 never touched
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(5, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s = 0;
  EXPECT_EQ(mg->CreateStable({5, 1}, &s), MergeResult::kNotPopulated);
  EXPECT_EQ(pm->pool_pages(), 0u);
  EXPECT_EQ(pm->vmas_used(), 0u);
  ASSERT_EQ(mg->CreateStable({5, 0}, &s), MergeResult::kMerged);  // the populated zero page
  EXPECT_EQ(mg->MergeInto(s, {5, 2}), MergeResult::kNotPopulated);
  // Read (now it maps the shared zero page): still nothing behind it.
  EXPECT_EQ(m.page(3)[100], 0);
  EXPECT_EQ(mg->MergeInto(s, {5, 3}), MergeResult::kNotPopulated);
  EXPECT_FALSE(mg->IsMerged({5, 2}));
  EXPECT_FALSE(mg->IsMerged({5, 3}));
  EXPECT_EQ(pm->pool_pages(), 1u);
  ProcessMemoryStats st = pm->stats();
  EXPECT_EQ(st.merges, 1u);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_EQ(st.changed, 0u);
  // Once written (zero content, but real memory), it merges.
  m.page(4)[0] = 1;
  m.page(4)[0] = 0;
  EXPECT_EQ(mg->MergeInto(s, {5, 4}), MergeResult::kMerged);
  EXPECT_TRUE(mg->IsMerged({5, 4}));
  pm->RemoveRegion(5);
}

// A write in the remap window (after the mmap/madvise, before the new
// mapping is protected) raises no fault. The merger no longer reads the
// page back at once: the next harvest must still report the page dirty,
// and the write must have landed.
TEST(ProcessMemory, WriteInRemapWindowIsReportedByNextHarvest) {
  constexpr size_t kPages = 8;
  AnonMapping m(kPages);
  for (size_t i = 0; i < 4; ++i) FillSeed(m.page(i), 9);
  for (size_t i = 4; i < kPages; ++i) memset(m.page(i), 0, kPageSize), m.page(i)[0] = 1, m.page(i)[0] = 0;
  ProcessMemoryOptions o;
  size_t window_writes = 0;
  uint8_t* target_stable = m.page(2);
  uint8_t* target_zero = m.page(6);
  o.in_remap_window = [&](uint8_t* p) {
    if (p == target_stable || p == target_zero) {
      p[64] = 0xAB;  // no fault: the new mapping is not protected yet
      ++window_writes;
    }
  };
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(6, m.data(), kPages, &err)) << err;
  ASSERT_NE(pm->dirty_log(), nullptr);
  Harvest(pm.get(), 6, kPages);
  // The fact the merger relies on to skip protecting a candidate: a clean
  // (protected) present page shows the uffd-wp bit in pagemap.
  for (size_t i = 0; i < kPages; ++i) {
    PagemapEntry e = EntryOf(m.page(i));
    ASSERT_TRUE(e.present && e.uffd_wp) << i;
  }
  Merger* mg = pm->merger();
  StableHandle s = 0;
  ASSERT_EQ(mg->CreateStable({6, 0}, &s), MergeResult::kMerged);
  for (size_t i = 1; i < 4; ++i) ASSERT_EQ(mg->MergeInto(s, {6, i}), MergeResult::kMerged) << i;
  for (size_t i = 4; i < kPages; ++i) ASSERT_EQ(mg->MergeZero({6, i}), MergeResult::kMerged) << i;
  EXPECT_EQ(window_writes, 0u) << "remaps are queued until the flush";
  mg->Flush();
  EXPECT_EQ(window_writes, 2u);
  EXPECT_EQ(pm->stats().wp_faults, 0u);  // the window writes did not fault
  auto b = Harvest(pm.get(), 6, kPages);
  for (size_t i = 0; i < kPages; ++i) {
    bool written = i == 2 || i == 6;
    EXPECT_EQ(Bit(b, i), written) << i;
    EXPECT_EQ(mg->IsMerged({6, i}), !written) << i;
  }
  EXPECT_EQ(pm->stats().racing_writes, 2u);
  EXPECT_EQ(m.page(2)[64], 0xAB);
  EXPECT_EQ(m.page(6)[64], 0xAB);
  EXPECT_TRUE(HasSeed(m.page(1), 9));
  // A write through the fault thread lifts the protection: no uffd-wp bit.
  m.page(7)[1] = 1;
  EXPECT_FALSE(EntryOf(m.page(7)).uffd_wp);
  EXPECT_EQ(pm->stats().wp_faults, 1u);
  pm->RemoveRegion(6);
}

TEST(ProcessMemory, DirtyLogSeesEveryWriteOnce) {
  constexpr size_t kPages = 200;
  AnonMapping m(kPages);
  for (size_t i = 0; i < 100; ++i) FillSeed(m.page(i), i);  // 100..199 unpopulated
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(3, m.data(), kPages, &err)) << err;
  auto b = Harvest(pm.get(), 3, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_FALSE(Bit(b, i)) << i;
  m.page(5)[17] = 9;
  m.page(64)[0] = 9;
  m.page(150)[4095] = 9;  // never populated before
  m.page(65)[1] = 2;
  (void)*static_cast<volatile uint8_t*>(m.page(120));  // a read is not a write
  b = Harvest(pm.get(), 3, kPages);
  for (size_t i = 0; i < kPages; ++i) {
    bool want = i == 5 || i == 64 || i == 65 || i == 150;
    EXPECT_EQ(Bit(b, i), want) << i;
  }
  b = Harvest(pm.get(), 3, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_FALSE(Bit(b, i)) << "reported twice: " << i;
  m.page(5)[18] = 1;  // protected again by the harvest: faults again
  b = Harvest(pm.get(), 3, kPages);
  EXPECT_TRUE(Bit(b, 5));
  EXPECT_GE(pm->stats().wp_faults, 5u);
  EXPECT_EQ(m.page(5)[17], 9);
  EXPECT_EQ(m.page(150)[4095], 9);
  pm->RemoveRegion(3);
}

TEST(ProcessMemory, WritesAfterAnExternalDiscardAreStillReported) {
  constexpr size_t kPages = 70;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), i);
  ProcessMemoryOptions o;
  o.audit_interval_ms = 0;  // audit at every harvest
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(11, m.data(), kPages, &err)) << err;
  Harvest(pm.get(), 11, kPages);
  // A balloon-style discard drops pages and their write protection: the
  // writes below raise no fault.
  ASSERT_EQ(madvise(m.page(3), 2 * kPageSize, MADV_DONTNEED), 0);
  ASSERT_EQ(madvise(m.page(66), kPageSize, MADV_DONTNEED), 0);
  uint64_t faults = pm->stats().wp_faults;
  m.page(3)[0] = 1;
  m.page(66)[9] = 1;
  EXPECT_EQ(pm->stats().wp_faults, faults) << "the kernel did fault: this test no longer tests the audit";
  auto b = Harvest(pm.get(), 11, kPages);
  EXPECT_TRUE(Bit(b, 3));
  EXPECT_TRUE(Bit(b, 66));
  EXPECT_FALSE(Bit(b, 10));
  EXPECT_GE(pm->stats().audit_found, 2u);
  // Protected again: the next write faults as usual.
  m.page(3)[1] = 1;
  EXPECT_GT(pm->stats().wp_faults, faults);
  b = Harvest(pm.get(), 11, kPages);
  EXPECT_TRUE(Bit(b, 3));
  EXPECT_FALSE(Bit(b, 66));
  pm->RemoveRegion(11);
}

TEST(ProcessMemory, CowBreakOfMergedPageIsDetected) {
  constexpr size_t kPages = 8;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 11);
  memset(m.page(7), 0, kPageSize);
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(4, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({4, 0}, &s), MergeResult::kMerged);
  for (size_t i = 1; i < 7; ++i) ASSERT_EQ(mg->MergeInto(s, {4, i}), MergeResult::kMerged);
  ASSERT_EQ(mg->MergeZero({4, 7}), MergeResult::kMerged);
  Harvest(pm.get(), 4, kPages);

  m.page(3)[100] ^= 0xff;  // COW break of a stable page
  m.page(7)[5] = 1;        // and of a zero page
  auto b = Harvest(pm.get(), 4, kPages);
  EXPECT_TRUE(Bit(b, 3));
  EXPECT_TRUE(Bit(b, 7));
  EXPECT_FALSE(Bit(b, 2));
  EXPECT_FALSE(mg->IsMerged({4, 3}));
  EXPECT_FALSE(mg->IsMerged({4, 7}));
  EXPECT_TRUE(mg->IsMerged({4, 2}));
  // The write landed on a private copy; the stable page is intact.
  EXPECT_FALSE(HasSeed(m.page(3), 11));
  m.page(3)[100] ^= 0xff;
  EXPECT_TRUE(HasSeed(m.page(3), 11));
  EXPECT_TRUE(HasSeed(mg->StableData(s), 11));
  EXPECT_TRUE(HasSeed(m.page(2), 11));
  EXPECT_EQ(m.page(7)[5], 1);
  // The broken page can be merged again (it sits in a pool file VMA now).
  EXPECT_EQ(mg->MergeInto(s, {4, 3}), MergeResult::kMerged);
  EXPECT_TRUE(mg->IsMerged({4, 3}));
  m.page(7)[5] = 0;
  EXPECT_EQ(mg->MergeZero({4, 7}), MergeResult::kMerged);
  pm->RemoveRegion(4);
}

// Guest RAM is THP-backed (QEMU asks for MADV_HUGEPAGE): merging a 4 KiB
// page inside a huge page splits it and keeps every other page's content.
TEST(ProcessMemory, MergesInsideTransparentHugePages) {
  constexpr size_t kHuge = 512;  // pages per 2 MiB
  AnonMapping raw(3 * kHuge);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw.data()) + 2 * kHuge * kPageSize - 1) &
                                             ~(kHuge * kPageSize - 1));
  ASSERT_EQ(madvise(base, kHuge * kPageSize, MADV_HUGEPAGE), 0);
  base[0] = 1;  // fault the huge page in (if the kernel has one to give)
  for (size_t i = 0; i < kHuge; ++i) {
    if (i % 4 == 0) memset(base + i * kPageSize, 0, kPageSize);
    else FillSeed(base + i * kPageSize, i % 4);
  }
  {
    std::ifstream in("/proc/self/smaps_rollup");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("AnonHugePages:", 0) == 0) printf("before merging: %s\n", line.c_str());
  }
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(12, base, kHuge, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s[4];
  for (size_t c = 1; c < 4; ++c) ASSERT_EQ(mg->CreateStable({12, c}, &s[c]), MergeResult::kMerged);
  size_t merged = 0, zero = 0;
  for (size_t i = 4; i < kHuge; ++i) {
    if (i % 4 == 0) zero += mg->MergeZero({12, i}) == MergeResult::kMerged;
    else merged += mg->MergeInto(s[i % 4], {12, i}) == MergeResult::kMerged;
  }
  EXPECT_EQ(merged, (kHuge - 4) * 3 / 4);
  EXPECT_EQ(zero, (kHuge - 4) / 4);
  for (size_t i = 0; i < kHuge; ++i) {
    if (i % 4 == 0) {
      for (size_t b = 0; b < kPageSize; b += 512) ASSERT_EQ(base[i * kPageSize + b], 0) << i;
    } else {
      ASSERT_TRUE(HasSeed(base + i * kPageSize, i % 4)) << i;
    }
  }
  // Writes after the split still land and are seen.
  Harvest(pm.get(), 12, kHuge);
  base[5 * kPageSize + 7] ^= 1;
  base[8 * kPageSize] = 3;
  auto b = Harvest(pm.get(), 12, kHuge);
  EXPECT_TRUE(Bit(b, 5));
  EXPECT_TRUE(Bit(b, 8));
  EXPECT_FALSE(mg->IsMerged({12, 5}));
  EXPECT_TRUE(mg->IsMerged({12, 9}));
  EXPECT_EQ(base[8 * kPageSize], 3);
  pm->RemoveRegion(12);
}

TEST(ProcessMemory, ConsecutiveRunsShareFewMappings) {
  constexpr size_t kPages = 256;
  AnonMapping a(kPages), b(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(a.page(i), 500 + i), FillSeed(b.page(i), 500 + i);
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(5, a.data(), kPages, &err)) << err;
  ASSERT_TRUE(pm->AddRegion(6, b.data(), kPages, &err)) << err;
  int64_t maps_before = ReadMapCount();
  Merger* mg = pm->merger();
  for (size_t i = 0; i < kPages; ++i) {
    StableHandle s;
    ASSERT_EQ(mg->CreateStable({5, i}, &s), MergeResult::kMerged);
    ASSERT_EQ(mg->MergeInto(s, {6, i}), MergeResult::kMerged);
  }
  int64_t maps_after = ReadMapCount();
  printf("512 merged pages in runs: maps grew by %lld, vmas_used %llu\n",
         static_cast<long long>(maps_after - maps_before), static_cast<unsigned long long>(pm->vmas_used()));
  // 512 merged pages, yet the runs coalesce: a handful of mappings.
  EXPECT_LE(maps_after - maps_before, 8) << "maps grew by " << maps_after - maps_before;
  EXPECT_LE(pm->vmas_used(), 4u);
  for (size_t i = 0; i < kPages; ++i) {
    ASSERT_TRUE(HasSeed(a.page(i), 500 + i));
    ASSERT_TRUE(HasSeed(b.page(i), 500 + i));
  }
  EXPECT_EQ(pm->pool_pages(), kPages);
  pm->RemoveRegion(5);
  pm->RemoveRegion(6);
}

TEST(ProcessMemory, VmaBudgetStopsNonZeroMergesWithoutFailure) {
  constexpr size_t kPages = 64;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) {
    if (i % 2 == 0) FillSeed(m.page(i), 77);
    else memset(m.page(i), 0, kPageSize);
  }
  ProcessMemoryOptions o;
  o.max_vmas = 6;
  std::vector<std::string> logs;
  o.log = [&](const std::string& l) { logs.push_back(l); };
  std::string err;
  auto pm = ProcessMemory::Create(o, &err);
  ASSERT_NE(pm, nullptr) << err;
  ASSERT_TRUE(pm->AddRegion(7, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({7, 0}, &s), MergeResult::kMerged);
  size_t merged = 1, refused = 0;
  for (size_t i = 2; i < kPages; i += 2) {
    MergeResult r = mg->MergeInto(s, {7, i});
    if (r == MergeResult::kMerged) ++merged;
    else if (r == MergeResult::kNoBudget) ++refused;
    else ADD_FAILURE() << "page " << i << ": " << ToString(r);
  }
  EXPECT_GT(refused, 0u);
  EXPECT_LE(pm->vmas_used(), 6u);
  size_t zero = 0;
  for (size_t i = 1; i < kPages; i += 2) zero += mg->MergeZero({7, i}) == MergeResult::kMerged;
  EXPECT_EQ(zero, kPages / 2) << "zero-page merges go on at the budget";
  EXPECT_EQ(pm->stats().no_budget, refused);
  size_t budget_lines = 0;
  for (auto& l : logs) budget_lines += l.find("VMA budget") != std::string::npos;
  EXPECT_EQ(budget_lines, 1u);
  for (size_t i = 0; i < kPages; i += 2) EXPECT_TRUE(HasSeed(m.page(i), 77)) << i;
  (void)merged;
  pm->RemoveRegion(7);
}

TEST(ProcessMemory, WithoutUserfaultfdMergingIsRefusedCleanly) {
  constexpr size_t kPages = 4;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 5);
  ProcessMemoryOptions o;
  o.simulate_no_uffd = true;
  o.log = [](const std::string&) {};
  std::string err;
  auto pm = ProcessMemory::Create(o, &err);
  ASSERT_NE(pm, nullptr) << err;
  EXPECT_FALSE(pm->merging_enabled());
  EXPECT_NE(pm->unavailable_reason().find("userfaultfd"), std::string::npos);
  EXPECT_EQ(pm->dirty_log(), nullptr);
  EXPECT_EQ(pm->dirty_log_name(), "checksum");
  ASSERT_TRUE(pm->AddRegion(8, m.data(), kPages, &err)) << err;
  StableHandle s;
  EXPECT_EQ(pm->merger()->CreateStable({8, 0}, &s), MergeResult::kError);
  EXPECT_EQ(pm->merger()->MergeZero({8, 1}), MergeResult::kError);
  for (size_t i = 0; i < kPages; ++i) EXPECT_TRUE(HasSeed(m.page(i), 5));
  m.page(2)[0] = 1;  // nothing protects the memory: writes just work
  pm->RemoveRegion(8);

  o.dirty_log = DirtyLogKind::kUffdSync;  // asked for explicitly: a clear error
  EXPECT_EQ(ProcessMemory::Create(o, &err), nullptr);
  EXPECT_NE(err.find("userfaultfd"), std::string::npos) << err;

  o.dirty_log = DirtyLogKind::kUffdAsync;  // likewise
  EXPECT_EQ(ProcessMemory::Create(o, &err), nullptr);
  EXPECT_NE(err.find("userfaultfd"), std::string::npos) << err;
}

// Remaps are queued and made by Flush (Merger::Flush): a remap that fails
// there leaves the page its own memory, reports it dirty and not merged
// (the engine takes it for a broken merge), and strands no writer.
TEST(ProcessMemory, FailingMmapLeavesThePageIntact) {
  constexpr size_t kPages = 4;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 9);
  ProcessMemoryOptions o;
  o.fail_mmap_after = 2;  // the second remap call fails
  std::vector<std::string> logged;
  o.log = [&logged](const std::string& line) { logged.push_back(line); };
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(9, m.data(), kPages, &err)) << err;
  Harvest(pm.get(), 9, kPages);
  Merger* mg = pm->merger();
  StableHandle s, s2;
  ASSERT_EQ(mg->CreateStable({9, 0}, &s), MergeResult::kMerged);
  ASSERT_EQ(mg->MergeInto(s, {9, 1}), MergeResult::kMerged);
  // Page 2 gets the offset after page 1's: pages 1 and 2 form one run (one
  // mmap), page 0 maps s on its own (the first mmap).
  ASSERT_EQ(mg->CreateStable({9, 2}, &s2), MergeResult::kMerged);
  ASSERT_EQ(s2, s + 1);
  mg->Flush();
  EXPECT_EQ(pm->stats().errors, 2u);
  ASSERT_FALSE(logged.empty());
  EXPECT_NE(logged.back().find("page 2 failed"), std::string::npos) << logged.back();
  for (size_t i = 0; i < kPages; ++i) EXPECT_TRUE(HasSeed(m.page(i), 9)) << i;
  EXPECT_TRUE(mg->IsMerged({9, 0}));
  for (size_t i : {1, 2}) {
    EXPECT_FALSE(mg->IsMerged({9, i})) << i;
    EXPECT_TRUE(EntryOf(m.page(i)).exclusive) << i;
  }
  auto b = Harvest(pm.get(), 9, kPages);
  EXPECT_FALSE(Bit(b, 0));
  EXPECT_TRUE(Bit(b, 1));
  EXPECT_TRUE(Bit(b, 2));
  EXPECT_EQ(pm->vmas_used(), 1u) << "only page 0's mapping is left (split off page 1)";
  // Writers are never stranded on the protected page.
  m.page(1)[3] = 42;
  EXPECT_EQ(m.page(1)[3], 42);
  // The stable page made for page 2 maps nothing; released, it is freed.
  EXPECT_EQ(pm->pool_pages(), 2u);
  mg->ReleaseStable(s2);
  EXPECT_EQ(pm->pool_pages(), 1u);
  pm->RemoveRegion(9);
}

// A queued page that someone else discards (a balloon's MADV_DONTNEED)
// loses its write protection, so a later write lands without a fault. The
// flush sees the missing protection and leaves the page alone: the write
// survives, the page is reported dirty and not merged.
TEST(ProcessMemory, QueuedPageDiscardedBySomeoneElseIsNotRemapped) {
  constexpr size_t kPages = 4;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 61);
  ProcessMemoryOptions o;
  std::vector<std::string> logged;
  o.log = [&logged](const std::string& line) { logged.push_back(line); };
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(18, m.data(), kPages, &err)) << err;
  Harvest(pm.get(), 18, kPages);
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({18, 0}, &s), MergeResult::kMerged);
  ASSERT_EQ(mg->MergeInto(s, {18, 2}), MergeResult::kMerged);
  ASSERT_EQ(madvise(m.page(2), kPageSize, MADV_DONTNEED), 0);  // the balloon
  m.page(2)[100] = 0x77;                                        // no fault: unprotected
  mg->Flush();
  EXPECT_EQ(m.page(2)[100], 0x77) << "the write after the discard survived";
  EXPECT_FALSE(mg->IsMerged({18, 2}));
  EXPECT_TRUE(mg->IsMerged({18, 0}));
  EXPECT_TRUE(HasSeed(m.page(0), 61));
  EXPECT_EQ(pm->stats().errors, 1u);
  ASSERT_FALSE(logged.empty());
  EXPECT_NE(logged.back().find("lost its write protection"), std::string::npos) << logged.back();
  auto b = Harvest(pm.get(), 18, kPages);
  EXPECT_TRUE(Bit(b, 2));
  EXPECT_FALSE(Bit(b, 0));
  pm->RemoveRegion(18);
}

// A run of pages merged onto consecutive stable pages is remapped with one
// mmap, and a writer that hits a page whose remap is still queued waits for
// it, then lands its write (copy-on-write of the merged page).
TEST(ProcessMemory, RunsAreRemappedTogetherAndQueuedPagesHoldWriters) {
  constexpr size_t kPages = 64;
  AnonMapping a(kPages), b(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(a.page(i), 500 + i), FillSeed(b.page(i), 500 + i);
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(15, a.data(), kPages, &err)) << err;
  ASSERT_TRUE(pm->AddRegion(16, b.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  std::vector<StableHandle> s(kPages);
  for (size_t i = 0; i < kPages; ++i) {
    ASSERT_EQ(mg->CreateStable({15, i}, &s[i]), MergeResult::kMerged) << i;
    ASSERT_EQ(mg->MergeInto(s[i], {16, i}), MergeResult::kMerged) << i;
    if (i > 0) {
      ASSERT_EQ(s[i], s[i - 1] + 1) << "consecutive offsets";
    }
  }
  const uint64_t calls_before = pm->stats().remap_calls;
  mg->Flush();
  EXPECT_EQ(pm->stats().remap_calls - calls_before, 2u) << "one mmap per region's run";
  for (size_t i = 0; i < kPages; ++i) {
    EXPECT_TRUE(mg->IsMerged({15, i})) << i;
    EXPECT_TRUE(mg->IsMerged({16, i})) << i;
    EXPECT_TRUE(HasSeed(b.page(i), 500 + i)) << i;
  }
  EXPECT_EQ(pm->vmas_used(), 0u) << "each run replaced its whole region with one pool VMA";

  // Queue one more merge, then write to that page from another thread
  // before anyone flushes: the writer blocks until the fault thread has
  // made the remap, then its write lands on a private copy.
  AnonMapping c(1);
  FillSeed(c.page(0), 500);
  ASSERT_TRUE(pm->AddRegion(17, c.data(), 1, &err)) << err;
  ASSERT_EQ(mg->MergeInto(s[0], {17, 0}), MergeResult::kMerged);
  std::thread writer([&] { c.page(0)[8] = 0x5A; });
  writer.join();
  EXPECT_EQ(c.page(0)[8], 0x5A);
  EXPECT_FALSE(mg->IsMerged({17, 0})) << "the write broke the new sharing";
  EXPECT_TRUE(HasSeed(mg->StableData(s[0]), 500)) << "the stable page is untouched";
  EXPECT_GE(pm->stats().wp_faults, 1u);
  pm->RemoveRegion(17);
  pm->RemoveRegion(16);
  pm->RemoveRegion(15);
}

TEST(ProcessMemory, SuspendDropsRegistrationsAndResumeReportsAllDirty) {
  constexpr size_t kPages = 16;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 21);
  auto pm = MakePm();
  std::string err;
  ASSERT_TRUE(pm->AddRegion(10, m.data(), kPages, &err)) << err;
  StableHandle s;
  ASSERT_EQ(pm->merger()->CreateStable({10, 0}, &s), MergeResult::kMerged);
  ASSERT_EQ(pm->merger()->MergeInto(s, {10, 1}), MergeResult::kMerged);
  Harvest(pm.get(), 10, kPages);
  pm->Suspend();
  EXPECT_EQ(pm->merger()->MergeInto(s, {10, 2}), MergeResult::kError);
  // Another userfaultfd can now own the range (what a background snapshot
  // needs): prove it by registering one.
  {
    auto other = MakePm();
    ASSERT_TRUE(other->AddRegion(99, m.data(), kPages, &err)) << err;
    // While it does, Resume fails cleanly and says why.
    EXPECT_FALSE(pm->Resume(&err));
    EXPECT_NE(err.find("another userfaultfd"), std::string::npos) << err;
    EXPECT_EQ(pm->merger()->MergeInto(s, {10, 2}), MergeResult::kError);
    other->RemoveRegion(99);
  }
  m.page(4)[0] = 1;
  ASSERT_TRUE(pm->Resume(&err)) << err;
  auto b = Harvest(pm.get(), 10, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_TRUE(Bit(b, i)) << i;
  b = Harvest(pm.get(), 10, kPages);
  EXPECT_FALSE(Bit(b, 4));
  EXPECT_EQ(pm->merger()->MergeInto(s, {10, 2}), MergeResult::kMerged);
  EXPECT_TRUE(HasSeed(m.page(1), 21));
  pm->RemoveRegion(10);
}

TEST(ProcessMemory, ReleasingAStablePageStillMappedKeepsIt) {
  constexpr size_t kPages = 4;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 31);
  ProcessMemoryOptions o;
  std::vector<std::string> logs;
  o.log = [&](const std::string& l) { logs.push_back(l); };
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(13, m.data(), kPages, &err)) << err;
  StableHandle s;
  ASSERT_EQ(pm->merger()->CreateStable({13, 0}, &s), MergeResult::kMerged);
  ASSERT_EQ(pm->merger()->MergeInto(s, {13, 1}), MergeResult::kMerged);
  m.page(0)[0] ^= 1;  // page 0 breaks away; page 1 still maps the pool page
  pm->merger()->ReleaseStable(s);  // a caller bug: page 1 still maps it
  EXPECT_EQ(pm->pool_pages(), 1u) << "the pool page must not be punched out under page 1";
  EXPECT_TRUE(HasSeed(m.page(1), 31));
  ASSERT_FALSE(logs.empty());
  EXPECT_NE(logs.back().find("still map"), std::string::npos) << logs.back();
  // Once page 1 has its own copy, the release goes through.
  ASSERT_TRUE(pm->merger()->Unmerge({13, 1}));
  pm->merger()->ReleaseStable(s);
  EXPECT_EQ(pm->pool_pages(), 0u);
  EXPECT_TRUE(HasSeed(m.page(1), 31));
  pm->RemoveRegion(13);
}

// A page that broke away from a stable page still sits in a VMA of the
// pool. If its private copy is discarded later (a balloon), it reads the
// pool file again: that must be zero (the released page's hole), never
// another stable page that reused the offset.
TEST(ProcessMemory, DiscardedPageNeverShowsAnotherStablePage) {
  constexpr size_t kPages = 4;
  AnonMapping m(kPages);
  for (size_t i = 0; i < 2; ++i) FillSeed(m.page(i), 41);
  for (size_t i = 2; i < kPages; ++i) FillSeed(m.page(i), 42);
  ProcessMemoryOptions o;
  o.pool_max_pages = 1;  // one offset: reuse would be forced
  o.log = [](const std::string&) {};
  auto pm = MakePm(o);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(14, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({14, 0}, &s), MergeResult::kMerged);
  ASSERT_EQ(mg->MergeInto(s, {14, 1}), MergeResult::kMerged);
  ASSERT_TRUE(mg->Unmerge({14, 0}));
  ASSERT_TRUE(mg->Unmerge({14, 1}));
  mg->ReleaseStable(s);
  EXPECT_EQ(pm->pool_pages(), 0u);
  // Pages 0 and 1 still sit in the offset's VMA: it is not reused.
  StableHandle t;
  EXPECT_EQ(mg->CreateStable({14, 2}, &t), MergeResult::kNoBudget);
  ASSERT_EQ(madvise(m.page(0), kPageSize, MADV_DONTNEED), 0);  // the balloon
  for (size_t b = 0; b < kPageSize; ++b) ASSERT_EQ(m.page(0)[b], 0) << "discarded page shows stale content";
  EXPECT_TRUE(HasSeed(m.page(1), 41));
  // Once no VMA maps it any more (pages 0 and 1 zero-merged onto fresh
  // anonymous memory), the offset is reused.
  ASSERT_EQ(mg->MergeZero({14, 0}), MergeResult::kMerged);
  EXPECT_EQ(mg->CreateStable({14, 2}, &t), MergeResult::kNoBudget) << "page 1 still maps the offset";
  memset(m.page(1), 0, kPageSize);
  ASSERT_EQ(mg->MergeZero({14, 1}), MergeResult::kMerged);
  EXPECT_EQ(mg->CreateStable({14, 2}, &t), MergeResult::kNoBudget) << "its remap is still queued";
  mg->Flush();
  EXPECT_EQ(mg->CreateStable({14, 2}, &t), MergeResult::kMerged);
  EXPECT_EQ(t, s);
  EXPECT_TRUE(HasSeed(m.page(2), 42));
  EXPECT_TRUE(HasSeed(m.page(3), 42));
  for (size_t b = 0; b < kPageSize; ++b) ASSERT_EQ(m.page(0)[b] | m.page(1)[b], 0);
  pm->RemoveRegion(14);
}

TEST(ProcessMemory, BadRegionsAreRejectedWithClearErrors) {
  auto pm = MakePm();
  AnonMapping m(8);
  std::string err;
  EXPECT_FALSE(pm->AddRegion(1, m.data() + 1, 4, &err));
  EXPECT_NE(err.find("aligned"), std::string::npos) << err;
  ASSERT_TRUE(pm->AddRegion(1, m.data(), 4, &err)) << err;
  EXPECT_FALSE(pm->AddRegion(1, m.page(4), 4, &err));
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  EXPECT_FALSE(pm->AddRegion(2, m.page(2), 4, &err));
  EXPECT_NE(err.find("overlaps"), std::string::npos) << err;
  // A second context cannot take a range the first owns.
  auto pm2 = MakePm();
  EXPECT_FALSE(pm2->AddRegion(3, m.data(), 4, &err));
  EXPECT_NE(err.find("userfaultfd"), std::string::npos) << err;
  pm->RemoveRegion(1);
}

}  // namespace
}  // namespace pksm
