// Engine behaviour on a simulated guest: merging, zero pages, trees,
// probation, copy-on-write breaks, del list, run modes, chains and dups.
#include "pksm/engine.h"

#include <gtest/gtest.h>

#include <vector>

#include "engine_test_util.h"
#include "pksm/hash.h"

namespace pksm {
namespace {

using PS = SimMemory::PageState;

TEST(EngineTest, IdenticalPagesMerge) {
  TestGuest g;
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(7));
  g.engine.RunPasses(1);
  // delay = 1: the first visit only sees the fill.
  EXPECT_EQ(g.S().pages_shared, 0u);
  g.engine.RunPasses(1);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 3u);
  EXPECT_EQ(s.rmap_items, 4u);
  EXPECT_EQ(s.pages_volatile, 0u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(g.State(0, i), PS::kStable) << i;
    EXPECT_TRUE(g.Reads(0, i, Content(7))) << i;
  }
  EXPECT_EQ(g.sim.StablePagesLive(), 1u);
  EXPECT_EQ(g.sim.HostPages(), 1u);
  EXPECT_EQ(s.general_profit, static_cast<int64_t>(3 * kPageSize - 4 * Engine::RecordBytes()));
}

TEST(EngineTest, DifferentPagesNeverMerge) {
  TestGuest g;
  for (size_t i = 0; i < 16; ++i) g.Write(0, i, Content(1, i));
  g.engine.RunPasses(5);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.pages_sharing, 0u);
  EXPECT_EQ(s.merges, 0u);
  EXPECT_EQ(s.pages_unshared, 16u);  // in the unstable tree, like the kernel reports
  EXPECT_EQ(s.pages_volatile, 0u);
  EXPECT_EQ(s.rescan_list, 16u);
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(g.State(0, i), PS::kPrivate);
    EXPECT_TRUE(g.Reads(0, i, Content(1, i)));
  }
}

TEST(EngineTest, ZeroPagesTakeTheZeroPath) {
  TestGuest g;
  for (size_t i = 0; i < 8; ++i) g.Write(0, i, Zero());
  g.engine.RunPasses(2);
  Stats s = g.S();
  EXPECT_EQ(s.ksm_zero_pages, 8u);
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.stable_lookups, 0u);  // zero check comes before the stable tree
  EXPECT_EQ(s.general_profit, static_cast<int64_t>(8 * kPageSize - 8 * Engine::RecordBytes()));
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(g.State(0, i), PS::kZero);
  EXPECT_EQ(g.sim.HostPages(), 0u);
}

TEST(EngineTest, ZeroPagesMergeAsContentWithoutUseZeroPages) {
  Params p;
  p.use_zero_pages = false;
  TestGuest g(p);
  for (size_t i = 0; i < 8; ++i) g.Write(0, i, Zero());
  g.engine.RunPasses(2);
  Stats s = g.S();
  EXPECT_EQ(s.ksm_zero_pages, 0u);
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 7u);
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(g.Reads(0, i, Zero()));
}

// Without use_zero_pages, untouched (never-populated) pages read zero and
// go through the trees like any content. The Merger reports them
// kNotPopulated from CreateStable / MergeInto: they must not get a stable
// page (no saving, a mapping spent); with a dirty log they are forgotten.
TEST(EngineTest, UntouchedPagesThroughTreesAreForgottenWithDirtyLog) {
  Params p;
  p.use_zero_pages = false;
  TestGuest g(p);
  g.engine.Track(0, 0, 6);  // tracked, never populated
  g.engine.RunPasses(4);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.pages_sharing, 0u);
  EXPECT_EQ(s.merge_failures, 0u);  // not a refusal
  // Each failed pair forgets the tree node; the last page has no partner
  // left and waits in the unstable tree.
  EXPECT_LE(s.rmap_items, 1u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(g.State(0, i), PS::kUntouched) << i;
  EXPECT_EQ(g.sim.StablePagesLive(), 0u);
  // A later write tracks a page again through the dirty log.
  uint64_t before = s.rmap_items;
  g.sim.Write(PageRef{0, 0}, Content(5).data());
  g.sim.Write(PageRef{0, 1}, Content(5).data());
  g.engine.Step(1);
  EXPECT_EQ(g.S().rmap_items, before + 2);
}

