// Page hashing helpers and trace content.
#include "pksm/hash.h"

#include <array>
#include <set>

#include <gtest/gtest.h>

#include "pksm/sim_memory.h"

namespace pksm {
namespace {

using Page = std::array<uint8_t, kPageSize>;

TEST(HashTest, PartialHashReadsOnlyTheSampledChunks) {
  Page a{};
  FillContent(a.data(), 1);
  Page b = a;
  b[kPageSize / kPartialHashChunks - 1] ^= 1;  // just before chunk 1
  EXPECT_EQ(PartialHash(a.data()), PartialHash(b.data()));
  for (size_t c = 0; c < kPartialHashChunks; ++c) {
    Page d = a;
    d[c * (kPageSize / kPartialHashChunks) + kPartialHashChunkBytes - 1] ^= 1;  // last sampled byte
    EXPECT_NE(PartialHash(a.data()), PartialHash(d.data())) << c;
  }
  EXPECT_NE(PageChecksum(a.data()), PageChecksum(b.data()));
}

TEST(HashTest, IsZeroPage) {
  Page z{};
  EXPECT_TRUE(IsZeroPage(z.data()));
  for (size_t off : {size_t{0}, size_t{63}, size_t{64}, kPageSize - 1}) {
    Page p{};
    p[off] = 1;
    EXPECT_FALSE(IsZeroPage(p.data())) << off;
  }
}

TEST(HashTest, FillContentIsDeterministicDistinctAndNonZero) {
  Page a, b;
  FillContent(a.data(), 5);
  FillContent(b.data(), 5);
  EXPECT_EQ(a, b);
  std::set<Page> seen;
  for (uint64_t s = 0; s < 8; ++s) {
    FillContent(a.data(), s);
    EXPECT_FALSE(IsZeroPage(a.data()));
    seen.insert(a);
    for (uint64_t i = 0; i < 8; ++i) {
      FillContent(a.data(), s, i);
      EXPECT_FALSE(IsZeroPage(a.data()));
      seen.insert(a);
    }
  }
  EXPECT_EQ(seen.size(), 8u + 64u);  // content(s) differs from every content(s, i)
}

}  // namespace
}  // namespace pksm
