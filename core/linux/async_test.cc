// ProcessMemory with the asynchronous dirty log (DirtyLogKind::kUffdAsync):
// WP_ASYNC write protection read back with PAGEMAP_SCAN, and merges that hold
// writers off by moving the candidate out (UFFDIO_MOVE + MISSING mode).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pksm/engine.h"
#include "pksm/linux/process_memory.h"
#include "test_support.h"

namespace pksm {
namespace {

std::unique_ptr<ProcessMemory> MakeAsync() {
  ProcessMemoryOptions o;
  o.dirty_log = DirtyLogKind::kUffdAsync;
  return MakePm(o);
}

// Writes are found by the page-table scan: no fault reaches us.
TEST(AsyncDirtyLog, ReportsWritesWithoutFaults) {
  constexpr size_t kPages = 200;
  AnonMapping m(kPages);
  for (size_t i = 0; i < kPages; ++i) FillSeed(m.page(i), 3);
  auto pm = MakeAsync();
  ASSERT_NE(pm, nullptr);
  EXPECT_EQ(pm->dirty_log_name(), "uffd-async");
  ASSERT_NE(pm->dirty_log(), nullptr);
  EXPECT_EQ(pm->dirty_log()->Name(), "uffd-async");
  std::string err;
  ASSERT_TRUE(pm->AddRegion(1, m.data(), kPages, &err)) << err;
  auto b = Harvest(pm.get(), 1, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_FALSE(Bit(b, i)) << i;
  m.page(5)[1] = 1;
  m.page(64)[2] = 2;
  m.page(199)[3] = 3;
  (void)*static_cast<volatile uint8_t*>(m.page(120));  // a read is not a write
  b = Harvest(pm.get(), 1, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_EQ(Bit(b, i), i == 5 || i == 64 || i == 199) << i;
  b = Harvest(pm.get(), 1, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_FALSE(Bit(b, i)) << "reported twice: " << i;
  m.page(5)[4] = 4;  // protected again by the harvest
  b = Harvest(pm.get(), 1, kPages);
  EXPECT_TRUE(Bit(b, 5));
  EXPECT_EQ(pm->stats().wp_faults, 0u);
  EXPECT_EQ(m.page(5)[1], 1);
  EXPECT_EQ(m.page(5)[4], 4);
  pm->RemoveRegion(1);
}

// Merges of every kind, then unmerges; content preserved throughout, and a
// write to a merged page is reported and breaks only that page.
TEST(AsyncDirtyLog, MergeAndUnmergeKeepContent) {
  constexpr size_t kPages = 32;
  AnonMapping m(kPages);
  for (size_t i = 0; i < 16; ++i) FillSeed(m.page(i), 7);
  for (size_t i = 16; i < kPages; ++i) memset(m.page(i), 0, kPageSize), m.page(i)[0] = 1, m.page(i)[0] = 0;
  auto pm = MakeAsync();
  ASSERT_NE(pm, nullptr);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(2, m.data(), kPages, &err)) << err;
  Harvest(pm.get(), 2, kPages);
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({2, 0}, &s), MergeResult::kMerged);
  for (size_t i = 1; i < 16; ++i) ASSERT_EQ(mg->MergeInto(s, {2, i}), MergeResult::kMerged) << i;
  for (size_t i = 16; i < kPages; ++i) ASSERT_EQ(mg->MergeZero({2, i}), MergeResult::kMerged) << i;
  FillSeed(m.page(31), 8);  // waits for page 31's queued merge, then breaks it
  mg->Flush();
  EXPECT_EQ(pm->stats().errors, 0u);
  EXPECT_GE(pm->stats().missing_faults, 1u);
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_TRUE(HasSeed(m.page(i), 7)) << i;
    EXPECT_TRUE(mg->IsMerged({2, i})) << i;
    PagemapEntry e = EntryOf(m.page(i));
    EXPECT_TRUE(e.present && e.file) << i;
  }
  for (size_t i = 16; i < 31; ++i) {
    for (size_t k = 0; k < kPageSize; k += 512) ASSERT_EQ(m.page(i)[k], 0) << i;
    EXPECT_TRUE(mg->IsMerged({2, i})) << i;
  }
  EXPECT_TRUE(HasSeed(m.page(31), 8));
  EXPECT_FALSE(mg->IsMerged({2, 31}));
  auto b = Harvest(pm.get(), 2, kPages);
  for (size_t i = 0; i < kPages; ++i) EXPECT_EQ(Bit(b, i), i == 31) << i;
  m.page(3)[9] = 9;  // a copy-on-write break of a stable page
  b = Harvest(pm.get(), 2, kPages);
  EXPECT_TRUE(Bit(b, 3));
  EXPECT_FALSE(mg->IsMerged({2, 3}));
  EXPECT_TRUE(HasSeed(mg->StableData(s), 7));
  for (size_t i = 0; i < 31; ++i) ASSERT_TRUE(mg->Unmerge({2, i})) << i;
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_FALSE(mg->IsMerged({2, i}));
    PagemapEntry e = EntryOf(m.page(i));
    EXPECT_TRUE(e.present && !e.file && e.exclusive) << i;
    if (i != 3) {
      EXPECT_TRUE(HasSeed(m.page(i), 7)) << i;
    }
  }
  EXPECT_EQ(m.page(3)[9], 9);
  mg->ReleaseStable(s);
  EXPECT_EQ(pm->pool_pages(), 0u);
  // A page that broke away from a pool page cannot be moved: not merged
  // again in this mode, and still intact.
  memset(m.page(4), 0, kPageSize);
  EXPECT_EQ(mg->MergeZero({2, 4}), MergeResult::kError);
  EXPECT_EQ(m.page(4)[7], 0);
  pm->RemoveRegion(2);
}

// A candidate whose content changed is moved back; one that was never
// populated is refused as such; a first touch of untouched memory is served.
TEST(AsyncDirtyLog, ChangedAndUnpopulatedCandidates) {
  constexpr size_t kPages = 8;
  AnonMapping m(kPages);
  FillSeed(m.page(0), 11);
  FillSeed(m.page(1), 12);
  // pages 2..7 never touched
  auto pm = MakeAsync();
  ASSERT_NE(pm, nullptr);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(3, m.data(), kPages, &err)) << err;
  Merger* mg = pm->merger();
  StableHandle s;
  ASSERT_EQ(mg->CreateStable({3, 0}, &s), MergeResult::kMerged);
  EXPECT_EQ(mg->MergeInto(s, {3, 1}), MergeResult::kChanged);
  EXPECT_TRUE(HasSeed(m.page(1), 12));
  EXPECT_EQ(mg->MergeZero({3, 2}), MergeResult::kNotPopulated);
  EXPECT_EQ(mg->MergeInto(s, {3, 3}), MergeResult::kNotPopulated);
  const uint64_t missing = pm->stats().missing_faults;
  EXPECT_EQ(m.page(5)[100], 0);  // first touch: served with the zero page
  m.page(6)[100] = 66;
  EXPECT_EQ(m.page(6)[100], 66);
  EXPECT_GE(pm->stats().missing_faults, missing + 2);
  mg->Flush();
  EXPECT_TRUE(HasSeed(m.page(0), 11));
  EXPECT_TRUE(mg->IsMerged({3, 0}));
  EXPECT_EQ(pm->stats().errors, 0u);
  pm->RemoveRegion(3);
}

