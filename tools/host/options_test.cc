#include "options.h"

#include <gtest/gtest.h>

namespace pksm::host {
namespace {

std::string Parse(std::vector<std::string> args, HostOptions* o) { return ParseHostOptions(args, o); }

TEST(HostOptions, DefaultsAreTheIssueMix) {
  HostOptions o;
  ASSERT_EQ(Parse({}, &o), "");
  EXPECT_EQ(o.mix_zero, 25u);
  EXPECT_EQ(o.mix_dup, 50u);
  EXPECT_EQ(o.mix_unique, 25u);
  EXPECT_EQ(o.run_length, 1u);
  EXPECT_FALSE(o.compare_kernel_ksm);
}

TEST(HostOptions, ParsesEveryOption) {
  HostOptions o;
  ASSERT_EQ(Parse({"--size-mib", "16", "--mix=zero=10,dup=80,unique=10", "--dup-contents", "7", "--run-length",
                   "64", "--delay", "0", "--pages-to-scan", "500", "--sleep-ms=5", "--timeout", "2.5", "--writers",
                   "3", "--seconds", "1.5", "--hold", "0", "--compare-kernel-ksm", "--json", "--dirty-log",
                   "checksum", "--seed", "9"},
                  &o),
            "");
  EXPECT_EQ(o.size_mib, 16u);
  EXPECT_EQ(o.mix_zero, 10u);
  EXPECT_EQ(o.mix_dup, 80u);
  EXPECT_EQ(o.mix_unique, 10u);
  EXPECT_EQ(o.dup_contents, 7u);
  EXPECT_EQ(o.run_length, 64u);
  EXPECT_EQ(o.delay, 0u);
  EXPECT_EQ(o.pages_to_scan, 500u);
  EXPECT_EQ(o.sleep_ms, 5u);
  EXPECT_DOUBLE_EQ(o.timeout_sec, 2.5);
  EXPECT_EQ(o.writers, 3u);
  EXPECT_DOUBLE_EQ(o.writer_seconds, 1.5);
  EXPECT_TRUE(o.compare_kernel_ksm);
  EXPECT_TRUE(o.json);
  EXPECT_EQ(o.dirty_log, DirtyLogChoice::kChecksum);
  EXPECT_EQ(o.seed, 9u);
  ASSERT_EQ(Parse({"--dirty-log", "uffd-async"}, &o), "");
  EXPECT_EQ(o.dirty_log, DirtyLogChoice::kUffdAsync);
  EXPECT_STREQ(ToString(o.dirty_log), "uffd-async");
}

TEST(HostOptions, MixKeysMayBeOmittedButMustSumTo100) {
  HostOptions o;
  ASSERT_EQ(Parse({"--mix", "dup=100"}, &o), "");
  EXPECT_EQ(o.mix_dup, 100u);
  EXPECT_EQ(o.mix_zero, 0u);
  std::string e = Parse({"--mix", "zero=30,dup=30,unique=30"}, &o);
  EXPECT_NE(e.find("zero=30,dup=30,unique=30"), std::string::npos) << e;
  EXPECT_NE(e.find("sum to 90"), std::string::npos) << e;
}

// Every bad value is named in the message, with the option.
TEST(HostOptions, BadValuesAreNamed) {
  struct Case {
    std::vector<std::string> args;
    std::string must_mention;
  };
  const Case cases[] = {
      {{"--size-mib", "0"}, "'0' for --size-mib"},
      {{"--size-mib", "12abc"}, "'12abc' for --size-mib"},
      {{"--size-mib", "-5"}, "'-5' for --size-mib"},
      {{"--mix", "zero=50,dup=60"}, "sum to 110"},
      {{"--mix", "zero=50,dupe=50"}, "unknown kind 'dupe'"},
      {{"--mix", "zero=50,zero=50"}, "'zero' given twice"},
      {{"--mix", "zero=x,dup=100"}, "'x' for zero"},
      {{"--mix", "zero"}, "'zero' has no '='"},
      {{"--dup-contents", "0"}, "'0' for --dup-contents"},
      {{"--run-length", "zero"}, "'zero' for --run-length"},
      {{"--delay", "1001"}, "'1001' for --delay"},
      {{"--pages-to-scan", "0"}, "'0' for --pages-to-scan"},
      {{"--sleep-ms", "1.5"}, "'1.5' for --sleep-ms"},
      {{"--timeout", "0"}, "'0' for --timeout"},
      {{"--timeout", "abc"}, "'abc' for --timeout"},
      {{"--dirty-log", "soft-dirty"}, "'soft-dirty' for --dirty-log"},
      {{"--writers", "2"}, "--writers 2 needs --seconds"},
      {{"--seconds", "2"}, "--seconds needs --writers"},
      {{"--writers", "many", "--seconds", "1"}, "'many' for --writers"},
      {{"--hold", "-1"}, "'-1' for --hold"},
      {{"--nice", "20"}, "'20' for --nice"},
      {{"--nice", "nicest"}, "'nicest' for --nice"},
      {{"--frobnicate"}, "unknown option '--frobnicate'"},
      {{"--json=yes"}, "--json takes no value"},
      {{"--size-mib"}, "--size-mib needs a value"},
      {{"stray"}, "unexpected argument 'stray'"},
  };
  for (const Case& c : cases) {
    HostOptions o;
    std::string e = Parse(c.args, &o);
    EXPECT_NE(e.find(c.must_mention), std::string::npos) << "args[0]=" << c.args[0] << " error: " << e;
  }
}

TEST(HostOptions, Nice) {
  HostOptions o;
  ASSERT_EQ(Parse({"--nice", "-5"}, &o), "");
  EXPECT_EQ(o.nice, HostOptions::NiceChoice::kValue);
  EXPECT_EQ(o.nice_value, -5);
  ASSERT_EQ(Parse({"--nice=ksmd"}, &o), "");
  EXPECT_EQ(o.nice, HostOptions::NiceChoice::kKsmd);
}

TEST(HostOptions, KernelOnlyImpliesTheComparison) {
  HostOptions o;
  ASSERT_EQ(Parse({"--kernel-only"}, &o), "");
  EXPECT_TRUE(o.compare_kernel_ksm);
}

}  // namespace
}  // namespace pksm::host