// The stable tree holds a (populated) zero page; an untouched page that
// finds it there (MergeInto -> kNotPopulated) is forgotten, not mapped.
TEST(EngineTest, UntouchedPageFindingStableZeroIsForgotten) {
  Params p;
  p.use_zero_pages = false;
  TestGuest g(p);
  g.Write(0, 0, Zero());
  g.Write(0, 1, Zero());
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_shared, 1u);
  ASSERT_EQ(g.S().pages_sharing, 1u);
  g.engine.Track(0, 10, 1);
  g.engine.RunPasses(3);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 1u);
  EXPECT_EQ(s.merge_failures, 0u);
  EXPECT_EQ(s.rmap_items, 2u);
  EXPECT_EQ(g.State(0, 10), PS::kUntouched);
}

// Without a dirty log nothing would track an untouched page again, so it
// stays tracked (back on the new list), never merged.
TEST(EngineTest, UntouchedPagesThroughTreesStayTrackedWithoutDirtyLog) {
  Params p;
  p.use_zero_pages = false;
  TestGuest g(p, /*with_dirty_log=*/false);
  g.engine.Track(0, 0, 6);
  g.engine.RunPasses(4);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.pages_sharing, 0u);
  EXPECT_EQ(s.merge_failures, 0u);
  EXPECT_EQ(s.rmap_items, 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(g.State(0, i), PS::kUntouched) << i;
  EXPECT_EQ(g.sim.StablePagesLive(), 0u);
  // Once written (and identical), they merge as usual.
  for (size_t i = 0; i < 6; ++i) g.Write(0, i, Content(8));
  g.engine.RunPasses(3);
  EXPECT_EQ(g.S().pages_shared, 1u);
  EXPECT_EQ(g.S().pages_sharing, 5u);
}

TEST(EngineTest, UntouchedPageIsForgottenNotMerged) {
  TestGuest g;
  g.engine.Track(0, 0, 4);  // tracked, but never populated
  EXPECT_EQ(g.S().rmap_items, 4u);
  g.engine.RunPasses(2);
  Stats s = g.S();
  EXPECT_EQ(s.ksm_zero_pages, 0u);
  EXPECT_EQ(s.rmap_items, 0u);
  // A later write tracks the page again through the dirty log alone.
  g.sim.Write(PageRef{0, 2}, Content(5).data());
  g.engine.Step(1);
  EXPECT_EQ(g.S().rmap_items, 1u);
}

TEST(EngineTest, StableTreeHitCostsOneCompare) {
  TestGuest g;
  g.Write(0, 0, Content(9));
  g.Write(0, 1, Content(9));
  for (size_t i = 2; i < 20; ++i) g.Write(0, i, Content(3, i));
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_shared, 1u);
  Stats before = g.S();
  g.Write(0, 30, Content(9));
  g.engine.RunPasses(2);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 2u);
  EXPECT_EQ(s.stable_hits - before.stable_hits, 1u);
  EXPECT_EQ(s.merges - before.merges, 1u);
  EXPECT_EQ(g.State(0, 30), PS::kStable);
  // The unique pages re-enter the unstable tree (hash-only steps) and the
  // hit needs a single memcmp: the one proving equality.
  EXPECT_EQ(s.pages_compared - before.pages_compared, 1u);
}

TEST(EngineTest, UnstableMatchCreatesStablePage) {
  TestGuest g;
  g.Write(0, 3, Content(11));
  g.Write(0, 40, Content(11));
  g.engine.RunPasses(2);
  Stats s = g.S();
  EXPECT_EQ(s.merges, 2u);
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 1u);
  EXPECT_EQ(s.stable_hits, 0u);
  EXPECT_EQ(g.sim.StablePagesLive(), 1u);
  EXPECT_EQ(g.State(0, 3), PS::kStable);
  EXPECT_EQ(g.State(0, 40), PS::kStable);
}

TEST(EngineTest, PageWrittenBeforeEveryPassIsVolatile) {
  for (uint32_t delay : {1u, 2u, 5u}) {
    Params p;
    p.delay = delay;
    TestGuest g(p);
    for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(1));
    for (int pass = 0; pass < 10; ++pass) {
      // Pages 10 and 11 always hold equal content, rewritten every pass.
      g.Write(0, 10, Content(100 + pass));
      g.Write(0, 11, Content(100 + pass));
      g.engine.RunPasses(1);
    }
    Stats s = g.S();
    EXPECT_EQ(g.State(0, 10), PS::kPrivate) << delay;
    EXPECT_EQ(g.State(0, 11), PS::kPrivate) << delay;
    EXPECT_EQ(s.pages_volatile, 2u) << delay;
    EXPECT_EQ(s.probation[0], 2u) << delay;
    EXPECT_EQ(s.pages_sharing, 3u) << delay;  // the settled pages did merge
  }
}

