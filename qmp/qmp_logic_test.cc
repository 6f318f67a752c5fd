#include "qmp/qmp_logic.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace pksm::qmp {
namespace {

QmpValue Args(std::vector<std::pair<std::string, QmpValue>> members) {
  QmpValue v = QmpValue::Dict();
  for (auto& [k, x] : members) v.Put(k, x);
  return v;
}

TEST(QmpSetParametersTest, AppliesEverySettableParameter) {
  Params cur;
  Params out;
  ASSERT_EQ(ApplySetParameters(Args({{"run", QmpValue::Int(2)},
                                     {"pages-to-scan", QmpValue::Int(1000)},
                                     {"sleep-ms", QmpValue::Int(5)},
                                     {"delay", QmpValue::Int(4)},
                                     {"use-zero-pages", QmpValue::Bool(false)},
                                     {"max-page-sharing", QmpValue::Int(3)},
                                     {"new-ratio", QmpValue::Int(25)}}),
                                cur, &out),
            "");
  EXPECT_EQ(out.run, 2u);
  EXPECT_EQ(out.pages_to_scan, 1000u);
  EXPECT_EQ(out.sleep_millisecs, 5u);
  EXPECT_EQ(out.delay, 4u);
  EXPECT_FALSE(out.use_zero_pages);
  EXPECT_EQ(out.max_page_sharing, 3u);
  EXPECT_EQ(out.new_ratio, 25u);
}

TEST(QmpSetParametersTest, SubsetKeepsTheRest) {
  Params cur;
  cur.delay = 7;
  cur.pages_to_scan = 123;
  Params out;
  ASSERT_EQ(ApplySetParameters(Args({{"delay", QmpValue::Int(0)}}), cur, &out), "");
  EXPECT_EQ(out.delay, 0u);
  EXPECT_EQ(out.pages_to_scan, 123u);
}

TEST(QmpSetParametersTest, EmptyArgumentsChangeNothing) {
  Params cur;
  cur.delay = 7;
  Params out;
  ASSERT_EQ(ApplySetParameters(QmpValue::Dict(), cur, &out), "");
  EXPECT_EQ(out.delay, 7u);
}

TEST(QmpSetParametersTest, UnknownKeyIsNamedAndNothingChanges) {
  Params cur;
  Params out;
  out.delay = 99;
  std::string err =
      ApplySetParameters(Args({{"delay", QmpValue::Int(3)}, {"pages_to_scan", QmpValue::Int(5)}}), cur, &out);
  EXPECT_NE(err.find("'pages_to_scan'"), std::string::npos) << err;
  EXPECT_NE(err.find("unexpected"), std::string::npos) << err;
  EXPECT_EQ(out.delay, 99u);  // all or nothing
}

TEST(QmpSetParametersTest, WrongTypesAreNamed) {
  Params cur, out;
  struct Case {
    const char* key;
    QmpValue value;
    const char* expected;
  } cases[] = {
      {"delay", QmpValue::Str("3"), "integer"},
      {"delay", QmpValue::Double(1.5), "integer"},
      {"run", QmpValue::Bool(true), "integer"},
      {"pages-to-scan", QmpValue::List(), "integer"},
      {"use-zero-pages", QmpValue::Int(1), "boolean"},
      {"use-zero-pages", QmpValue::Str("on"), "boolean"},
      {"sleep-ms", QmpValue(), "integer"},
  };
  for (const Case& c : cases) {
    std::string err = ApplySetParameters(Args({{c.key, c.value}}), cur, &out);
    EXPECT_NE(err.find(std::string("'") + c.key + "'"), std::string::npos) << err;
    EXPECT_NE(err.find(std::string("expected: ") + c.expected), std::string::npos) << err;
  }
}

TEST(QmpSetParametersTest, OutOfRangeValuesAreNamed) {
  Params cur, out;
  struct Case {
    const char* key;
    QmpValue value;
  } cases[] = {
      {"run", QmpValue::Int(3)},           {"run", QmpValue::Int(-1)},
      {"pages-to-scan", QmpValue::Int(0)}, {"pages-to-scan", QmpValue::Uint(18446744073709551615ull)},
      {"sleep-ms", QmpValue::Int(60001)},  {"delay", QmpValue::Int(1001)},
      {"max-page-sharing", QmpValue::Int(1)}, {"new-ratio", QmpValue::Int(0)},
      {"new-ratio", QmpValue::Int(100)},   {"delay", QmpValue::Int(4294967296)},
  };
  for (const Case& c : cases) {
    std::string err = ApplySetParameters(Args({{c.key, c.value}}), cur, &out);
    EXPECT_NE(err.find(std::string("'") + c.key + "'"), std::string::npos) << c.key << ": " << err;
    EXPECT_NE(err.find("invalid value"), std::string::npos) << err;
  }
}

TEST(QmpSetParametersTest, LaterBadArgumentRejectsEarlierGoodOnes) {
  Params cur, out;
  out.pages_to_scan = 55;
  std::string err = ApplySetParameters(
      Args({{"pages-to-scan", QmpValue::Int(10)}, {"new-ratio", QmpValue::Int(500)}}), cur, &out);
  EXPECT_NE(err.find("'new-ratio'"), std::string::npos) << err;
  EXPECT_EQ(out.pages_to_scan, 55u);
}

TEST(QmpQueryTest, QueriesRefuseArguments) {
  EXPECT_EQ(CheckNoArguments(QmpValue::Dict()), "");
  std::string err = CheckNoArguments(Args({{"verbose", QmpValue::Bool(true)}}));
  EXPECT_NE(err.find("'verbose'"), std::string::npos) << err;
}

// The names of the members of QAPI struct `name` in qmp/pksm.json.
std::set<std::string> SchemaMembers(const std::string& name) {
  std::ifstream in(std::string(PKSM_SOURCE_DIR) + "/qmp/pksm.json");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  // Drop comments.
  text = std::regex_replace(text, std::regex("#[^\n]*"), "");
  size_t at = text.find("'struct': '" + name + "'");
  EXPECT_NE(at, std::string::npos) << name << " not in pksm.json";
  if (at == std::string::npos) return {};
  size_t open = text.find('{', text.find("'data'", at));
  size_t close = text.find('}', open);
  std::string body = text.substr(open, close - open);
  std::set<std::string> names;
  std::regex member("'\\*?([a-z-]+)'\\s*:");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), member); it != std::sregex_iterator(); ++it)
    names.insert((*it)[1]);
  return names;
}

