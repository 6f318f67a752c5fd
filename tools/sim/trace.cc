#include "trace.h"

#include <array>
#include <charconv>
#include <vector>

namespace pksm::sim {
namespace {

// The parameters a trace may change. `mode` is deliberately absent: the
// simulator chooses the dirty log (or the checksum fallback) from the mode
// when it builds the engine, so the mode is fixed for a run (--mode).
constexpr std::array<std::string_view, 6> kSetKeys = {
    "run", "delay", "pages_to_scan", "max_page_sharing", "use_zero_pages", "new_ratio"};

std::vector<std::string_view> SplitTokens(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    if (i >= line.size()) break;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
    tokens.push_back(line.substr(i, j - i));
    i = j;
  }
  return tokens;
}

// Written with append: GCC 12 at -O3 gives a false -Wrestrict for
// "'" + std::string(s).
std::string Quote(std::string_view s) {
  std::string q;
  q.reserve(s.size() + 2);
  q.push_back('\'');
  q.append(s);
  q.push_back('\'');
  return q;
}

// Parses an unsigned decimal integer that must consume the whole token.
std::string ParseUint(std::string_view token, std::string_view what, std::string_view command,
                      uint64_t* out) {
  uint64_t v = 0;
  const char* begin = token.data();
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(begin, end, v);
  if (ec == std::errc::result_out_of_range) {
    return Quote(token) + " is too large (" + std::string(what) + " of " + Quote(command) + ")";
  }
  if (ec != std::errc() || ptr != end || token.empty()) {
    return Quote(token) + " is not an unsigned integer (" + std::string(what) + " of " +
           Quote(command) + ")";
  }
  *out = v;
  return "";
}

std::string ArgCount(std::string_view command, std::string_view usage, size_t got) {
  return Quote(command) + " takes " + std::string(usage) + ", got " + std::to_string(got) +
         " argument" + (got == 1 ? "" : "s");
}

}  // namespace

std::string_view SetKeysForMessage() {
  return "run, delay, pages_to_scan, max_page_sharing, use_zero_pages, new_ratio";
}

std::string ParseLine(std::string_view line, Command* out) {
  *out = Command{};
  if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
  std::vector<std::string_view> t = SplitTokens(line);
  if (t.empty()) return "";
  const std::string_view cmd = t[0];
  const size_t nargs = t.size() - 1;
  std::string err;

  if (cmd == "region") {
    if (nargs != 2) return ArgCount(cmd, "2 arguments (R PAGES)", nargs);
    out->op = Command::Op::kRegion;
    if (!(err = ParseUint(t[1], "R", cmd, &out->region)).empty()) return err;
    if (!(err = ParseUint(t[2], "PAGES", cmd, &out->count)).empty()) return err;
    if (out->region > kMaxRegionId) {
      return "region id " + Quote(t[1]) + " is out of range (0.." + std::to_string(kMaxRegionId) +
             ")";
    }
    if (out->count == 0 || out->count > kMaxRegionPages) {
      return "PAGES " + Quote(t[2]) + " is out of range (1.." + std::to_string(kMaxRegionPages) +
             ")";
    }
    return "";
  }
  if (cmd == "fill") {
    if (nargs != 4 && nargs != 5) {
      return ArgCount(cmd, "4 or 5 arguments (R FIRST COUNT zero|same SEED|unique SEED)", nargs);
    }
    out->op = Command::Op::kFill;
    if (!(err = ParseUint(t[1], "R", cmd, &out->region)).empty()) return err;
    if (!(err = ParseUint(t[2], "FIRST", cmd, &out->first)).empty()) return err;
    if (!(err = ParseUint(t[3], "COUNT", cmd, &out->count)).empty()) return err;
    if (out->count == 0) return "COUNT " + Quote(t[3]) + " of 'fill' must be at least 1";
    const std::string_view kind = t[4];
    if (kind == "zero") {
      out->kind = ContentKind::kZero;
      if (nargs != 4) return "'fill ... zero' takes no SEED, got " + Quote(t[5]);
      return "";
    }
    if (kind == "same" || kind == "unique") {
      out->kind = kind == "same" ? ContentKind::kSame : ContentKind::kUnique;
      if (nargs != 5) return "'fill ... " + std::string(kind) + "' needs a SEED";
      return ParseUint(t[5], "SEED", cmd, &out->seed);
    }
    return "unknown content kind " + Quote(kind) + " (expected zero, same or unique)";
  }
  if (cmd == "write") {
    if (nargs != 3) return ArgCount(cmd, "3 arguments (R PAGE SEED)", nargs);
    out->op = Command::Op::kWrite;
    if (!(err = ParseUint(t[1], "R", cmd, &out->region)).empty()) return err;
    if (!(err = ParseUint(t[2], "PAGE", cmd, &out->first)).empty()) return err;
    out->count = 1;
    return ParseUint(t[3], "SEED", cmd, &out->seed);
  }
  if (cmd == "discard") {
    if (nargs != 3) return ArgCount(cmd, "3 arguments (R FIRST COUNT)", nargs);
    out->op = Command::Op::kDiscard;
    if (!(err = ParseUint(t[1], "R", cmd, &out->region)).empty()) return err;
    if (!(err = ParseUint(t[2], "FIRST", cmd, &out->first)).empty()) return err;
    if (!(err = ParseUint(t[3], "COUNT", cmd, &out->count)).empty()) return err;
    if (out->count == 0) return "COUNT " + Quote(t[3]) + " of 'discard' must be at least 1";
    return "";
  }
  if (cmd == "set") {
    if (nargs != 2) return ArgCount(cmd, "2 arguments (KEY VALUE)", nargs);
    out->op = Command::Op::kSet;
    std::string key(t[1]);
    for (char& c : key) {
      if (c == '-') c = '_';
    }
    bool known = false;
    for (std::string_view k : kSetKeys) known = known || k == key;
    if (!known) {
      return "unknown parameter " + Quote(t[1]) + " (set accepts " +
             std::string(SetKeysForMessage()) + ")";
    }
    out->key = std::move(key);
    out->value = std::string(t[2]);
    return "";
  }
  if (cmd == "scan") {
    if (nargs != 1) return ArgCount(cmd, "1 argument (PASSES)", nargs);
    out->op = Command::Op::kScan;
    if (!(err = ParseUint(t[1], "PASSES", cmd, &out->count)).empty()) return err;
    if (out->count > kMaxScanPasses) {
      return "PASSES " + Quote(t[1]) + " is out of range (0.." + std::to_string(kMaxScanPasses) +
             ")";
    }
    return "";
  }
  if (cmd == "step") {
    if (nargs != 1) return ArgCount(cmd, "1 argument (PAGES)", nargs);
    out->op = Command::Op::kStep;
    return ParseUint(t[1], "PAGES", cmd, &out->count);
  }
  if (cmd == "stats" || cmd == "verify") {
    if (nargs != 0) return ArgCount(cmd, "no arguments", nargs);
    out->op = cmd == "stats" ? Command::Op::kStats : Command::Op::kVerify;
    return "";
  }
  return "unknown command " + Quote(cmd) +
         " (expected region, fill, write, discard, set, scan, step, stats or verify)";
}

}  // namespace pksm::sim