TEST(EngineTest, ProbationHistogramCounts) {
  Params p;
  p.delay = 3;
  TestGuest g(p);
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(2, i));
  EXPECT_EQ(g.S().probation[0], 4u);
  EXPECT_EQ(g.S().new_list, 4u);
  g.engine.RunPasses(1);  // seen written
  EXPECT_EQ(g.S().probation[0], 4u);
  g.engine.RunPasses(1);
  EXPECT_EQ(g.S().probation[1], 4u);
  EXPECT_EQ(g.S().probation[0], 0u);
  g.engine.RunPasses(1);
  EXPECT_EQ(g.S().probation[2], 4u);
  // A write resets one page's counter.
  g.sim.Write(PageRef{0, 1}, Content(77).data());
  g.engine.RunPasses(1);  // cnt 3 >= delay: tried, off the new list
  Stats s = g.S();
  EXPECT_EQ(s.probation[0], 1u);
  EXPECT_EQ(s.new_list, 1u);
  EXPECT_EQ(s.rescan_list, 3u);
  uint64_t total = 0;
  for (uint64_t b : s.probation) total += b;
  EXPECT_EQ(total, s.new_list);
}

TEST(EngineTest, DelayZeroTriesOnFirstVisit) {
  Params p;
  p.delay = 0;
  TestGuest g(p);
  g.Write(0, 0, Content(4));
  g.Write(0, 1, Content(4));
  g.engine.RunPasses(1);
  // Written on that visit: stable search only, then the rescan list.
  EXPECT_EQ(g.S().new_list, 0u);
  EXPECT_EQ(g.S().rescan_list, 2u);
  g.engine.RunPasses(1);
  EXPECT_EQ(g.S().pages_sharing, 1u);
}

// Content that exists when Track() hands it over (a RAM block at start-up)
// is judged on its first visit by the dirty log, which has watched it since
// Track(): settled pages merge in the first pass with delay 1, where the
// kernel's KSM needs a second (checksum) pass. A page written after Track()
// still waits.
TEST(EngineTest, TrackedSettledContentMergesInTheFirstPass) {
  Params p;
  p.pages_to_scan = 4;
  TestGuest g(p, /*with_dirty_log=*/true, /*pages=*/16);
  for (size_t i = 0; i < 16; ++i) g.sim.Write(PageRef{0, i}, Content(30 + i / 2).data());  // 8 pairs
  std::vector<uint64_t> drain(1);
  g.sim.dirty_log()->Harvest(0, 16, drain.data());  // the writes predate the engine's watch
  g.engine.Track(0, 0, 16);
  g.sim.Write(PageRef{0, 15}, Content(99).data());  // written after Track(): not settled
  g.engine.RunPasses(1);
  Stats s = g.S();
  EXPECT_EQ(s.full_scans, 1u);
  EXPECT_EQ(s.pages_sharing, 7u) << "seven pairs merged in pass 1";
  for (size_t i = 0; i < 14; ++i) EXPECT_EQ(g.State(0, i), PS::kStable) << i;
  EXPECT_EQ(g.State(0, 15), PS::kPrivate);
  EXPECT_EQ(s.probation[0], 1u) << "page 15 was seen written and waits";
}

// The first visit of Track()ed content must cover a real interval: pages
// visited in the very step after Track() (no sleep has passed yet) go to the
// back of the pass once and are judged there; a single-step pass leaves
// them for the next pass.
TEST(EngineTest, TrackedContentIsNotJudgedWithoutAnInterval) {
  Params p;
  p.pages_to_scan = 100;  // the whole region in one step
  TestGuest g(p, /*with_dirty_log=*/true, /*pages=*/8);
  for (size_t i = 0; i < 8; ++i) g.sim.Write(PageRef{0, i}, Content(5).data());
  std::vector<uint64_t> drain(1);
  g.sim.dirty_log()->Harvest(0, 8, drain.data());
  g.engine.Track(0, 0, 8);
  g.engine.RunPasses(1);  // one step: Track and visit are microseconds apart
  EXPECT_EQ(g.S().pages_sharing, 0u);
  EXPECT_EQ(g.S().probation[0], 8u);
  g.engine.RunPasses(1);
  EXPECT_EQ(g.S().pages_sharing, 7u);
}

