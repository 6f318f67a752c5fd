// The engine over ProcessMemory on an mmap'd area of this process:
// identical pages merge, zero pages drop, writes keep landing (COW breaks
// are noticed), and run = 2 gives every page its private copy back.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pksm/engine.h"
#include "pksm/linux/process_memory.h"
#include "test_support.h"

namespace pksm {
namespace {

constexpr size_t kPages = 1024;
// Layout: [0,256) zero, [256,768) duplicates of 8 contents in runs of 64,
// [768,1024) unique.
uint64_t SeedOf(size_t i) {
  if (i < 256) return 0;
  if (i < 768) return 100 + (i - 256) % 64 / 8;  // 8 contents, runs of 8 per content
  return 1000 + i;
}

void FillArea(const AnonMapping& m) {
  for (size_t i = 0; i < kPages; ++i) {
    if (SeedOf(i) == 0) memset(m.page(i), 0, kPageSize);
    else FillSeed(m.page(i), SeedOf(i));
  }
}

TEST(EngineLinux, IdenticalPagesMergeAndWritesKeepLanding) {
  AnonMapping m(kPages);
  FillArea(m);
  std::string err;
  ProcessMemoryOptions o;
  o.log = [](const std::string&) {};
  auto pm = ProcessMemory::Create(o, &err);
  ASSERT_NE(pm, nullptr) << err;
  ASSERT_TRUE(pm->AddRegion(1, m.data(), kPages, &err)) << err;
  Params p;
  p.pages_to_scan = 256;
  p.delay = 1;
  ASSERT_EQ(p.Validate(), "");
  {
    Engine e(pm->memory(), pm->merger(), pm->dirty_log(), p);
    e.AddRegion(1, "area", kPages);
    e.Track(1, 0, kPages);
    e.RunPasses(6);
    Stats s = e.GetStats();
    EXPECT_EQ(s.ksm_zero_pages, 256u);
    EXPECT_EQ(s.pages_shared, 8u);
    EXPECT_EQ(s.pages_sharing, 512u - 8u);
    EXPECT_EQ(pm->pool_pages(), 8u);
    for (size_t i = 0; i < kPages; ++i) {
      ASSERT_TRUE(SeedOf(i) == 0 ? m.page(i)[17] == 0 : HasSeed(m.page(i), SeedOf(i))) << i;
      PagemapEntry en = EntryOf(m.page(i));
      bool private_page = en.present && !en.file && en.exclusive;
      EXPECT_EQ(private_page, i >= 768) << "page " << i;
    }

    // Writers stamp random pages (merged ones included) while the engine runs.
    PageStampers stampers(m, /*threads=*/2, /*writes=*/4000, /*word_base=*/256, /*seed=*/3);
    StepWhileStamping(e, stampers, p.pages_to_scan);  // scan while the writers write
    stampers.Join();
    e.RunPasses(3);
    s = e.GetStats();
    EXPECT_EQ(stampers.lost(), 0u);
    EXPECT_GT(s.cow_breaks, 0u);
    EXPECT_EQ(stampers.PagesNotAsWritten(SeedOf), 0u) << "pages whose content is not what was last written";

    // run = 2: everything private again, content intact, pool empty.
    Params q = e.params();
    q.run = 2;
    ASSERT_EQ(e.SetParams(q), "");
    e.Step(1);
    s = e.GetStats();
    EXPECT_EQ(s.pages_sharing, 0u);
    EXPECT_EQ(s.ksm_zero_pages, 0u);
    for (size_t i = 0; i < kPages; ++i) {
      PagemapEntry en = EntryOf(m.page(i));
      EXPECT_TRUE(en.present && !en.file && en.exclusive) << "page " << i << " not private after run=2";
    }
    EXPECT_EQ(pm->pool_pages(), 0u);
    ProcessMemoryStats ls = pm->stats();
    EXPECT_EQ(ls.errors, 0u);
    printf("merges %llu (zero %llu), cow breaks %llu, wp_faults %llu, us/merge %.2f, vmas %llu\n",
           (unsigned long long)ls.merges, (unsigned long long)ls.zero_merges, (unsigned long long)s.cow_breaks,
           (unsigned long long)ls.wp_faults,
           ls.merges ? static_cast<double>(ls.merge_ns) / 1e3 / static_cast<double>(ls.merges) : 0.0,
           (unsigned long long)ls.vmas_used);
  }
  pm->RemoveRegion(1);
}

}  // namespace
}  // namespace pksm
