// Runs the built pksm-sim binary (path in $PKSM_SIM, sample traces in
// $PKSM_SIM_TRACES, both set by meson): exit statuses 0, 1 and 2, standard
// input, --json's last line, and the sample traces end to end.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "json_check.h"

extern char** environ;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    ADD_FAILURE() << "$" << name << " is not set (run this test through meson test)";
    return "";
  }
  return v;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Result {
  int status = -1;
  std::string out;
  std::string err;
};

// A scratch directory removed at the end of the test.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pksm-sim-cli-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& f : files_) unlink(f.c_str());
    rmdir(dir_.c_str());
  }
  std::string File(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    files_.push_back(path);
    return path;
  }

  // Runs pksm-sim with `args`, standard input from `stdin_text`.
  Result Sim(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    const std::string in = File("stdin", stdin_text);
    const std::string out = dir_ + "/stdout", err = dir_ + "/stderr";
    files_.push_back(out);
    files_.push_back(err);
    const std::string bin = Env("PKSM_SIM");
    std::vector<std::string> argv_s = {bin};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = 0;
    Result r;
    const int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      ADD_FAILURE() << "cannot run " << bin << ": " << rc;
      return r;
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

const char kSmallTrace[] =
    "# two identical guests\n"
    "region 0 64\nregion 1 64\n"
    "fill 0 0 48 unique 11\nfill 1 0 48 unique 11\n"
    "fill 0 48 16 zero\nfill 1 48 16 zero\n"
    "scan 4\nverify\n";

TEST_F(CliTest, FileTraceExitsZeroWithResultTable) {
  Result r = Sim({File("t.trace", kSmallTrace)});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("pksm-sim result"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pages merged              80"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("pass 4: merged 80 pages"), std::string::npos) << r.err;  // progress
}

TEST_F(CliTest, StdinAndJsonLastLine) {
  Result r = Sim({"--json", "--quiet", "-"}, std::string(kSmallTrace) + "stats\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");  // --quiet
  const std::string last = LastLine(r.out);
  pksm::sim::testing::JsonCheck j(last);
  ASSERT_TRUE(j.ok()) << last;
  EXPECT_EQ(j.Number("pages_sharing"), 48);
  EXPECT_EQ(j.Number("ksm_zero_pages"), 32);
  // The `stats` line of the trace comes first and says the same.
  EXPECT_NE(r.out.find('\n'), r.out.size() - 1);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), last);
}

TEST_F(CliTest, CpuOptionReportsScanTime) {
  Result r = Sim({"--json", "--cpu", File("t.trace", kSmallTrace)});
  ASSERT_EQ(r.status, 0) << r.err;
  pksm::sim::testing::JsonCheck j(LastLine(r.out));
  ASSERT_TRUE(j.ok());
  EXPECT_GE(j.Number("scan_cpu_ns"), 0);
  EXPECT_TRUE(j.Has("scan_cpu_ns_per_page"));
}

TEST_F(CliTest, SameTraceTwiceSameJson) {
  const std::string t = File("t.trace", kSmallTrace);
  Result a = Sim({"--json", "--delay", "2", t}), b = Sim({"--json", "--delay", "2", t});
  ASSERT_EQ(a.status, 0);
  EXPECT_EQ(a.out, b.out);
}

TEST_F(CliTest, MalformedLineExitsTwo) {
  Result r = Sim({File("bad.trace", "region 0 4\n\nfill 0 0 4 purple 3\n")});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("pksm-sim: trace:3: unknown content kind 'purple'"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");  // no result table after an error
}

TEST_F(CliTest, BadOptionsExitTwo) {
  Result r = Sim({"--delay", "never", File("t.trace", kSmallTrace)});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("never"), std::string::npos) << r.err;
  Result r2 = Sim({"--mode", "linux", "-"});
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(r2.err.find("--mode: invalid value 'linux'"), std::string::npos) << r2.err;
  Result r3 = Sim({});
  EXPECT_EQ(r3.status, 2);
  EXPECT_NE(r3.err.find("no trace given"), std::string::npos);
  EXPECT_NE(r3.err.find("usage:"), std::string::npos);
  Result r4 = Sim({dir_ + "/missing.trace"});
  EXPECT_EQ(r4.status, 2);
  EXPECT_NE(r4.err.find("cannot open trace"), std::string::npos) << r4.err;
}

TEST_F(CliTest, FailedVerifyExitsOne) {
  Result r = Sim({"--test-corrupt", "1:7", File("t.trace", kSmallTrace)});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("trace:9: verify failed: 1 of 128 pages"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("region 1 page 7: expected content(11, 7)"), std::string::npos) << r.err;
}

TEST_F(CliTest, HelpExitsZero) {
  Result r = Sim({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("usage: pksm-sim"), std::string::npos);
}

// The sample traces shipped in tools/sim/traces run clean in both modes.
TEST_F(CliTest, SampleTracesRunAndVerify) {
  const std::string dir = Env("PKSM_SIM_TRACES");
  for (const char* name : {"identical-guests.trace", "churn.trace", "tour.trace"}) {
    for (const char* mode : {"pksm", "ksm"}) {
      Result r = Sim({"--json", "--mode", mode, dir + "/" + name});
      ASSERT_EQ(r.status, 0) << name << " " << mode << ": " << r.err;
      pksm::sim::testing::JsonCheck j(LastLine(r.out));
      ASSERT_TRUE(j.ok()) << LastLine(r.out);
      EXPECT_GT(j.Number("full_scans"), 0) << name << " " << mode;
      EXPECT_NE(r.err.find("verify: all"), std::string::npos) << name;
      const std::string n = name;
      if (n == "identical-guests.trace") {
        // 4 guests x 1536 identical pages: 3 x 1536 saved; 4 x 128 pages of
        // one content in 2 dups (max_page_sharing 256): 510 saved; then 16
        // of them written: 4608 + 510 - 16. And 4 x 1024 zero pages.
        EXPECT_EQ(j.Number("pages_sharing"), 5102) << mode;
        EXPECT_EQ(j.Number("ksm_zero_pages"), 4096) << mode;
        EXPECT_EQ(j.Number("cow_breaks"), 16) << mode;
      } else if (n == "churn.trace") {
        EXPECT_GT(j.Number("pages_sharing"), 0) << mode;
      } else {  // the tour ends with run 2: everything unmerged
        EXPECT_EQ(j.Number("pages_sharing"), 0) << mode;
        EXPECT_GT(j.Number("unmerges"), 0) << mode;
      }
    }
  }
}

}  // namespace
