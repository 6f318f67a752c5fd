// Command-line tests: every option accepted, every bad one rejected with a
// message naming it.
#include "options.h"

#include <gtest/gtest.h>

#include <vector>

namespace pksm::sim {
namespace {

std::string Parse(std::vector<const char*> args, Options* out) {
  args.insert(args.begin(), "pksm-sim");
  return ParseOptions(static_cast<int>(args.size()), args.data(), out);
}

TEST(SimOptions, Defaults) {
  Options o;
  ASSERT_EQ(Parse({"t.trace"}, &o), "");
  EXPECT_EQ(o.trace_path, "t.trace");
  EXPECT_EQ(o.config.params.mode, Mode::kPksm);
  EXPECT_TRUE(o.config.use_dirty_log);
  EXPECT_FALSE(o.json);
  EXPECT_FALSE(o.config.measure_cpu);
  EXPECT_TRUE(o.config.progress);
  EXPECT_FALSE(o.config.corrupt_before_verify);
}

TEST(SimOptions, EveryOption) {
  Options o;
  ASSERT_EQ(Parse({"--mode", "ksm", "--delay", "3", "--pages-to-scan=500", "--max-page-sharing",
                   "10", "--use-zero-pages", "0", "--new-ratio", "30", "--json", "--cpu",
                   "--quiet", "-"},
                  &o),
            "");
  EXPECT_EQ(o.trace_path, "-");
  EXPECT_EQ(o.config.params.mode, Mode::kKsm);
  EXPECT_FALSE(o.config.use_dirty_log);  // ksm judges volatility by checksum
  EXPECT_EQ(o.config.params.delay, 3u);
  EXPECT_EQ(o.config.params.pages_to_scan, 500u);
  EXPECT_EQ(o.config.params.max_page_sharing, 10u);
  EXPECT_FALSE(o.config.params.use_zero_pages);
  EXPECT_EQ(o.config.params.new_ratio, 30u);
  EXPECT_TRUE(o.json);
  EXPECT_TRUE(o.config.measure_cpu);
  EXPECT_FALSE(o.config.progress);
}

TEST(SimOptions, DirtyLogChoice) {
  Options o;
  ASSERT_EQ(Parse({"--dirty-log", "checksum", "x"}, &o), "");
  EXPECT_FALSE(o.config.use_dirty_log);
  ASSERT_EQ(Parse({"--mode=ksm", "--dirty-log=sim", "x"}, &o), "");
  EXPECT_TRUE(o.config.use_dirty_log);
}

TEST(SimOptions, TestCorrupt) {
  Options o;
  ASSERT_EQ(Parse({"--test-corrupt", "1:17", "x"}, &o), "");
  EXPECT_TRUE(o.config.corrupt_before_verify);
  EXPECT_EQ(o.config.corrupt_page.region, 1u);
  EXPECT_EQ(o.config.corrupt_page.index, 17u);
}

TEST(SimOptions, Help) {
  Options o;
  ASSERT_EQ(Parse({"--help"}, &o), "");
  EXPECT_TRUE(o.help);
  EXPECT_NE(Usage().find("--pages-to-scan"), std::string_view::npos);
}

TEST(SimOptions, BadOptionsNameTheProblem) {
  const struct {
    std::vector<const char*> args;
    const char* want;
  } cases[] = {
      {{}, "no trace given"},
      {{"a", "b"}, "more than one trace"},
      {{"--frob", "x"}, "unknown option '--frob'"},
      {{"-d", "x"}, "unknown option '-d'"},
      {{"--mode", "fast", "x"}, "--mode: invalid value 'fast'"},
      {{"x", "--delay"}, "--delay needs a value"},
      {{"--delay", "soon", "x"}, "soon"},
      {{"--pages-to-scan", "-4", "x"}, "-4"},
      {{"--max-page-sharing", "1", "x"}, "max_page_sharing"},
      {{"--use-zero-pages", "2", "x"}, "'2'"},
      {{"--new-ratio", "0", "x"}, "new_ratio"},
      {{"--dirty-log", "qemu", "x"}, "--dirty-log: invalid value 'qemu'"},
      {{"--json=1", "x"}, "--json takes no value"},
      {{"--test-corrupt", "5", "x"}, "--test-corrupt: invalid value '5'"},
  };
  for (const auto& c : cases) {
    Options o;
    const std::string err = Parse(c.args, &o);
    EXPECT_NE(err.find(c.want), std::string::npos) << "got '" << err << "' wanted '" << c.want
                                                   << "'";
  }
}

}  // namespace
}  // namespace pksm::sim