// A provider that observes less often than the engine steps (QEMU's log
// snapshots at most every 250 ms) says so from Sync(): the engine counts
// observations, not steps, before it judges Track()ed content.
class SparseDirtyLog : public DirtyLog {
 public:
  explicit SparseDirtyLog(DirtyLog* inner) : inner_(inner) {}
  std::string_view Name() const override { return "sparse"; }
  bool Sync() override { return observe_; }
  void Harvest(RegionId region, size_t pages, uint64_t* dirty) override {
    if (observe_) inner_->Harvest(region, pages, dirty);
  }
  bool observe_ = false;

 private:
  DirtyLog* inner_;
};

TEST(EngineTest, TrackedContentWaitsForRealObservations) {
  SimMemory sim;
  sim.AddRegion(0, 8);
  for (size_t i = 0; i < 8; ++i) sim.Write(PageRef{0, i}, Content(6).data());
  std::vector<uint64_t> drain(1);
  sim.dirty_log()->Harvest(0, 8, drain.data());
  SparseDirtyLog log(sim.dirty_log());
  Params p;
  p.pages_to_scan = 2;
  Engine e(sim.memory(), sim.merger(), &log, p);
  e.AddRegion(0, "r0", 8);
  e.Track(0, 0, 8);
  e.RunPasses(3);  // many steps, no observation: nothing may be judged unwritten
  EXPECT_EQ(e.GetStats().pages_sharing, 0u);
  log.observe_ = true;
  e.RunPasses(2);  // two observations: watched for a real interval now
  EXPECT_EQ(e.GetStats().pages_sharing, 7u);
}

void CowBreakBreaksOnlyThatPage(bool with_dirty_log) {
  TestGuest g(Params(), with_dirty_log);
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(7));
  g.engine.RunPasses(with_dirty_log ? 2 : 3);
  ASSERT_EQ(g.S().pages_sharing, 3u);
  g.sim.Write(PageRef{0, 1}, Content(8).data());
  if (with_dirty_log)
    g.engine.Step(1);
  else
    g.engine.RunPasses(1);  // found by the once-per-pass sweep
  Stats s = g.S();
  EXPECT_EQ(s.cow_breaks, 1u);
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 2u);
  EXPECT_EQ(g.State(0, 1), PS::kPrivate);
  EXPECT_TRUE(g.Reads(0, 1, Content(8)));
  for (size_t i : {0, 2, 3}) {
    EXPECT_EQ(g.State(0, i), PS::kStable);
    EXPECT_TRUE(g.Reads(0, i, Content(7)));
  }
  // The broken page is rescanned and merges again once it equals the rest.
  g.sim.Write(PageRef{0, 1}, Content(7).data());
  g.engine.RunPasses(3);
  EXPECT_EQ(g.S().pages_sharing, 3u);
  EXPECT_EQ(g.S().cow_breaks, 1u);
}

TEST(EngineTest, WriteToMergedPageBreaksThatPageOnly) { CowBreakBreaksOnlyThatPage(true); }
TEST(EngineTest, WriteToMergedPageBreaksThatPageOnlyChecksum) { CowBreakBreaksOnlyThatPage(false); }

TEST(EngineTest, StaleDirtyBitIsNoCowBreak) {
  TestGuest g;
  g.Write(0, 0, Content(7));
  g.Write(0, 1, Content(7));
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_sharing, 1u);
  // Merged, then a write arrives and is reported: a real break.
  g.sim.WriteByte(PageRef{0, 0}, 5, 1);
  g.engine.Step(1);
  EXPECT_EQ(g.S().cow_breaks, 1u);
  g.engine.Step(1);
  EXPECT_EQ(g.S().cow_breaks, 1u);  // not counted twice
}

TEST(EngineTest, DiscardReleasesRecordsThroughDelList) {
  TestGuest g;
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(7));
  for (size_t i = 4; i < 8; ++i) g.Write(0, i, Content(5, i));
  g.Write(0, 8, Zero());
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_sharing, 3u);
  ASSERT_EQ(g.S().ksm_zero_pages, 1u);
  g.Discard(0, 0, 9);
  Stats s = g.S();
  EXPECT_EQ(s.del_list, 9u);
  EXPECT_EQ(s.rmap_items, 9u);
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.ksm_zero_pages, 0u);
  EXPECT_EQ(s.pages_unshared, 0u);
  EXPECT_EQ(g.sim.StablePagesLive(), 0u);
  EXPECT_EQ(s.unmerges, 0u);  // discarded memory is not unmerged
  g.engine.Step(1);
  s = g.S();
  EXPECT_EQ(s.del_list, 0u);
  EXPECT_EQ(s.rmap_items, 0u);
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(g.State(0, i), PS::kUntouched);
  // Tracked again by a later write.
  g.Write(0, 2, Content(7));
  EXPECT_EQ(g.S().rmap_items, 1u);
}

