#include "workload.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

namespace pksm::host {
namespace {

HostOptions Opts(uint64_t mib, uint32_t z, uint32_t d, uint32_t u, uint64_t k, uint64_t l) {
  HostOptions o;
  o.size_mib = mib;
  o.mix_zero = z;
  o.mix_dup = d;
  o.mix_unique = u;
  o.dup_contents = k;
  o.run_length = l;
  return o;
}

// expected_saved recomputed from the keys alone: zero pages, plus k-1 for
// every duplicate content with k copies.
uint64_t SavedFromKeys(const std::vector<uint64_t>& keys) {
  std::map<uint64_t, uint64_t> count;
  for (uint64_t k : keys) ++count[k];
  uint64_t saved = 0;
  for (auto& [k, n] : count) saved += k == 0 ? n : n - 1;
  return saved;
}

TEST(Workload, CountsFollowTheMix) {
  Workload w = BuildWorkload(Opts(16, 25, 50, 25, 100, 1));
  EXPECT_EQ(w.pages_total, 4096u);
  EXPECT_EQ(w.zero_pages, 1024u);
  EXPECT_EQ(w.dup_pages, 2048u);
  EXPECT_EQ(w.unique_pages, 1024u);
  EXPECT_EQ(w.dup_contents_used, 100u);
  EXPECT_EQ(w.expected_saved, 1024u + 2048u - 100u);
  EXPECT_EQ(w.expected_saved, SavedFromKeys(w.keys));
}

TEST(Workload, RunsLineUpContentSequences) {
  Workload w = BuildWorkload(Opts(4, 0, 100, 0, 256, 64));
  ASSERT_EQ(w.pages_total, 1024u);
  // 100% duplicates in runs of 64: every page follows its predecessor's
  // content index by one within a run, and runs start at a multiple of 64.
  for (uint64_t p = 0; p < w.pages_total; p += 64) {
    uint64_t c0 = w.keys[p] & ~kKeyDup;
    EXPECT_EQ(c0 % 64, 0u) << p;
    for (uint64_t j = 1; j < 64; ++j) EXPECT_EQ(w.keys[p + j], w.keys[p] + j) << p + j;
  }
  EXPECT_EQ(w.expected_saved, SavedFromKeys(w.keys));
  EXPECT_EQ(w.expected_saved, 1024u - 256u);
}

TEST(Workload, UniquePagesAreUniqueAndDeterministic) {
  Workload a = BuildWorkload(Opts(8, 10, 30, 60, 5, 1));
  Workload b = BuildWorkload(Opts(8, 10, 30, 60, 5, 1));
  EXPECT_EQ(a.keys, b.keys);
  std::set<uint64_t> uniq;
  for (uint64_t k : a.keys) {
    if ((k >> 60) == 2) {
      EXPECT_TRUE(uniq.insert(k).second);
    }
  }
  EXPECT_EQ(uniq.size(), a.unique_pages);
  HostOptions other = Opts(8, 10, 30, 60, 5, 1);
  other.seed = 2;
  EXPECT_NE(BuildWorkload(other).keys, a.keys);
}

TEST(Workload, CappedSavingHonoursMaxPageSharing) {
  // 1024 copies of each of 2 contents: with at most 256 mappings per shared
  // page each content needs 4 shared pages.
  Workload w = BuildWorkload(Opts(8, 0, 100, 0, 2, 1), 256);
  EXPECT_EQ(w.expected_saved, 2048u - 2u);
  EXPECT_EQ(w.expected_saved_capped, 2048u - 8u);
}

TEST(Workload, FillAndMatch) {
  alignas(4096) static uint8_t page[kHostPageSize];
  FillPage(page, 0);
  EXPECT_TRUE(PageMatches(page, 0));
  FillPage(page, kKeyDup | 3);
  EXPECT_TRUE(PageMatches(page, kKeyDup | 3));
  EXPECT_FALSE(PageMatches(page, kKeyDup | 4));
  EXPECT_FALSE(PageMatches(page, 0));
  page[4000] ^= 1;  // one bit anywhere makes it a different page
  EXPECT_FALSE(PageMatches(page, kKeyDup | 3));
}

TEST(Workload, PopulateThenVerify) {
  Workload w = BuildWorkload(Opts(1, 25, 50, 25, 10, 4));
  std::vector<uint8_t> mem(w.pages_total * kHostPageSize + kHostPageSize);
  uint8_t* base = mem.data();
  ASSERT_TRUE(Populate(w, base, nullptr));
  EXPECT_EQ(VerifyPages(w.keys, base).mismatches, 0u);
  base[5 * kHostPageSize + 17] ^= 0x40;
  VerifyResult r = VerifyPages(w.keys, base);
  EXPECT_EQ(r.mismatches, 1u);
  EXPECT_EQ(r.first_page, 5u);
}

}  // namespace
}  // namespace pksm::host
