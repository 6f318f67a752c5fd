#include "pksm/stats.h"

#include <string>

namespace pksm {
namespace {

void Field(std::string* s, const char* name, uint64_t v) {
  *s += '"';
  *s += name;
  *s += "\":";
  *s += std::to_string(v);
  *s += ',';
}

void Quoted(std::string* s, const std::string& v) {
  *s += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') *s += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    *s += c;
  }
  *s += '"';
}

}  // namespace

std::string Stats::ToJson() const {
  std::string s = "{";
  Field(&s, "pages_shared", pages_shared);
  Field(&s, "pages_sharing", pages_sharing);
  Field(&s, "pages_unshared", pages_unshared);
  Field(&s, "pages_volatile", pages_volatile);
  Field(&s, "ksm_zero_pages", ksm_zero_pages);
  Field(&s, "full_scans", full_scans);
  Field(&s, "stable_node_chains", stable_node_chains);
  Field(&s, "stable_node_dups", stable_node_dups);
  s += "\"general_profit\":" + std::to_string(general_profit) + ",";
  Field(&s, "rmap_items", rmap_items);
  Field(&s, "new_list", new_list);
  Field(&s, "rescan_list", rescan_list);
  Field(&s, "del_list", del_list);
  Field(&s, "cow_breaks", cow_breaks);
  Field(&s, "pages_scanned", pages_scanned);
  Field(&s, "merges", merges);
  Field(&s, "merge_failures", merge_failures);
  Field(&s, "budget_refusals", budget_refusals);
  Field(&s, "unmerges", unmerges);
  Field(&s, "pages_compared", pages_compared);
  Field(&s, "partial_hash_hits", partial_hash_hits);
  Field(&s, "partial_hash_misses", partial_hash_misses);
  Field(&s, "stable_lookups", stable_lookups);
  Field(&s, "stable_hits", stable_hits);
  Field(&s, "bytes_hashed", bytes_hashed);
  s += "\"probation\":[";
  for (size_t i = 0; i < probation.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(probation[i]);
  }
  s += "],\"dirty_log\":";
  Quoted(&s, dirty_log);
  s += ",\"mode\":";
  Quoted(&s, mode);
  s += "}";
  return s;
}

}  // namespace pksm