TEST(EngineTest, RemoveAndShrinkRegionDrainThroughDelList) {
  TestGuest g;
  g.AddRegion(1, 32);
  for (size_t i = 0; i < 8; ++i) {
    g.Write(0, i, Content(7));
    g.Write(1, i, Content(7));
  }
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_sharing, 15u);
  g.engine.RemoveRegion(1);
  g.sim.RemoveRegion(1);
  g.engine.ResizeRegion(0, 4);
  Stats s = g.S();
  EXPECT_EQ(s.del_list, 12u);
  EXPECT_EQ(s.pages_sharing, 3u);
  g.engine.Step(1);
  EXPECT_EQ(g.S().del_list, 0u);
  EXPECT_EQ(g.S().rmap_items, 4u);
  ASSERT_EQ(g.engine.GetRegionStats().size(), 1u);
  EXPECT_EQ(g.engine.GetRegionStats()[0].pages, 4u);
  EXPECT_EQ(g.engine.GetRegionStats()[0].pages_merged, 4u);
  // The id may be used again once drained.
  g.AddRegion(1, 8);
  g.Write(1, 0, Content(7));
  g.engine.RunPasses(2);
  EXPECT_EQ(g.S().pages_sharing, 4u);
}

TEST(EngineTest, RunTwoUnmergesEverything) {
  TestGuest g;
  for (size_t i = 0; i < 6; ++i) g.Write(0, i, Content(7));
  for (size_t i = 6; i < 10; ++i) g.Write(0, i, Zero());
  for (size_t i = 10; i < 14; ++i) g.Write(0, i, Content(2, i));
  g.engine.RunPasses(2);
  Stats s = g.S();
  ASSERT_EQ(s.pages_sharing, 5u);
  ASSERT_EQ(s.ksm_zero_pages, 4u);
  g.Set("run", "2");
  g.engine.Step(100);
  s = g.S();
  EXPECT_EQ(g.engine.params().run, 0u);
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.pages_sharing, 0u);
  EXPECT_EQ(s.ksm_zero_pages, 0u);
  EXPECT_EQ(s.unmerges, 10u);
  EXPECT_EQ(s.new_list, 14u);
  EXPECT_EQ(s.probation[0], 14u);
  EXPECT_EQ(g.sim.StablePagesLive(), 0u);
  for (size_t i = 0; i < 14; ++i) {
    EXPECT_EQ(g.State(0, i), PS::kPrivate) << i;
    EXPECT_TRUE(g.Reads(0, i, i < 6 ? Content(7) : i < 10 ? Zero() : Content(2, i))) << i;
  }
  // run 0: nothing happens.
  EXPECT_EQ(g.engine.Step(100), 0u);
  g.engine.RunPasses(3);
  EXPECT_EQ(g.S().pages_sharing, 0u);
  // run 1 again: everything merges again.
  g.Set("run", "1");
  g.engine.RunPasses(2);
  EXPECT_EQ(g.S().pages_sharing, 5u);
}

TEST(EngineTest, MaxPageSharingMakesChainsOfDups) {
  Params p;
  p.max_page_sharing = 2;
  TestGuest g(p);
  for (size_t i = 0; i < 6; ++i) g.Write(0, i, Content(7));
  g.Write(0, 10, Content(8));
  g.Write(0, 11, Content(8));
  g.engine.RunPasses(3);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 4u);  // 3 dups of content 7, one page of content 8
  EXPECT_EQ(s.pages_sharing, 4u);
  EXPECT_EQ(s.stable_node_chains, 1u);
  EXPECT_EQ(s.stable_node_dups, 3u);
  EXPECT_EQ(g.sim.StablePagesLive(), 4u);
  // Breaking both mappings of one dup frees it; the chain keeps 2 dups.
  g.sim.Write(PageRef{0, 0}, Content(1).data());
  g.sim.Write(PageRef{0, 1}, Content(2).data());
  g.engine.Step(1);
  s = g.S();
  EXPECT_EQ(s.cow_breaks, 2u);
  EXPECT_EQ(s.stable_node_chains, 1u);
  EXPECT_EQ(s.stable_node_dups, 2u);
  EXPECT_EQ(s.pages_shared, 3u);
  for (size_t i = 2; i < 6; ++i) EXPECT_TRUE(g.Reads(0, i, Content(7)));
}

