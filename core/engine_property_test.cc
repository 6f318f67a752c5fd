// Property test: random operation sequences on a simulated guest, checked
// once settled against a brute-force oracle that groups pages by content.
#include <cstdlib>
#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "pksm/hash.h"

namespace pksm {
namespace {

using PS = SimMemory::PageState;

struct Config {
  Mode mode;
  bool dirty_log;
  bool use_zero_pages;
  uint32_t seed;
  bool small_sharing = false;  // max_page_sharing 2..4 and mode switches
};

class EnginePropertyTest : public ::testing::TestWithParam<Config> {};

constexpr RegionId kRegions = 2;
constexpr size_t kPages = 48;

TEST_P(EnginePropertyTest, SettledStateMatchesOracle) {
  const Config cfg = GetParam();
  std::mt19937_64 rng(cfg.seed);
  auto pick = [&](uint64_t n) { return static_cast<uint64_t>(rng() % n); };

  Params p;
  p.mode = cfg.mode;
  p.use_zero_pages = cfg.use_zero_pages;
  p.max_page_sharing = cfg.small_sharing ? 2 + static_cast<uint32_t>(pick(3)) : 1024;
  p.pages_to_scan = 1 + pick(40);
  TestGuest g(p, cfg.dirty_log, kPages);
  g.AddRegion(1, kPages);

  // What every page must read (the oracle), and whether it was populated.
  std::map<std::pair<RegionId, size_t>, Page> want;
  auto content = [&]() {
    switch (pick(6)) {
      case 0: return Zero();
      case 1: return Content(900000 + pick(1000000));  // almost surely unique
      default: return Content(pick(4));                 // a few shared contents
    }
  };
  auto write = [&](RegionId r, size_t i, const Page& c) {
    g.Write(r, i, c);
    want[{r, i}] = c;
  };

  for (int op = 0; op < 400; ++op) {
    RegionId r = static_cast<RegionId>(pick(kRegions));
    size_t i = pick(kPages);
    switch (pick(10)) {
      case 0:
      case 1:
      case 2:
        write(r, i, content());
        break;
      case 3: {  // fill a range with one content
        size_t n = 1 + pick(8);
        Page c = content();
        for (size_t k = i; k < std::min(kPages, i + n); ++k) write(r, k, c);
        break;
      }
      case 4: {  // partial write
        if (!want.count({r, i})) break;
        size_t off = pick(kPageSize);
        uint8_t v = static_cast<uint8_t>(pick(256));
        g.sim.WriteByte(PageRef{r, i}, off, v);
        g.engine.Track(r, i, 1);
        want[{r, i}][off] = v;
        break;
      }
      case 5: {
        size_t n = 1 + pick(4);
        size_t end = std::min(kPages, i + n);
        g.Discard(r, i, end - i);
        for (size_t k = i; k < end; ++k) want.erase({r, k});
        break;
      }
      case 6: {  // a parameter change
        Params q = g.engine.params();
        switch (pick(cfg.small_sharing ? 6 : 4)) {
          case 0: q.delay = static_cast<uint32_t>(pick(4)); break;
          case 1: q.new_ratio = static_cast<uint32_t>(1 + pick(99)); break;
          case 2: q.pages_to_scan = static_cast<uint32_t>(1 + pick(60)); break;
          case 3: q.run = pick(8) == 0 ? 2 : 1; break;
          case 4: q.mode = q.mode == Mode::kKsm ? Mode::kPksm : Mode::kKsm; break;
          case 5: q.max_page_sharing = 2 + static_cast<uint32_t>(pick(3)); break;
        }
        ASSERT_EQ(g.engine.SetParams(q), "");
        break;
      }
      default:
        g.engine.Step(1 + pick(80));
        if (g.engine.params().run == 0) {
          Params q = g.engine.params();
          q.run = 1;
          ASSERT_EQ(g.engine.SetParams(q), "");
        }
        break;
    }
    // Reads are right at every moment, not only once settled.
    if (op % 50 == 0) {
      for (auto& [key, c] : want) ASSERT_TRUE(g.Reads(key.first, key.second, c)) << "op " << op;
    }
  }

  // Settle: several passes with no writes.
  Params q = g.engine.params();
  q.run = 1;
  ASSERT_EQ(g.engine.SetParams(q), "");
  g.engine.RunPasses(q.delay + 6);

  // The oracle: group populated pages by content.
  std::map<Page, std::vector<std::pair<RegionId, size_t>>> groups;
  for (auto& [key, c] : want) {
    ASSERT_TRUE(g.Reads(key.first, key.second, c)) << key.first << ":" << key.second;
    groups[c].push_back(key);
  }
  uint64_t expect_sharing = 0, expect_shared = 0, expect_zero = 0;
  for (auto& [c, pages] : groups) {
    bool zero = IsZeroPage(c.data());
    if (zero && cfg.use_zero_pages) {
      for (auto& [r, i] : pages) EXPECT_EQ(g.State(r, i), PS::kZero) << r << ":" << i;
      expect_zero += pages.size();
      continue;
    }
    size_t stable = 0;
    for (auto& [r, i] : pages) stable += g.State(r, i) == PS::kStable;
    if (cfg.small_sharing) {
      // Full dups leave at most one page waiting for a partner.
      if (pages.size() >= 2) {
        EXPECT_GE(stable + 1, pages.size()) << "group of " << pages.size();
      }
      continue;
    }
    if (pages.size() >= 2) {
      EXPECT_EQ(stable, pages.size()) << "group of " << pages.size() << " not fully merged";
    }
    // A lone page may keep a stable page whose other mappings broke away.
    if (stable > 0) {
      ++expect_shared;
      expect_sharing += stable - 1;
    }
  }
  Stats s = g.S();
  EXPECT_EQ(s.del_list, 0u);
  EXPECT_EQ(s.rmap_items, want.size());
  EXPECT_EQ(s.ksm_zero_pages, expect_zero);
  uint64_t hist = 0;
  for (uint64_t b : s.probation) hist += b;
  EXPECT_EQ(hist, s.new_list);
  EXPECT_EQ(g.sim.StablePagesLive(), s.pages_shared);
  if (cfg.small_sharing) return;
  EXPECT_EQ(s.pages_sharing, expect_sharing);
  EXPECT_EQ(s.pages_shared, expect_shared);
  EXPECT_EQ(s.stable_node_chains, 0u);
}

// PKSM_PROPERTY_SEEDS=N runs N seeds per configuration (default 12).
std::vector<Config> Configs() {
  std::vector<Config> out;
  uint32_t seeds = 12;
  if (const char* env = std::getenv("PKSM_PROPERTY_SEEDS")) seeds = static_cast<uint32_t>(std::atoi(env));
  for (uint32_t seed = 1; seed <= seeds; ++seed) {
    out.push_back({Mode::kPksm, true, true, seed});
    out.push_back({Mode::kPksm, false, true, seed + 100000});
    out.push_back({Mode::kKsm, true, true, seed + 200000});
    out.push_back({Mode::kPksm, true, false, seed + 300000});
    out.push_back({Mode::kKsm, false, false, seed + 400000});
    out.push_back({Mode::kPksm, true, true, seed + 500000, true});
    out.push_back({Mode::kPksm, false, true, seed + 600000, true});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Random, EnginePropertyTest, ::testing::ValuesIn(Configs()),
                         [](const ::testing::TestParamInfo<Config>& param_info) {
                           const Config& c = param_info.param;
                           return std::string(c.mode == Mode::kKsm ? "ksm" : "pksm") +
                                  (c.dirty_log ? "_dirty" : "_checksum") + (c.use_zero_pages ? "_zero" : "_nozero") + (c.small_sharing ? "_small" : "") +
                                  "_" + std::to_string(c.seed);
                         });

}  // namespace
}  // namespace pksm
