// Params: one parser for every way an operator sets a tunable (trace,
// command line, -plugin arguments, QMP), so every front end reports the
// same errors for the same mistakes.
#include "pksm/params.h"

#include <charconv>
#include <string>

namespace pksm {
namespace {

// Canonical key (underscores) for `key`, or "" if unknown.
std::string Canonical(std::string_view key) {
  std::string k(key);
  for (char& c : k)
    if (c == '-') c = '_';
  if (k == "sleep_ms") return "sleep_millisecs";
  for (std::string_view known : Params::Keys())
    if (k == known) return k;
  return "";
}

bool ParseUint(std::string_view v, uint64_t lo, uint64_t hi, uint32_t* out) {
  uint64_t x = 0;
  if (v.empty()) return false;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x, 10);
  if (ec != std::errc() || p != v.data() + v.size() || x < lo || x > hi) return false;
  *out = static_cast<uint32_t>(x);
  return true;
}

struct Range {
  const char* key;
  uint64_t lo, hi;
};

constexpr Range kRanges[] = {
    {"run", 0, 2},
    {"pages_to_scan", 1, 10000000},
    {"sleep_millisecs", 0, 60000},
    {"delay", 0, 1000},
    {"max_page_sharing", 2, 1048576},
    {"new_ratio", 1, 99},
};

const Range* RangeOf(std::string_view key) {
  for (const Range& r : kRanges)
    if (key == r.key) return &r;
  return nullptr;
}

uint32_t* FieldOf(Params* p, std::string_view key) {
  if (key == "run") return &p->run;
  if (key == "pages_to_scan") return &p->pages_to_scan;
  if (key == "sleep_millisecs") return &p->sleep_millisecs;
  if (key == "delay") return &p->delay;
  if (key == "max_page_sharing") return &p->max_page_sharing;
  if (key == "new_ratio") return &p->new_ratio;
  return nullptr;
}

}  // namespace

const char* ToString(Mode m) { return m == Mode::kKsm ? "ksm" : "pksm"; }

const std::vector<std::string_view>& Params::Keys() {
  static const std::vector<std::string_view> keys = {
      "mode", "run", "pages_to_scan", "sleep_millisecs", "delay", "use_zero_pages", "max_page_sharing", "new_ratio",
  };
  return keys;
}

std::string Params::Set(std::string_view key, std::string_view value) {
  std::string k = Canonical(key);
  if (k.empty()) return "unknown parameter '" + std::string(key) + "'";
  auto bad = [&](const std::string& expected) {
    return "invalid value '" + std::string(value) + "' for '" + k + "': expected " + expected;
  };
  if (k == "mode") {
    if (value == "pksm") mode = Mode::kPksm;
    else if (value == "ksm") mode = Mode::kKsm;
    else return bad("pksm or ksm");
    return "";
  }
  if (k == "use_zero_pages") {
    if (value == "1" || value == "true" || value == "on") use_zero_pages = true;
    else if (value == "0" || value == "false" || value == "off") use_zero_pages = false;
    else return bad("0 or 1");
    return "";
  }
  const Range* r = RangeOf(k);
  uint32_t x = 0;
  if (!ParseUint(value, r->lo, r->hi, &x))
    return bad("an integer " + std::to_string(r->lo) + ".." + std::to_string(r->hi));
  *FieldOf(this, k) = x;
  return "";
}

std::string Params::Validate() const {
  if (mode != Mode::kPksm && mode != Mode::kKsm) return "invalid mode";
  Params copy = *this;
  for (const Range& r : kRanges) {
    uint32_t v = *FieldOf(&copy, r.key);
    if (v < r.lo || v > r.hi)
      return "invalid value '" + std::to_string(v) + "' for '" + r.key + "': expected an integer " +
             std::to_string(r.lo) + ".." + std::to_string(r.hi);
  }
  return "";
}

std::string Params::ToJson() const {
  std::string s = "{\"mode\":\"";
  s += ToString(mode);
  s += "\",\"run\":" + std::to_string(run);
  s += ",\"pages_to_scan\":" + std::to_string(pages_to_scan);
  s += ",\"sleep_millisecs\":" + std::to_string(sleep_millisecs);
  s += ",\"delay\":" + std::to_string(delay);
  s += ",\"use_zero_pages\":" + std::string(use_zero_pages ? "true" : "false");
  s += ",\"max_page_sharing\":" + std::to_string(max_page_sharing);
  s += ",\"new_ratio\":" + std::to_string(new_ratio);
  s += "}";
  return s;
}

}  // namespace pksm