TEST(EngineTest, PartialHashCollisionNeverMerges) {
  Page a = Content(21);
  Page b = a;
  b[100] ^= 0xff;  // outside every sampled chunk
  ASSERT_EQ(PartialHash(a.data()), PartialHash(b.data()));
  TestGuest g;
  g.Write(0, 0, a);
  g.Write(0, 1, b);
  g.engine.RunPasses(4);
  Stats s = g.S();
  EXPECT_EQ(s.pages_shared, 0u);
  EXPECT_EQ(s.merges, 0u);
  EXPECT_GE(s.pages_compared, 1u);
  EXPECT_GE(s.partial_hash_misses, 1u);
  EXPECT_TRUE(g.Reads(0, 0, a));
  EXPECT_TRUE(g.Reads(0, 1, b));
  // A third page equal to `a` merges with it, never with `b`.
  g.Write(0, 2, a);
  g.engine.RunPasses(2);
  EXPECT_EQ(g.State(0, 1), PS::kPrivate);
  EXPECT_EQ(g.State(0, 0), PS::kStable);
  EXPECT_EQ(g.State(0, 2), PS::kStable);
}

std::string Scenario(Mode mode, bool with_dirty_log) {
  Params p;
  p.mode = mode;
  p.pages_to_scan = 7;
  TestGuest g(p, with_dirty_log, 256);
  for (size_t i = 0; i < 256; ++i) g.Write(0, i, (i % 5 == 0) ? Zero() : Content(i % 13));
  for (int round = 0; round < 6; ++round) {
    for (size_t i = round; i < 256; i += 17) g.Write(0, i, Content(round, i));
    g.engine.Step(50);
    g.engine.RunPasses(1);
  }
  return g.S().ToJson();
}

TEST(EngineTest, SameTraceSameStatistics) {
  for (Mode m : {Mode::kPksm, Mode::kKsm}) {
    for (bool dl : {true, false}) {
      std::string a = Scenario(m, dl);
      std::string b = Scenario(m, dl);
      EXPECT_EQ(a, b);
      EXPECT_NE(a.find("\"pages_sharing\":"), std::string::npos);
    }
  }
}

TEST(EngineTest, KsmModeBaseline) {
  Params p;
  p.mode = Mode::kKsm;
  TestGuest g(p);
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(7));
  for (size_t i = 4; i < 8; ++i) g.Write(0, i, Zero());
  EXPECT_EQ(g.S().new_list, 0u);  // one list
  EXPECT_EQ(g.S().rescan_list, 8u);
  g.engine.RunPasses(1);  // first visit: checksum recorded, counts as changed
  EXPECT_EQ(g.S().pages_sharing, 0u);
  EXPECT_EQ(g.S().ksm_zero_pages, 0u);
  g.engine.RunPasses(1);
  Stats s = g.S();
  EXPECT_EQ(s.pages_sharing, 3u);
  EXPECT_EQ(s.ksm_zero_pages, 4u);
  EXPECT_EQ(s.mode, "ksm");
  // Zero pages went through the stable tree first (kernel order).
  EXPECT_GE(s.stable_lookups, 8u);
  // Checksums were taken on every visit: 8 pages x 2 passes.
  EXPECT_GE(s.bytes_hashed, 16u * kPageSize);
  EXPECT_EQ(s.probation, (std::array<uint64_t, kProbationBuckets>{}));
}

TEST(EngineTest, PksmWithDirtyLogHashesLessThanKsm) {
  auto run = [](Mode m) {
    Params p;
    p.mode = m;
    TestGuest g(p, true, 128);
    for (size_t i = 0; i < 128; ++i) g.Write(0, i, Content(i % 32, i % 64));
    g.engine.RunPasses(6);
    return g.S();
  };
  Stats pk = run(Mode::kPksm), ks = run(Mode::kKsm);
  EXPECT_EQ(pk.pages_sharing, ks.pages_sharing);
  EXPECT_EQ(pk.pages_sharing, 64u);
  EXPECT_LT(pk.bytes_hashed * 4, ks.bytes_hashed);
}

