// SimMemory: copy-on-write, the dirty log and the Merger contract.
#include "pksm/sim_memory.h"

#include <array>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "pksm/hash.h"

namespace pksm {
namespace {

using Page = std::array<uint8_t, kPageSize>;
using PS = SimMemory::PageState;

Page C(uint64_t s) {
  Page p;
  FillContent(p.data(), s);
  return p;
}

bool Reads(const SimMemory& m, PageRef r, const Page& p) {
  return std::memcmp(m.Read(r), p.data(), kPageSize) == 0;
}

TEST(SimMemoryTest, UntouchedReadsZero) {
  SimMemory m;
  m.AddRegion(0, 4);
  EXPECT_EQ(m.State({0, 1}), PS::kUntouched);
  EXPECT_TRUE(IsZeroPage(m.Read({0, 1})));
  EXPECT_EQ(m.memory()->PageData({0, 9}), nullptr);
  EXPECT_EQ(m.memory()->PageData({3, 0}), nullptr);
  EXPECT_EQ(m.HostPages(), 0u);
  EXPECT_EQ(m.RegionPages(0), 4u);
  EXPECT_EQ(m.RegionPages(1), 0u);
}

TEST(SimMemoryTest, MergeAndCopyOnWrite) {
  SimMemory m;
  m.AddRegion(0, 4);
  Merger* mg = m.merger();
  for (size_t i = 0; i < 3; ++i) m.Write({0, i}, C(1).data());
  m.Write({0, 3}, C(2).data());
  EXPECT_EQ(m.HostPages(), 4u);
  StableHandle h = 0;
  ASSERT_EQ(mg->CreateStable({0, 0}, &h), MergeResult::kMerged);
  EXPECT_EQ(mg->MergeInto(h, {0, 1}), MergeResult::kMerged);
  EXPECT_EQ(mg->MergeInto(h, {0, 3}), MergeResult::kChanged);  // different content
  EXPECT_EQ(m.merger_compares(), 2u);
  EXPECT_EQ(m.State({0, 1}), PS::kStable);
  EXPECT_EQ(m.HostPages(), 3u);  // stable + page 2 + page 3
  EXPECT_TRUE(mg->IsMerged({0, 0}));
  EXPECT_EQ(std::memcmp(mg->StableData(h), C(1).data(), kPageSize), 0);
  // COW: only page 0 breaks.
  m.WriteByte({0, 0}, 10, 0xAB);
  EXPECT_FALSE(mg->IsMerged({0, 0}));
  EXPECT_TRUE(mg->IsMerged({0, 1}));
  Page expect = C(1);
  expect[10] = 0xAB;
  EXPECT_TRUE(Reads(m, {0, 0}, expect));
  EXPECT_TRUE(Reads(m, {0, 1}, C(1)));
  // The engine lets go of the handle; page 1 still reads it.
  mg->ReleaseStable(h);
  EXPECT_EQ(m.StablePagesLive(), 1u);
  EXPECT_TRUE(Reads(m, {0, 1}, C(1)));
  EXPECT_TRUE(mg->Unmerge({0, 1}));
  EXPECT_EQ(m.StablePagesLive(), 0u);
  EXPECT_TRUE(Reads(m, {0, 1}, C(1)));
  EXPECT_EQ(m.State({0, 1}), PS::kPrivate);
}

TEST(SimMemoryTest, ZeroMerging) {
  SimMemory m;
  m.AddRegion(0, 4);
  Merger* mg = m.merger();
  EXPECT_EQ(mg->MergeZero({0, 0}), MergeResult::kNotPopulated);
  Page z{};
  m.Write({0, 1}, z.data());
  m.Write({0, 2}, C(3).data());
  EXPECT_EQ(mg->MergeZero({0, 1}), MergeResult::kMerged);
  EXPECT_EQ(mg->MergeZero({0, 2}), MergeResult::kChanged);
  EXPECT_EQ(m.State({0, 1}), PS::kZero);
  EXPECT_EQ(m.HostPages(), 1u);
  m.WriteByte({0, 1}, 0, 7);
  EXPECT_EQ(m.State({0, 1}), PS::kPrivate);
  EXPECT_EQ(m.Read({0, 1})[0], 7);
  EXPECT_EQ(m.Read({0, 1})[1], 0);
}

TEST(SimMemoryTest, DirtyLogReportsWritesOnce) {
  SimMemory m;
  m.AddRegion(0, 130);
  DirtyLog* dl = m.dirty_log();
  EXPECT_EQ(dl->Name(), "sim");
  m.Write({0, 3}, C(1).data());
  m.WriteByte({0, 129}, 0, 1);
  std::vector<uint64_t> bits(3, 0);
  dl->Harvest(0, 130, bits.data());
  EXPECT_EQ(bits[0], uint64_t{1} << 3);
  EXPECT_EQ(bits[1], 0u);
  EXPECT_EQ(bits[2], uint64_t{1} << 1);
  std::vector<uint64_t> again(3, 0);
  dl->Harvest(0, 130, again.data());
  EXPECT_EQ(again, std::vector<uint64_t>(3, 0));
  // Merges do not count as writes.
  m.Write({0, 4}, C(1).data());
  dl->Harvest(0, 130, again.data());
  StableHandle h;
  ASSERT_EQ(m.merger()->CreateStable({0, 3}, &h), MergeResult::kMerged);
  ASSERT_EQ(m.merger()->MergeInto(h, {0, 4}), MergeResult::kMerged);
  std::vector<uint64_t> none(3, 0);
  dl->Harvest(0, 130, none.data());
  EXPECT_EQ(none, std::vector<uint64_t>(3, 0));
}

TEST(SimMemoryTest, DiscardAndBudget) {
  SimMemory m;
  m.AddRegion(0, 8);
  for (size_t i = 0; i < 8; ++i) m.Write({0, i}, C(1).data());
  m.SetMergeBudget(2);
  StableHandle h;
  ASSERT_EQ(m.merger()->CreateStable({0, 0}, &h), MergeResult::kMerged);
  EXPECT_EQ(m.merger()->MergeInto(h, {0, 1}), MergeResult::kMerged);
  EXPECT_EQ(m.merger()->MergeInto(h, {0, 2}), MergeResult::kNoBudget);
  EXPECT_TRUE(Reads(m, {0, 2}, C(1)));
  m.Discard({0, 1});
  EXPECT_EQ(m.State({0, 1}), PS::kUntouched);
  EXPECT_TRUE(IsZeroPage(m.Read({0, 1})));
  EXPECT_EQ(m.merger()->MergeInto(h, {0, 2}), MergeResult::kMerged);  // budget freed
  m.merger()->ReleaseStable(h);
  m.RemoveRegion(0);
  EXPECT_EQ(m.StablePagesLive(), 0u);
  EXPECT_EQ(m.HostPages(), 0u);
}

}  // namespace
}  // namespace pksm
