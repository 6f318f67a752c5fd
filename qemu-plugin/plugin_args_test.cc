#include "qemu-plugin/plugin_args.h"

#include <gtest/gtest.h>

#include <vector>

namespace pksm::plugin {
namespace {

std::string Parse(std::vector<const char*> args, PluginConfig* cfg) {
  return ParsePluginArgs(static_cast<int>(args.size()), args.data(), cfg);
}

TEST(PluginArgsTest, NoArgumentsGiveDefaults) {
  PluginConfig cfg;
  cfg.params.delay = 77;  // must be overwritten
  ASSERT_EQ(Parse({}, &cfg), "");
  EXPECT_EQ(cfg.params.run, 1u);
  EXPECT_EQ(cfg.params.delay, Params().delay);
  EXPECT_EQ(cfg.params.pages_to_scan, Params().pages_to_scan);
  EXPECT_EQ(cfg.dirty_log, DirtyLogChoice::kAuto);
  EXPECT_EQ(cfg.log_file, "");
}

TEST(PluginArgsTest, EveryKeyIsApplied) {
  PluginConfig cfg;
  ASSERT_EQ(Parse({"run=0", "pages-to-scan=500", "sleep-ms=7", "delay=3", "use-zero-pages=off",
                   "max-page-sharing=10", "new-ratio=70", "mode=ksm", "dirty-log=uffd", "log=/tmp/x.log", "max-vmas=300"},
                  &cfg),
            "");
  EXPECT_EQ(cfg.params.run, 0u);
  EXPECT_EQ(cfg.params.pages_to_scan, 500u);
  EXPECT_EQ(cfg.params.sleep_millisecs, 7u);
  EXPECT_EQ(cfg.params.delay, 3u);
  EXPECT_FALSE(cfg.params.use_zero_pages);
  EXPECT_EQ(cfg.params.max_page_sharing, 10u);
  EXPECT_EQ(cfg.params.new_ratio, 70u);
  EXPECT_EQ(cfg.params.mode, Mode::kKsm);
  EXPECT_EQ(cfg.dirty_log, DirtyLogChoice::kUffd);
  EXPECT_EQ(cfg.log_file, "/tmp/x.log");
  EXPECT_EQ(cfg.max_vmas, 300u);
}

TEST(PluginArgsTest, UnderscoresAreAccepted) {
  PluginConfig cfg;
  ASSERT_EQ(Parse({"pages_to_scan=42", "dirty_log=checksum"}, &cfg), "");
  EXPECT_EQ(cfg.params.pages_to_scan, 42u);
  EXPECT_EQ(cfg.dirty_log, DirtyLogChoice::kChecksum);
  {
    PluginConfig a;
    ASSERT_EQ(Parse({"dirty-log=uffd-async"}, &a), "");
    EXPECT_EQ(a.dirty_log, DirtyLogChoice::kUffdAsync);
    EXPECT_STREQ(ToString(a.dirty_log), "uffd-async");
  }
}

TEST(PluginArgsTest, DeprecatedArgFormArrivesAsOn) {
  // QEMU turns the deprecated "arg=use-zero-pages" into "use-zero-pages=on".
  PluginConfig cfg;
  ASSERT_EQ(Parse({"use-zero-pages=off"}, &cfg), "");
  ASSERT_EQ(Parse({"use-zero-pages=on"}, &cfg), "");
  EXPECT_TRUE(cfg.params.use_zero_pages);
}

TEST(PluginArgsTest, UnknownKeyIsNamed) {
  PluginConfig cfg;
  std::string err = Parse({"delay=1", "pages-to-scna=5"}, &cfg);
  EXPECT_NE(err.find("pages-to-scna"), std::string::npos) << err;
  EXPECT_NE(err.find("unknown key"), std::string::npos) << err;
}

TEST(PluginArgsTest, BadValuesAreNamed) {
  PluginConfig cfg;
  struct Case {
    const char* arg;
    const char* must_contain;
  } cases[] = {
      {"delay=abc", "abc"},       {"delay=1001", "1001"},        {"pages-to-scan=0", "pages-to-scan=0"},
      {"sleep-ms=-1", "-1"},      {"max-page-sharing=1", "max-page-sharing=1"},
      {"new-ratio=100", "100"},   {"run=2", "run"},              {"run=yes", "yes"},
      {"use-zero-pages=2", "use-zero-pages"}, {"dirty-log=kvm", "kvm"}, {"mode=fast", "fast"},
      {"log=", "log"},           {"max-vmas=0", "max-vmas"},   {"max-vmas=x", "'x'"},
  };
  for (const Case& c : cases) {
    std::string err = Parse({c.arg}, &cfg);
    EXPECT_FALSE(err.empty()) << c.arg;
    EXPECT_NE(err.find(c.must_contain), std::string::npos) << c.arg << " -> " << err;
    EXPECT_NE(err.find(c.arg), std::string::npos) << "message must quote the argument: " << err;
  }
}

TEST(PluginArgsTest, MalformedArgumentIsRefused) {
  PluginConfig cfg;
  EXPECT_NE(Parse({"delay"}, &cfg).find("expected KEY=VALUE"), std::string::npos);
  EXPECT_NE(Parse({"=3"}, &cfg).find("expected KEY=VALUE"), std::string::npos);
}

TEST(PluginArgsTest, DuplicateKeyIsRefused) {
  PluginConfig cfg;
  std::string err = Parse({"delay=1", "delay=2"}, &cfg);
  EXPECT_NE(err.find("given twice"), std::string::npos) << err;
  err = Parse({"sleep-ms=1", "sleep_ms=2"}, &cfg);
  EXPECT_NE(err.find("given twice"), std::string::npos) << err;
}

TEST(PluginArgsTest, ErrorLeavesOutputUntouched) {
  PluginConfig cfg;
  cfg.params.delay = 9;
  EXPECT_FALSE(Parse({"delay=3", "bogus=1"}, &cfg).empty());
  EXPECT_EQ(cfg.params.delay, 9u);
}

}  // namespace
}  // namespace pksm::plugin