TEST(EngineTest, NoBudgetIsCountedAndNothingLost) {
  TestGuest g;
  g.sim.SetMergeBudget(2);
  for (size_t i = 0; i < 6; ++i) g.Write(0, i, Content(7));
  g.engine.RunPasses(4);
  Stats s = g.S();
  EXPECT_GT(s.budget_refusals, 0u);
  EXPECT_GE(s.merge_failures, s.budget_refusals);
  EXPECT_EQ(s.pages_shared, 1u);
  EXPECT_EQ(s.pages_sharing, 1u);
  for (size_t i = 0; i < 6; ++i) EXPECT_TRUE(g.Reads(0, i, Content(7)));
  g.sim.SetMergeBudget(UINT64_MAX);
  g.engine.RunPasses(2);
  EXPECT_EQ(g.S().pages_sharing, 5u);
}

TEST(EngineTest, ChecksumFallbackMerges) {
  TestGuest g(Params(), /*with_dirty_log=*/false);
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(7));
  g.engine.RunPasses(3);
  Stats s = g.S();
  EXPECT_EQ(s.pages_sharing, 3u);
  EXPECT_EQ(s.dirty_log, "checksum");
}

TEST(EngineTest, NewRatioSharesCandidates) {
  Params p;
  p.delay = 0;
  p.new_ratio = 25;
  TestGuest g(p, true, 256);
  for (size_t i = 0; i < 100; ++i) g.Write(0, i, Content(1, i));
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().rescan_list, 100u);
  g.Set("delay", "100");  // new pages now stay on probation
  for (size_t i = 100; i < 200; ++i) g.Write(0, i, Content(2, i));
  g.engine.RunPasses(1);  // first visit of the new pages: seen written, cnt 0
  ASSERT_EQ(g.S().probation[0], 100u);
  g.engine.Step(40);
  // A quarter of the 40 candidates came from the new list (cnt now 1).
  Stats s = g.S();
  EXPECT_EQ(s.probation[1], 10u);
  EXPECT_EQ(s.probation[0], 90u);
  g.Set("new_ratio", "50");
  g.engine.Step(40);
  EXPECT_EQ(g.S().probation[1], 30u);
}

TEST(EngineTest, NothingTrackedPassCompletes) {
  TestGuest g;
  g.engine.RunPasses(3);
  EXPECT_EQ(g.S().full_scans, 3u);
  EXPECT_EQ(g.engine.Step(10), 0u);
}

}  // namespace
}  // namespace pksm

namespace pksm {
namespace {

// With nothing changing, the unstable tree survives the end of a pass and
// its pages are not reinserted; a change in the tree drops it, like the
// kernel does every pass.
TEST(EngineTest, UnstableTreeKeptWhileNothingChanges) {
  TestGuest g(Params(), true, 128);
  for (size_t i = 0; i < 100; ++i) g.Write(0, i, Content(3, i));
  g.engine.RunPasses(3);
  Stats a = g.S();
  ASSERT_EQ(a.pages_unshared, 100u);
  g.engine.RunPasses(2);
  Stats b = g.S();
  EXPECT_EQ(b.partial_hash_hits, a.partial_hash_hits);  // no descent at all
  EXPECT_EQ(b.pages_scanned - a.pages_scanned, 200u);
  EXPECT_EQ(b.pages_unshared, 100u);
  // A page written while in the tree: out at once, tree rebuilt next pass.
  g.sim.Write(PageRef{0, 5}, Content(3, 6).data());
  g.engine.Step(1);
  EXPECT_EQ(g.S().pages_unshared, 99u);
  g.engine.RunPasses(3);
  Stats c = g.S();
  EXPECT_GT(c.partial_hash_hits, b.partial_hash_hits);
  EXPECT_EQ(c.pages_sharing, 1u);  // page 5 now equals page 6
  EXPECT_EQ(g.State(0, 5), SimMemory::PageState::kStable);
  EXPECT_EQ(g.State(0, 6), SimMemory::PageState::kStable);
}

// The same on the checksum fallback: a change is seen at the page's visit.
TEST(EngineTest, UnstableTreeKeptChecksum) {
  TestGuest g(Params(), false, 128);
  for (size_t i = 0; i < 100; ++i) g.Write(0, i, Content(3, i));
  g.engine.RunPasses(4);
  Stats a = g.S();
  g.engine.RunPasses(2);
  EXPECT_EQ(g.S().partial_hash_hits, a.partial_hash_hits);
  g.sim.Write(PageRef{0, 50}, Content(3, 7).data());
  g.engine.RunPasses(4);
  EXPECT_EQ(g.S().pages_sharing, 1u);
  EXPECT_EQ(g.State(0, 50), SimMemory::PageState::kStable);
}

}  // namespace
}  // namespace pksm

