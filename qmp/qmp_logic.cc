// qmp_logic: see qmp_logic.h.
#include "qmp/qmp_logic.h"

#include <cstdint>
#include <limits>

namespace pksm::qmp {
namespace {

// The settable parameters: QMP name, Params key, JSON type.
struct ParamSpec {
  const char* qmp_name;
  const char* params_key;
  bool is_bool;
};

constexpr ParamSpec kParamSpecs[] = {
    {"run", "run", false},
    {"pages-to-scan", "pages_to_scan", false},
    {"sleep-ms", "sleep_millisecs", false},
    {"delay", "delay", false},
    {"use-zero-pages", "use_zero_pages", true},
    {"max-page-sharing", "max_page_sharing", false},
    {"new-ratio", "new_ratio", false},
};

const ParamSpec* FindSpec(const std::string& name) {
  for (const ParamSpec& s : kParamSpecs)
    if (name == s.qmp_name) return &s;
  return nullptr;
}

// "expected ..." part of a Params::Set error, to reword it with the QMP name.
std::string ExpectedPart(const std::string& err) {
  size_t at = err.find("expected ");
  return at == std::string::npos ? err : err.substr(at);
}

}  // namespace

std::string ApplySetParameters(const QmpValue& args, const Params& current, Params* out) {
  if (args.kind != QmpValue::Kind::kDict) return "pksm-set-parameters: arguments must be an object";
  Params next = current;
  for (const auto& [name, value] : args.dict) {
    const ParamSpec* spec = FindSpec(name);
    if (spec == nullptr) return "Parameter '" + name + "' is unexpected";
    std::string text;
    if (spec->is_bool) {
      if (value.kind != QmpValue::Kind::kBool)
        return "Invalid parameter type for '" + name + "', expected: boolean (got " +
               QmpValue::KindName(value.kind) + ")";
      text = value.b ? "1" : "0";
    } else {
      if (value.kind == QmpValue::Kind::kInt) {
        text = std::to_string(value.i);
      } else if (value.kind == QmpValue::Kind::kUint) {
        text = std::to_string(value.u);
      } else {
        return "Invalid parameter type for '" + name + "', expected: integer (got " +
               QmpValue::KindName(value.kind) + ")";
      }
    }
    std::string err = next.Set(spec->params_key, text);
    if (!err.empty()) return "Parameter '" + name + "' has invalid value " + text + ": " + ExpectedPart(err);
  }
  std::string err = next.Validate();
  if (!err.empty()) return "pksm-set-parameters: " + err;
  *out = next;
  return "";
}

std::string CheckNoArguments(const QmpValue& args) {
  if (args.kind == QmpValue::Kind::kDict && !args.dict.empty())
    return "Parameter '" + args.dict.front().first + "' is unexpected";
  return "";
}

QmpValue ParamsToQmp(const Params& p) {
  QmpValue v = QmpValue::Dict();
  v.Put("run", QmpValue::Int(p.run));
  v.Put("pages-to-scan", QmpValue::Uint(p.pages_to_scan));
  v.Put("sleep-ms", QmpValue::Uint(p.sleep_millisecs));
  v.Put("delay", QmpValue::Uint(p.delay));
  v.Put("use-zero-pages", QmpValue::Bool(p.use_zero_pages));
  v.Put("max-page-sharing", QmpValue::Uint(p.max_page_sharing));
  v.Put("new-ratio", QmpValue::Uint(p.new_ratio));
  return v;
}

QmpValue StatusToQmp(const plugin::StatusSnapshot& s, const Params& requested) {
  const Stats& st = s.stats;
  QmpValue v = QmpValue::Dict();
  v.Put("run", QmpValue::Int(requested.run));
  v.Put("mode", QmpValue::Str(ToString(requested.mode)));
  v.Put("dirty-log", QmpValue::Str(s.dirty_log));
  v.Put("paused", QmpValue::Bool(s.paused));
  v.Put("paused-reason", QmpValue::Str(s.paused_reason));
  v.Put("pages-shared", QmpValue::Uint(st.pages_shared));
  v.Put("pages-sharing", QmpValue::Uint(st.pages_sharing));
  v.Put("pages-unshared", QmpValue::Uint(st.pages_unshared));
  v.Put("pages-volatile", QmpValue::Uint(st.pages_volatile));
  v.Put("zero-pages", QmpValue::Uint(st.ksm_zero_pages));
  v.Put("full-scans", QmpValue::Uint(st.full_scans));
  v.Put("cow-breaks", QmpValue::Uint(st.cow_breaks));
  v.Put("stable-node-chains", QmpValue::Uint(st.stable_node_chains));
  v.Put("stable-node-dups", QmpValue::Uint(st.stable_node_dups));
  v.Put("general-profit", QmpValue::Int(st.general_profit));
  v.Put("rmap-items", QmpValue::Uint(st.rmap_items));
  v.Put("new-list", QmpValue::Uint(st.new_list));
  v.Put("rescan-list", QmpValue::Uint(st.rescan_list));
  v.Put("del-list", QmpValue::Uint(st.del_list));
  v.Put("pages-scanned", QmpValue::Uint(st.pages_scanned));
  v.Put("merges", QmpValue::Uint(st.merges));
  v.Put("merge-failures", QmpValue::Uint(st.merge_failures));
  v.Put("budget-refusals", QmpValue::Uint(st.budget_refusals));
  v.Put("unmerges", QmpValue::Uint(st.unmerges));
  v.Put("pages-compared", QmpValue::Uint(st.pages_compared));
  v.Put("partial-hash-hits", QmpValue::Uint(st.partial_hash_hits));
  v.Put("partial-hash-misses", QmpValue::Uint(st.partial_hash_misses));
  v.Put("bytes-hashed", QmpValue::Uint(st.bytes_hashed));
  QmpValue probation = QmpValue::List();
  for (uint64_t n : st.probation) probation.Append(QmpValue::Uint(n));
  v.Put("probation", std::move(probation));
  v.Put("vmas-used", QmpValue::Uint(s.vmas_used));
  v.Put("vma-budget", QmpValue::Uint(s.vma_budget));
  v.Put("scanner-cpu-ns", QmpValue::Uint(s.scanner_cpu_ns));
  QmpValue blocks = QmpValue::List();
  for (const plugin::BlockReport& b : s.blocks) {
    QmpValue x = QmpValue::Dict();
    x.Put("name", QmpValue::Str(b.name));
    x.Put("size", QmpValue::Uint(b.size));
    x.Put("pages-sharing", QmpValue::Uint(b.pages_sharing));
    x.Put("zero-pages", QmpValue::Uint(b.zero_pages));
    blocks.Append(std::move(x));
  }
  v.Put("ram-blocks", std::move(blocks));
  QmpValue skipped = QmpValue::List();
  for (const plugin::SkippedReport& b : s.skipped) {
    QmpValue x = QmpValue::Dict();
    x.Put("name", QmpValue::Str(b.name));
    x.Put("reason", QmpValue::Str(b.reason));
    skipped.Append(std::move(x));
  }
  v.Put("skipped-blocks", std::move(skipped));
  return v;
}

}  // namespace pksm::qmp
