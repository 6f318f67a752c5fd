// Params parsing, validation and JSON; Stats JSON.
#include "pksm/params.h"

#include <gtest/gtest.h>

#include "pksm/stats.h"

namespace pksm {
namespace {

TEST(ParamsTest, SetsEveryKey) {
  Params p;
  EXPECT_EQ(p.Set("mode", "ksm"), "");
  EXPECT_EQ(p.mode, Mode::kKsm);
  EXPECT_EQ(p.Set("run", "2"), "");
  EXPECT_EQ(p.run, 2u);
  EXPECT_EQ(p.Set("pages_to_scan", "5000"), "");
  EXPECT_EQ(p.pages_to_scan, 5000u);
  EXPECT_EQ(p.Set("sleep_millisecs", "0"), "");
  EXPECT_EQ(p.sleep_millisecs, 0u);
  EXPECT_EQ(p.Set("delay", "1000"), "");
  EXPECT_EQ(p.delay, 1000u);
  EXPECT_EQ(p.Set("use_zero_pages", "off"), "");
  EXPECT_FALSE(p.use_zero_pages);
  EXPECT_EQ(p.Set("use_zero_pages", "true"), "");
  EXPECT_TRUE(p.use_zero_pages);
  EXPECT_EQ(p.Set("max_page_sharing", "2"), "");
  EXPECT_EQ(p.max_page_sharing, 2u);
  EXPECT_EQ(p.Set("new_ratio", "99"), "");
  EXPECT_EQ(p.new_ratio, 99u);
  EXPECT_EQ(p.Validate(), "");
}

TEST(ParamsTest, DashesAndAliases) {
  Params p;
  EXPECT_EQ(p.Set("pages-to-scan", "7"), "");
  EXPECT_EQ(p.pages_to_scan, 7u);
  EXPECT_EQ(p.Set("sleep-ms", "15"), "");
  EXPECT_EQ(p.sleep_millisecs, 15u);
  EXPECT_EQ(p.Set("sleep_ms", "16"), "");
  EXPECT_EQ(p.sleep_millisecs, 16u);
  EXPECT_EQ(p.Set("max-page-sharing", "9"), "");
  EXPECT_EQ(p.max_page_sharing, 9u);
}

TEST(ParamsTest, ErrorsNameKeyAndValue) {
  Params p;
  EXPECT_EQ(p.Set("bogus", "1"), "unknown parameter 'bogus'");
  EXPECT_EQ(p.Set("delay", "abc"), "invalid value 'abc' for 'delay': expected an integer 0..1000");
  EXPECT_EQ(p.Set("delay", "1001"), "invalid value '1001' for 'delay': expected an integer 0..1000");
  EXPECT_EQ(p.Set("delay", "-1"), "invalid value '-1' for 'delay': expected an integer 0..1000");
  EXPECT_EQ(p.Set("delay", ""), "invalid value '' for 'delay': expected an integer 0..1000");
  EXPECT_EQ(p.Set("delay", "3x"), "invalid value '3x' for 'delay': expected an integer 0..1000");
  EXPECT_EQ(p.Set("max_page_sharing", "1"),
            "invalid value '1' for 'max_page_sharing': expected an integer 2..1048576");
  EXPECT_EQ(p.Set("pages_to_scan", "0"), "invalid value '0' for 'pages_to_scan': expected an integer 1..10000000");
  EXPECT_EQ(p.Set("new_ratio", "100"), "invalid value '100' for 'new_ratio': expected an integer 1..99");
  EXPECT_EQ(p.Set("run", "3"), "invalid value '3' for 'run': expected an integer 0..2");
  EXPECT_EQ(p.Set("mode", "fast"), "invalid value 'fast' for 'mode': expected pksm or ksm");
  EXPECT_EQ(p.Set("use_zero_pages", "2"), "invalid value '2' for 'use_zero_pages': expected 0 or 1");
  EXPECT_EQ(p.Set("sleep_millisecs", "60001"),
            "invalid value '60001' for 'sleep_millisecs': expected an integer 0..60000");
  // Nothing changed on error.
  EXPECT_EQ(p.delay, Params().delay);
  EXPECT_EQ(p.max_page_sharing, Params().max_page_sharing);
}

TEST(ParamsTest, ValidateNamesFirstBadField) {
  Params p;
  p.max_page_sharing = 1;
  EXPECT_NE(p.Validate().find("max_page_sharing"), std::string::npos);
  p = Params();
  p.new_ratio = 0;
  EXPECT_NE(p.Validate().find("new_ratio"), std::string::npos);
  p = Params();
  p.delay = 5000;
  EXPECT_NE(p.Validate().find("'delay'"), std::string::npos);
}

TEST(ParamsTest, KeysAreAllSettable) {
  const auto& keys = Params::Keys();
  EXPECT_EQ(keys.size(), 8u);
  Params p;
  for (std::string_view k : keys) {
    // Every key accepts some value and rejects garbage.
    EXPECT_EQ(p.Set(k, "zzz").find("invalid value 'zzz'"), 0u) << k;
  }
}

TEST(ParamsTest, ToJson) {
  Params p;
  EXPECT_EQ(p.ToJson(),
            "{\"mode\":\"pksm\",\"run\":1,\"pages_to_scan\":100,\"sleep_millisecs\":20,\"delay\":1,"
            "\"use_zero_pages\":true,\"max_page_sharing\":256,\"new_ratio\":50}");
  EXPECT_STREQ(ToString(Mode::kKsm), "ksm");
}

TEST(StatsTest, ToJsonHasEveryField) {
  Stats s;
  s.pages_sharing = 5;
  s.general_profit = -80;
  s.probation[0] = 3;
  s.probation[7] = 9;
  s.dirty_log = "sim";
  s.mode = "pksm";
  std::string j = s.ToJson();
  EXPECT_EQ(j.find('\n'), std::string::npos);
  for (const char* k :
       {"pages_shared", "pages_sharing\":5", "pages_unshared", "pages_volatile", "ksm_zero_pages", "full_scans",
        "stable_node_chains", "stable_node_dups", "general_profit\":-80", "rmap_items", "new_list", "rescan_list",
        "del_list", "cow_breaks", "pages_scanned", "merges", "merge_failures", "budget_refusals", "unmerges",
        "pages_compared", "partial_hash_hits", "partial_hash_misses", "stable_lookups", "stable_hits",
        "bytes_hashed", "probation\":[3,0,0,0,0,0,0,9]", "dirty_log\":\"sim\"", "mode\":\"pksm\""}) {
    EXPECT_NE(j.find(k), std::string::npos) << k;
  }
  EXPECT_EQ(j.front(), '{');
  EXPECT_EQ(j.back(), '}');
}

}  // namespace
}  // namespace pksm
