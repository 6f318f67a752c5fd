// Driver tests: every trace command run in-process against the real engine
// over SimMemory, every semantic error (with its line number), verify
// catching a page corrupted behind the driver's back, determinism.
#include "driver.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>
#include <sstream>

#include "json_check.h"

namespace pksm::sim {
namespace {

struct TraceRun {
  int status = -1;
  std::string out;
  std::string err;
};

SimConfig Config(uint32_t delay = 1) {
  SimConfig c;
  c.params.delay = delay;
  c.params.pages_to_scan = 64;
  c.progress = false;
  return c;
}

TraceRun RunText(const std::string& trace, const SimConfig& config = Config()) {
  std::ostringstream out, log, err;
  Driver d(config, out, log);
  std::istringstream in(trace);
  TraceRun r;
  r.status = d.RunTrace(in, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// A driver the test keeps, fed line by line.
class DriverTest : public ::testing::Test {
 protected:
  explicit DriverTest() : driver_(Config(), out_, log_) {}

  // Runs `trace`; expects it to succeed.
  void Do(const std::string& trace) {
    std::istringstream in(trace);
    std::ostringstream err;
    ASSERT_EQ(driver_.RunTrace(in, err), 0) << err.str();
  }
  Stats S() { return driver_.GetStats(); }

  std::ostringstream out_, log_;
  Driver driver_;
};

TEST_F(DriverTest, RegionPagesReadZeroAndAreUntracked) {
  Do("region 0 8\nregion 5 4\nverify\n");
  EXPECT_EQ(driver_.memory().RegionPages(0), 8u);
  EXPECT_EQ(driver_.memory().RegionPages(5), 4u);
  EXPECT_EQ(S().rmap_items, 0u);
  EXPECT_EQ(driver_.memory().State(PageRef{0, 3}), SimMemory::PageState::kUntouched);
  EXPECT_EQ(driver_.verifies_passed(), 1u);
}

TEST_F(DriverTest, FillUniqueGivesContentOfSeedAndRegionIndex) {
  Do("region 0 8\nfill 0 2 3 unique 9\n");
  std::array<uint8_t, kPageSize> want;
  for (size_t p = 2; p < 5; ++p) {
    FillContent(want.data(), 9, p);
    EXPECT_EQ(std::memcmp(driver_.memory().Read(PageRef{0, p}), want.data(), kPageSize), 0) << p;
  }
  EXPECT_EQ(driver_.memory().State(PageRef{0, 1}), SimMemory::PageState::kUntouched);
  EXPECT_EQ(S().rmap_items, 3u);
}

TEST_F(DriverTest, FillSameAndZero) {
  Do("region 0 10\nfill 0 0 6 same 4\nfill 0 6 4 zero\n");
  std::array<uint8_t, kPageSize> want;
  FillContent(want.data(), 4);
  EXPECT_EQ(std::memcmp(driver_.memory().Read(PageRef{0, 5}), want.data(), kPageSize), 0);
  const std::array<uint8_t, kPageSize> zero{};
  EXPECT_EQ(std::memcmp(driver_.memory().Read(PageRef{0, 7}), zero.data(), kPageSize), 0);
  EXPECT_EQ(driver_.memory().State(PageRef{0, 7}), SimMemory::PageState::kPrivate);
  EXPECT_EQ(S().rmap_items, 10u);
  // Settled: six identical pages share one stable page, four go to zero.
  Do("scan 4\nverify\n");
  EXPECT_EQ(S().pages_shared, 1u);
  EXPECT_EQ(S().pages_sharing, 5u);
  EXPECT_EQ(S().ksm_zero_pages, 4u);
}

TEST_F(DriverTest, IdenticalGuestsMergePageForPage) {
  Do("region 0 32\nregion 1 32\nfill 0 0 32 unique 7\nfill 1 0 32 unique 7\nscan 4\nverify\n");
  EXPECT_EQ(S().pages_shared, 32u);
  EXPECT_EQ(S().pages_sharing, 32u);
  EXPECT_EQ(driver_.memory().State(PageRef{1, 31}), SimMemory::PageState::kStable);
  EXPECT_GE(S().full_scans, 4u);
}

TEST_F(DriverTest, WriteBreaksOneMergedPageAndReadsTheNewContent) {
  Do("region 0 4\nregion 1 4\nfill 0 0 4 unique 1\nfill 1 0 4 unique 1\nscan 4\n");
  ASSERT_EQ(S().pages_sharing, 4u);
  Do("write 1 2 99\nverify\n");
  EXPECT_EQ(driver_.memory().State(PageRef{1, 2}), SimMemory::PageState::kPrivate);
  Do("scan 1\nverify\n");  // the engine learns of the break from the dirty log
  EXPECT_EQ(S().cow_breaks, 1u);
  EXPECT_EQ(S().pages_sharing, 3u);
  EXPECT_EQ(driver_.memory().State(PageRef{1, 2}), SimMemory::PageState::kPrivate);
  EXPECT_EQ(driver_.memory().State(PageRef{0, 2}), SimMemory::PageState::kStable);
  std::array<uint8_t, kPageSize> want;
  FillContent(want.data(), 99);
  EXPECT_EQ(std::memcmp(driver_.memory().Read(PageRef{1, 2}), want.data(), kPageSize), 0);
}

TEST_F(DriverTest, WriteTracksAnUntouchedPage) {
  Do("region 0 4\nwrite 0 3 5\n");
  EXPECT_EQ(S().rmap_items, 1u);
  Do("verify\n");
}

TEST_F(DriverTest, DiscardReadsZeroAndReleasesRecords) {
  Do("region 0 8\nfill 0 0 8 same 3\nscan 3\n");
  ASSERT_EQ(S().rmap_items, 8u);
  Do("discard 0 2 4\nverify\n");
  for (size_t p = 2; p < 6; ++p) {
    EXPECT_EQ(driver_.memory().State(PageRef{0, p}), SimMemory::PageState::kUntouched) << p;
  }
  Do("scan 1\n");  // the scanner frees the del list
  EXPECT_EQ(S().rmap_items, 4u);
  EXPECT_EQ(S().del_list, 0u);
  EXPECT_EQ(S().pages_sharing, 3u);
  Do("fill 0 2 1 same 3\nscan 3\nverify\n");  // tracked again by a later fill
  EXPECT_EQ(S().rmap_items, 5u);
  EXPECT_EQ(S().pages_sharing, 4u);
}

TEST_F(DriverTest, SetChangesEngineParameters) {
  Do("set delay 3\nset pages_to_scan 7\nset max_page_sharing 2\nset use_zero_pages 0\n"
     "set new_ratio 25\n");
  const Params& p = driver_.engine().params();
  EXPECT_EQ(p.delay, 3u);
  EXPECT_EQ(p.pages_to_scan, 7u);
  EXPECT_EQ(p.max_page_sharing, 2u);
  EXPECT_FALSE(p.use_zero_pages);
  EXPECT_EQ(p.new_ratio, 25u);
}

TEST_F(DriverTest, RunZeroScanDoesNothing) {
  Do("region 0 4\nfill 0 0 4 same 1\nset run 0\nscan 5\nstep 100\n");
  EXPECT_EQ(S().full_scans, 0u);
  EXPECT_EQ(S().pages_scanned, 0u);
  EXPECT_EQ(S().pages_sharing, 0u);
}

TEST_F(DriverTest, RunTwoUnmergesEverythingAndStops) {
  Do("region 0 16\nregion 1 16\nfill 0 0 12 unique 2\nfill 0 12 4 zero\n"
     "fill 1 0 12 unique 2\nfill 1 12 4 zero\nscan 4\n");
  ASSERT_EQ(S().pages_sharing, 12u);
  ASSERT_EQ(S().ksm_zero_pages, 8u);
  Do("set run 2\nscan 1\nverify\n");
  EXPECT_EQ(driver_.engine().params().run, 0u);
  EXPECT_EQ(S().pages_sharing, 0u);
  EXPECT_EQ(S().pages_shared, 0u);
  EXPECT_EQ(S().ksm_zero_pages, 0u);
  for (RegionId r : {0u, 1u}) {
    for (size_t p = 0; p < 16; ++p) {
      const SimMemory::PageState st = driver_.memory().State(PageRef{r, p});
      EXPECT_NE(st, SimMemory::PageState::kStable) << p;
      EXPECT_NE(st, SimMemory::PageState::kZero) << p;
    }
  }
}

TEST_F(DriverTest, StepExaminesAtMostItsBudget) {
  Do("region 0 100\nfill 0 0 100 unique 1\nstep 10\n");
  const uint64_t after_one = S().pages_scanned;
  EXPECT_GT(after_one, 0u);
  EXPECT_LE(after_one, 10u);
  Do("step 25\n");
  EXPECT_GT(S().pages_scanned, after_one);
  EXPECT_LE(S().pages_scanned, after_one + 25);
}

TEST_F(DriverTest, StatsPrintsOneJsonLine) {
  Do("region 0 4\nfill 0 0 4 zero\nscan 2\nstats\n");
  const std::string out = out_.str();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  testing::JsonCheck j(out);
  ASSERT_TRUE(j.ok()) << out;
  EXPECT_EQ(j.Number("ksm_zero_pages"), 4);
  EXPECT_EQ(j.Number("rmap_items"), 4);
  EXPECT_TRUE(j.Has("pages_sharing"));
  EXPECT_FALSE(j.Has("scan_cpu_ns"));  // only with measure_cpu: keeps stats deterministic
}

TEST(Driver, CpuMeasurementAddsFieldsToJson) {
  SimConfig c = Config();
  c.measure_cpu = true;
  TraceRun r = RunText("region 0 64\nfill 0 0 64 unique 1\nscan 3\nstats\n", c);
  ASSERT_EQ(r.status, 0) << r.err;
  testing::JsonCheck j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_GE(j.Number("scan_cpu_ns"), 0);
  EXPECT_GE(j.Number("scan_cpu_ns_per_page"), 0);
}

TEST(Driver, ProgressLinePerPass) {
  SimConfig c = Config();
  c.progress = true;
  std::ostringstream out, log, err;
  Driver d(c, out, log);
  std::istringstream in("region 0 8\nfill 0 0 8 same 1\nscan 3\n");
  ASSERT_EQ(d.RunTrace(in, err), 0);
  const std::string progress = log.str();
  EXPECT_NE(progress.find("pass 1: merged"), std::string::npos) << progress;
  EXPECT_NE(progress.find("pass 3: merged"), std::string::npos) << progress;
  EXPECT_EQ(out.str(), "");  // progress never goes to the output stream
}

TEST(Driver, VerifyCatchesAPageCorruptedBehindItsBack) {
  std::ostringstream out, log, err;
  Driver d(Config(), out, log);
  std::istringstream setup("region 0 8\nregion 1 8\nfill 0 0 8 unique 3\nfill 1 0 8 unique 3\nscan 3\n");
  ASSERT_EQ(d.RunTrace(setup, err), 0) << err.str();
  ASSERT_EQ(d.GetStats().pages_sharing, 8u);
  // Corrupt a merged page as a buggy merger would: the guest reads garbage.
  std::array<uint8_t, kPageSize> junk;
  FillContent(junk.data(), 12345);
  d.memory().Write(PageRef{1, 5}, junk.data());
  std::istringstream check("# check it\nverify\n");
  EXPECT_EQ(d.RunTrace(check, err), 1);
  const std::string e = err.str();
  EXPECT_NE(e.find("trace:2: verify failed: 1 of 16 pages"), std::string::npos) << e;
  EXPECT_NE(e.find("region 1 page 5: expected content(3, 5)"), std::string::npos) << e;
  ASSERT_EQ(d.mismatches().size(), 1u);
  EXPECT_EQ(d.mismatches()[0].region, 1u);
  EXPECT_EQ(d.mismatches()[0].page, 5u);
}

TEST(Driver, VerifyCatchesAZeroPageThatIsNotZero) {
  std::ostringstream out, log, err;
  Driver d(Config(), out, log);
  std::istringstream setup("region 0 4\nfill 0 0 2 zero\n");
  ASSERT_EQ(d.RunTrace(setup, err), 0);
  d.memory().WriteByte(PageRef{0, 3}, 100, 7);  // an untouched page that is not zero
  EXPECT_EQ(d.VerifyAll(), 1u);
  ASSERT_EQ(d.mismatches().size(), 1u);
  EXPECT_EQ(d.mismatches()[0].page, 3u);
  EXPECT_NE(d.mismatches()[0].found.find("byte 100"), std::string::npos)
      << d.mismatches()[0].found;
}

TEST(Driver, InjectedCorruptionOptionFailsVerify) {
  SimConfig c = Config();
  c.corrupt_before_verify = true;
  c.corrupt_page = PageRef{0, 1};
  TraceRun r = RunText("region 0 2\nfill 0 0 2 same 1\nscan 2\nverify\n", c);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("region 0 page 1"), std::string::npos) << r.err;
}

// Errors that need the driver's state: message names line and problem.
TEST(Driver, SemanticErrorsNameLineAndProblem) {
  const struct {
    const char* trace;
    const char* want;
  } cases[] = {
      {"fill 0 0 1 zero\n", "trace:1: region 0 is not declared"},
      {"region 0 4\n\n# comment\nwrite 2 0 1\n", "trace:4: region 2 is not declared"},
      {"region 0 4\ndiscard 1 0 1\n", "trace:2: region 1 is not declared"},
      {"region 0 4\nregion 0 8\n", "trace:2: region 0 declared twice (first at line 1)"},
      {"region 0 4\nfill 0 2 3 zero\n", "trace:2: pages 2..4 are past the end of region 0 (4 pages"},
      {"region 0 4\nwrite 0 4 1\n", "trace:2: pages 4..4 are past the end of region 0"},
      {"region 0 4\ndiscard 0 9 1\n", "trace:2: pages 9..9 are past the end of region 0"},
      {"region 0 4\nfill 0 18446744073709551615 2 zero\n", "trace:2: pages 18446744073709551615"},
      {"set delay abc\n", "trace:1: set: "},
      {"set run 7\n", "trace:1: set"},
      {"set max_page_sharing 1\n", "trace:1: set"},
      {"region 0 4\nstats\nbogus 1\n", "trace:3: unknown command 'bogus'"},
      {"region 0 4\nfill 0 0 4 rainbow 1\n", "trace:2: unknown content kind 'rainbow'"},
      {"scan x\n", "trace:1: 'x' is not an unsigned integer (PASSES of 'scan')"},
  };
  for (const auto& c : cases) {
    TraceRun r = RunText(c.trace);
    EXPECT_EQ(r.status, 2) << c.trace;
    EXPECT_EQ(r.err.rfind("pksm-sim: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.want), std::string::npos)
        << "trace:\n" << c.trace << "error: " << r.err << "wanted: " << c.want;
  }
}

TEST(Driver, SetErrorsNameTheBadValue) {
  TraceRun r = RunText("set delay abc\n");
  EXPECT_NE(r.err.find("abc"), std::string::npos) << r.err;
  TraceRun r2 = RunText("set use_zero_pages 5\n");
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(r2.err.find("'5'"), std::string::npos) << r2.err;
}

TEST(Driver, MalformedLineStopsTheTrace) {
  std::ostringstream out, log, err;
  Driver d(Config(), out, log);
  std::istringstream in("region 0 4\nfill 0 0 4 same 1\nnope\nstats\n");
  EXPECT_EQ(d.RunTrace(in, err), 2);
  EXPECT_EQ(out.str(), "");  // the stats line after the error never ran
}

std::string RandomTrace(uint32_t seed) {
  std::mt19937 rng(seed);
  std::ostringstream t;
  const int regions = 3, pages = 48;
  for (int r = 0; r < regions; ++r) t << "region " << r << " " << pages << "\n";
  for (int r = 0; r < regions; ++r) {
    t << "fill " << r << " 0 32 unique 5\n";
    t << "fill " << r << " 32 8 zero\n";
  }
  for (int round = 0; round < 12; ++round) {
    const int ops = static_cast<int>(rng() % 12);
    for (int i = 0; i < ops; ++i) {
      const int r = static_cast<int>(rng() % regions), p = static_cast<int>(rng() % pages);
      switch (rng() % 5) {
        case 0: t << "write " << r << " " << p << " " << rng() % 4 << "\n"; break;
        case 1: t << "discard " << r << " " << p << " 1\n"; break;
        case 2: t << "fill " << r << " " << p << " 1 zero\n"; break;
        case 3: t << "fill " << r << " " << p << " 1 unique 5\n"; break;
        default: t << "step " << 1 + rng() % 40 << "\n"; break;
      }
    }
    if (round == 6) t << "set delay 0\nset max_page_sharing 2\n";
    if (round == 9) t << "set run 2\nscan 1\nverify\nset run 1\n";
    t << "scan " << 1 + rng() % 2 << "\nverify\nstats\n";
  }
  return t.str();
}

TEST(Driver, RandomTracesAlwaysVerify) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    TraceRun r = RunText(RandomTrace(seed));
    EXPECT_EQ(r.status, 0) << "seed " << seed << ": " << r.err;
  }
}

TEST(Driver, SameTraceSameStatistics) {
  const std::string trace = RandomTrace(77);
  TraceRun a = RunText(trace), b = RunText(trace);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);  // every stats line identical
  SimConfig ksm = Config();
  ksm.params.mode = Mode::kKsm;
  ksm.use_dirty_log = false;
  TraceRun c = RunText(trace, ksm), d = RunText(trace, ksm);
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_EQ(c.out, d.out);
}

TEST(Driver, KsmModeMergesIdenticalGuestsToo) {
  SimConfig ksm = Config(0);
  ksm.params.mode = Mode::kKsm;
  ksm.use_dirty_log = false;
  std::ostringstream out, log, err;
  Driver d(ksm, out, log);
  std::istringstream in("region 0 16\nregion 1 16\nfill 0 0 16 unique 4\nfill 1 0 16 unique 4\n"
                        "scan 5\nverify\n");
  ASSERT_EQ(d.RunTrace(in, err), 0) << err.str();
  EXPECT_EQ(d.GetStats().pages_sharing, 16u);
  EXPECT_EQ(d.GetStats().mode, "ksm");
}

TEST(Driver, ChecksumFallbackWithoutDirtyLog) {
  SimConfig c = Config();
  c.use_dirty_log = false;
  std::ostringstream out, log, err;
  Driver d(c, out, log);
  std::istringstream in("region 0 8\nregion 1 8\nfill 0 0 8 unique 4\nfill 1 0 8 unique 4\n"
                        "scan 4\nwrite 0 1 5\nscan 2\nverify\n");
  ASSERT_EQ(d.RunTrace(in, err), 0) << err.str();
  EXPECT_EQ(d.GetStats().dirty_log, "checksum");
  EXPECT_EQ(d.GetStats().pages_sharing, 7u);
  EXPECT_EQ(d.GetStats().cow_breaks, 1u);
  EXPECT_GT(d.GetStats().bytes_hashed, 16u * kPageSize);  // whole-page checksums
}

TEST(Driver, ResultTableNamesTheFigures) {
  std::ostringstream out, log, err;
  Driver d(Config(), out, log);
  std::istringstream in("region 0 4\nregion 1 4\nfill 0 0 4 unique 1\nfill 1 0 4 unique 1\n"
                        "scan 3\nverify\n");
  ASSERT_EQ(d.RunTrace(in, err), 0);
  std::ostringstream table;
  d.PrintResultTable(table);
  const std::string t = table.str();
  EXPECT_NE(t.find("pages merged              4"), std::string::npos) << t;
  EXPECT_NE(t.find("verify                    passed 1 time(s)"), std::string::npos) << t;
}

}  // namespace
}  // namespace pksm::sim