std::set<std::string> Keys(const QmpValue& v) {
  std::set<std::string> out;
  for (const auto& [k, x] : v.dict) out.insert(k);
  return out;
}

TEST(QmpSchemaTest, QueryPksmMatchesPksmInfo) {
  plugin::StatusSnapshot s;
  s.blocks.push_back({"pc.ram", 1 << 20, 3, 4});
  s.skipped.push_back({"pc.bios", "read-only"});
  QmpValue v = StatusToQmp(s, Params());
  EXPECT_EQ(Keys(v), SchemaMembers("PksmInfo"));
  ASSERT_EQ(v.Get("ram-blocks")->list.size(), 1u);
  EXPECT_EQ(Keys(v.Get("ram-blocks")->list[0]), SchemaMembers("PksmRamBlock"));
  EXPECT_EQ(Keys(v.Get("skipped-blocks")->list[0]), SchemaMembers("PksmSkippedBlock"));
  EXPECT_EQ(v.Get("probation")->list.size(), kProbationBuckets);
}

TEST(QmpSchemaTest, QueryPksmCarriesTheValues) {
  plugin::StatusSnapshot s;
  s.stats.pages_sharing = 11;
  s.stats.ksm_zero_pages = 12;
  s.stats.general_profit = -5;
  s.dirty_log = "qemu";
  s.paused = true;
  s.paused_reason = "migration";
  Params p;
  p.run = 2;
  QmpValue v = StatusToQmp(s, p);
  EXPECT_EQ(v.Get("pages-sharing")->u, 11u);
  EXPECT_EQ(v.Get("zero-pages")->u, 12u);
  EXPECT_EQ(v.Get("general-profit")->i, -5);
  EXPECT_EQ(v.Get("dirty-log")->s, "qemu");
  EXPECT_TRUE(v.Get("paused")->b);
  EXPECT_EQ(v.Get("paused-reason")->s, "migration");
  EXPECT_EQ(v.Get("run")->i, 2);
}

TEST(QmpSchemaTest, ParametersMatchPksmParameters) {
  Params p;
  p.delay = 9;
  QmpValue v = ParamsToQmp(p);
  EXPECT_EQ(Keys(v), SchemaMembers("PksmParameters"));
  EXPECT_EQ(v.Get("delay")->u, 9u);
  // What query-pksm-parameters returns is accepted back by pksm-set-parameters.
  Params out;
  EXPECT_EQ(ApplySetParameters(v, Params(), &out), "");
  EXPECT_EQ(out.delay, 9u);
}

}  // namespace
}  // namespace pksm::qmp