namespace pksm {
namespace {

TEST(EngineTest, SetParamsRejectsInvalidAndKeepsOld) {
  TestGuest g;
  Params bad = g.engine.params();
  bad.max_page_sharing = 1;
  EXPECT_NE(g.engine.SetParams(bad).find("max_page_sharing"), std::string::npos);
  EXPECT_EQ(g.engine.params().max_page_sharing, Params().max_page_sharing);
  bad = g.engine.params();
  bad.delay = 4;
  bad.new_ratio = 0;
  EXPECT_NE(g.engine.SetParams(bad), "");
  EXPECT_EQ(g.engine.params().delay, Params().delay);  // all or nothing
}

TEST(EngineTest, TrackIsIdempotentAndRegionStatsAddUp) {
  TestGuest g(Params(), true, 16);
  g.AddRegion(7, 8);
  for (size_t i = 0; i < 4; ++i) g.Write(0, i, Content(1));
  g.Write(0, 5, Zero());
  g.Write(7, 0, Content(1));
  g.engine.Track(0, 0, 16);  // pages 6..15 are untouched: tracked, then forgotten
  g.engine.Track(0, 0, 4);
  EXPECT_EQ(g.S().rmap_items, 16u + 1u);
  g.engine.RunPasses(3);
  auto rs = g.engine.GetRegionStats();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].id, 0u);
  EXPECT_EQ(rs[0].name, "r0");
  EXPECT_EQ(rs[0].pages, 16u);
  EXPECT_EQ(rs[0].pages_tracked, 5u);
  EXPECT_EQ(rs[0].pages_merged, 4u);
  EXPECT_EQ(rs[0].zero_pages, 1u);
  EXPECT_EQ(rs[1].id, 7u);
  EXPECT_EQ(rs[1].pages_merged, 1u);
  EXPECT_EQ(g.S().rmap_items, 6u);
  EXPECT_EQ(g.S().pages_sharing, 4u);
}

TEST(EngineTest, GrowRegionTracksNewPages) {
  TestGuest g(Params(), true, 8);
  g.engine.ResizeRegion(0, 5000);  // crosses a record chunk
  g.sim.RemoveRegion(0);
  g.sim.AddRegion(0, 5000);
  g.Write(0, 1, Content(4));
  g.Write(0, 4999, Content(4));
  g.engine.RunPasses(2);
  EXPECT_EQ(g.S().pages_sharing, 1u);
  EXPECT_EQ(g.engine.GetRegionStats()[0].pages, 5000u);
}

TEST(EngineTest, KsmModeFindsBreaksEveryPassWithDirtyLog) {
  Params p;
  p.mode = Mode::kKsm;
  TestGuest g(p);
  for (size_t i = 0; i < 3; ++i) g.Write(0, i, Content(9));
  g.engine.RunPasses(2);
  ASSERT_EQ(g.S().pages_sharing, 2u);
  g.sim.Write(PageRef{0, 2}, Content(10).data());
  g.engine.RunPasses(1);
  EXPECT_EQ(g.S().cow_breaks, 1u);
  EXPECT_EQ(g.S().pages_sharing, 1u);
  EXPECT_TRUE(g.Reads(0, 2, Content(10)));
}

TEST(EngineTest, SwitchingModesKeepsEverythingRight) {
  TestGuest g(Params(), true, 64);
  for (size_t i = 0; i < 64; ++i) g.Write(0, i, i % 3 == 0 ? Zero() : Content(i % 5));
  g.engine.RunPasses(1);
  g.Set("mode", "ksm");
  g.engine.RunPasses(3);
  g.Set("mode", "pksm");
  g.engine.RunPasses(3);
  Stats s = g.S();
  // 22 zero pages; 42 others in 5 contents (i % 5) -> 37 saved.
  EXPECT_EQ(s.ksm_zero_pages, 22u);
  EXPECT_EQ(s.pages_shared, 5u);
  EXPECT_EQ(s.pages_sharing, 42u - 5u);
  for (size_t i = 0; i < 64; ++i) EXPECT_TRUE(g.Reads(0, i, i % 3 == 0 ? Zero() : Content(i % 5)));
}

}  // namespace
}  // namespace pksm
