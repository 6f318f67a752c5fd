// Parser tests: every command, comments and blank lines, and every error a
// single line can carry (the message must name the bad token).
#include "trace.h"

#include <gtest/gtest.h>

namespace pksm::sim {
namespace {

using Op = Command::Op;

Command Parse(std::string_view line) {
  Command c;
  std::string err = ParseLine(line, &c);
  EXPECT_EQ(err, "") << "line: " << line;
  return c;
}

std::string Error(std::string_view line) {
  Command c;
  return ParseLine(line, &c);
}

TEST(TraceParse, BlankAndCommentLinesAreNothing) {
  EXPECT_EQ(Parse("").op, Op::kNone);
  EXPECT_EQ(Parse("   \t ").op, Op::kNone);
  EXPECT_EQ(Parse("# a comment").op, Op::kNone);
  EXPECT_EQ(Parse("   # indented comment").op, Op::kNone);
  EXPECT_EQ(Parse("\r").op, Op::kNone);
}

TEST(TraceParse, Region) {
  Command c = Parse("region 3 1024");
  EXPECT_EQ(c.op, Op::kRegion);
  EXPECT_EQ(c.region, 3u);
  EXPECT_EQ(c.count, 1024u);
}

TEST(TraceParse, TrailingCommentAndExtraSpaces) {
  Command c = Parse("  region\t1   16   # the second guest");
  EXPECT_EQ(c.op, Op::kRegion);
  EXPECT_EQ(c.region, 1u);
  EXPECT_EQ(c.count, 16u);
}

TEST(TraceParse, FillKinds) {
  Command z = Parse("fill 0 4 8 zero");
  EXPECT_EQ(z.op, Op::kFill);
  EXPECT_EQ(z.region, 0u);
  EXPECT_EQ(z.first, 4u);
  EXPECT_EQ(z.count, 8u);
  EXPECT_EQ(z.kind, ContentKind::kZero);

  Command s = Parse("fill 1 0 2 same 77");
  EXPECT_EQ(s.kind, ContentKind::kSame);
  EXPECT_EQ(s.seed, 77u);

  Command u = Parse("fill 2 5 1 unique 18446744073709551615");
  EXPECT_EQ(u.kind, ContentKind::kUnique);
  EXPECT_EQ(u.seed, 18446744073709551615u);
  EXPECT_EQ(u.region, 2u);
  EXPECT_EQ(u.first, 5u);
}

TEST(TraceParse, WriteDiscard) {
  Command w = Parse("write 1 9 42");
  EXPECT_EQ(w.op, Op::kWrite);
  EXPECT_EQ(w.region, 1u);
  EXPECT_EQ(w.first, 9u);
  EXPECT_EQ(w.count, 1u);
  EXPECT_EQ(w.seed, 42u);

  Command d = Parse("discard 0 10 20");
  EXPECT_EQ(d.op, Op::kDiscard);
  EXPECT_EQ(d.first, 10u);
  EXPECT_EQ(d.count, 20u);
}

TEST(TraceParse, SetAcceptsEveryListedKeyAndDashes) {
  for (const char* key :
       {"run", "delay", "pages_to_scan", "max_page_sharing", "use_zero_pages", "new_ratio"}) {
    Command c = Parse(std::string("set ") + key + " 1");
    EXPECT_EQ(c.op, Op::kSet);
    EXPECT_EQ(c.key, key);
    EXPECT_EQ(c.value, "1");
  }
  EXPECT_EQ(Parse("set pages-to-scan 5").key, "pages_to_scan");
}

TEST(TraceParse, ScanStepStatsVerify) {
  Command s = Parse("scan 4");
  EXPECT_EQ(s.op, Op::kScan);
  EXPECT_EQ(s.count, 4u);
  Command st = Parse("step 250");
  EXPECT_EQ(st.op, Op::kStep);
  EXPECT_EQ(st.count, 250u);
  EXPECT_EQ(Parse("stats").op, Op::kStats);
  EXPECT_EQ(Parse("verify # all of it").op, Op::kVerify);
}

// Each malformed line: the message must contain every fragment listed.
struct BadLine {
  const char* line;
  std::vector<const char*> fragments;
};

TEST(TraceParse, MalformedLinesNameTheProblem) {
  const BadLine cases[] = {
      {"regoin 0 16", {"unknown command", "'regoin'"}},
      {"region 0", {"'region' takes 2 arguments", "got 1"}},
      {"region 0 16 7", {"'region' takes 2 arguments", "got 3"}},
      {"region x 16", {"'x'", "not an unsigned integer", "R of 'region'"}},
      {"region 0 1k", {"'1k'", "not an unsigned integer", "PAGES"}},
      {"region 0 -5", {"'-5'", "not an unsigned integer"}},
      {"region 0 0", {"PAGES '0'", "out of range"}},
      {"region 70000 1", {"region id '70000'", "out of range"}},
      {"region 0 99999999999", {"PAGES '99999999999'", "out of range"}},
      {"region 0 99999999999999999999999", {"'99999999999999999999999'", "too large"}},
      {"fill 0 0 4", {"'fill' takes 4 or 5 arguments", "got 3"}},
      {"fill 0 0 4 purple 1", {"unknown content kind 'purple'"}},
      {"fill 0 0 4 zero 1", {"takes no SEED", "'1'"}},
      {"fill 0 0 4 same", {"'fill ... same' needs a SEED"}},
      {"fill 0 0 4 unique", {"'fill ... unique' needs a SEED"}},
      {"fill 0 0 4 unique s1", {"'s1'", "SEED of 'fill'"}},
      {"fill 0 zz 4 zero", {"'zz'", "FIRST of 'fill'"}},
      {"fill 0 0 0 zero", {"COUNT '0'", "at least 1"}},
      {"write 0 1", {"'write' takes 3 arguments", "got 2"}},
      {"write 0 p 1", {"'p'", "PAGE of 'write'"}},
      {"discard 0 1", {"'discard' takes 3 arguments"}},
      {"discard 0 1 0", {"COUNT '0'", "at least 1"}},
      {"set delay", {"'set' takes 2 arguments"}},
      {"set mode ksm", {"unknown parameter 'mode'", "delay"}},
      {"set frobnicate 1", {"unknown parameter 'frobnicate'"}},
      {"scan", {"'scan' takes 1 argument", "got 0"}},
      {"scan 1.5", {"'1.5'", "PASSES of 'scan'"}},
      {"scan 2000000", {"PASSES '2000000'", "out of range"}},
      {"step -1", {"'-1'", "PAGES of 'step'"}},
      {"stats now", {"'stats' takes no arguments", "got 1"}},
      {"verify 1 2", {"'verify' takes no arguments", "got 2"}},
  };
  for (const BadLine& b : cases) {
    const std::string err = Error(b.line);
    ASSERT_NE(err, "") << "accepted: " << b.line;
    for (const char* f : b.fragments) {
      EXPECT_NE(err.find(f), std::string::npos)
          << "line '" << b.line << "' gave '" << err << "', missing '" << f << "'";
    }
  }
}

}  // namespace
}  // namespace pksm::sim