// Writers stamp random pages (merged ones and queued ones included) while
// the engine deduplicates: every write lands, and the dirty log reports
// enough for the copy-on-write breaks to be seen.
TEST(AsyncDirtyLog, EngineWithWritersLosesNothing) {
  constexpr size_t kPages = 2048;
  AnonMapping m(kPages);
  auto seed_of = [](size_t i) -> uint64_t { return i < 512 ? 0 : i < 1536 ? 100 + (i % 64) / 8 : 5000 + i; };
  for (size_t i = 0; i < kPages; ++i) {
    if (seed_of(i) == 0) memset(m.page(i), 0, kPageSize);
    else FillSeed(m.page(i), seed_of(i));
  }
  auto pm = MakeAsync();
  ASSERT_NE(pm, nullptr);
  std::string err;
  ASSERT_TRUE(pm->AddRegion(4, m.data(), kPages, &err)) << err;
  Params p;
  p.pages_to_scan = 256;
  p.delay = 1;
  Engine e(pm->memory(), pm->merger(), pm->dirty_log(), p);
  e.AddRegion(4, "area", kPages);
  e.Track(4, 0, kPages);
  e.RunPasses(3);
  Stats s = e.GetStats();
  EXPECT_EQ(s.ksm_zero_pages, 512u);
  EXPECT_EQ(s.pages_sharing + s.pages_shared, 1024u);

  PageStampers stampers(m, /*threads=*/2, /*writes=*/6000, /*word_base=*/300, /*seed=*/5);
  StepWhileStamping(e, stampers, p.pages_to_scan);
  stampers.Join();
  e.RunPasses(3);
  s = e.GetStats();
  EXPECT_GT(s.cow_breaks, 0u);
  EXPECT_EQ(stampers.lost(), 0u);
  EXPECT_EQ(stampers.PagesNotAsWritten(seed_of), 0u) << "pages whose content is not what was last written";
  ProcessMemoryStats ls = pm->stats();
  printf("async: merges %llu, missing faults %llu, errors %llu, cow breaks %llu\n",
         (unsigned long long)ls.merges, (unsigned long long)ls.missing_faults, (unsigned long long)ls.errors,
         (unsigned long long)s.cow_breaks);
  EXPECT_EQ(ls.wp_faults, 0u);
  Params un = e.params();
  un.run = 2;
  ASSERT_EQ(e.SetParams(un), "");
  e.Step(0);
  EXPECT_EQ(pm->pool_pages(), 0u);
  pm->RemoveRegion(4);
}

}  // namespace
}  // namespace pksm
