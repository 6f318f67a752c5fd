#include "options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string_view>

namespace pksm::host {

namespace {

// Largest workload accepted: 256 GiB (the machine decides what fits).
constexpr uint64_t kMaxSizeMib = 256 * 1024;

std::string Bad(std::string_view opt, std::string_view value, std::string_view expected) {
  std::string s = "invalid value '";
  s += value;
  s += "' for ";
  s += opt;
  s += ": expected ";
  s += expected;
  return s;
}

// Parses an unsigned decimal integer in [lo, hi]; no sign, no junk.
bool ParseUint(std::string_view text, uint64_t lo, uint64_t hi, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

// Parses a non-negative decimal number of seconds in [lo, hi].
bool ParseSeconds(std::string_view text, double lo, double hi, double* out) {
  if (text.empty() || text.size() > 32) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || c == '.')) return false;
  }
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

// "zero=Z,dup=D,unique=U": each key at most once, missing keys are 0, the
// percentages must sum to 100.
std::string ParseMix(std::string_view text, HostOptions* o) {
  const std::string_view opt = "--mix";
  const char* kExpected = "zero=Z,dup=D,unique=U with percentages summing to 100";
  uint64_t vals[3] = {0, 0, 0};
  bool seen[3] = {false, false, false};
  static constexpr std::string_view kKeys[3] = {"zero", "dup", "unique"};
  if (text.empty()) return Bad(opt, text, kExpected);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(pos, comma - pos);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Bad(opt, text, std::string(kExpected) + " ('" + std::string(item) + "' has no '=')");
    }
    std::string_view key = item.substr(0, eq);
    std::string_view val = item.substr(eq + 1);
    int k = -1;
    for (int i = 0; i < 3; ++i) {
      if (key == kKeys[i]) k = i;
    }
    if (k < 0) {
      return Bad(opt, text, std::string(kExpected) + " (unknown kind '" + std::string(key) + "')");
    }
    if (seen[k]) {
      return Bad(opt, text, std::string(kExpected) + " ('" + std::string(key) + "' given twice)");
    }
    seen[k] = true;
    if (!ParseUint(val, 0, 100, &vals[k])) {
      return Bad(opt, text,
                 std::string(kExpected) + " ('" + std::string(val) + "' for " + std::string(key) +
                     " is not a percentage 0..100)");
    }
    pos = comma + 1;
  }
  if (vals[0] + vals[1] + vals[2] != 100) {
    return Bad(opt, text,
               std::string(kExpected) + " (they sum to " + std::to_string(vals[0] + vals[1] + vals[2]) +
                   ")");
  }
  o->mix_zero = static_cast<uint32_t>(vals[0]);
  o->mix_dup = static_cast<uint32_t>(vals[1]);
  o->mix_unique = static_cast<uint32_t>(vals[2]);
  return "";
}

}  // namespace

const char* ToString(DirtyLogChoice c) {
  switch (c) {
    case DirtyLogChoice::kAuto:
      return "auto";
    case DirtyLogChoice::kUffd:
      return "uffd";
    case DirtyLogChoice::kUffdAsync:
      return "uffd-async";
    case DirtyLogChoice::kChecksum:
      return "checksum";
  }
  return "?";
}

std::string HostUsage() {
  return R"(usage: pksm-host [options]
Deduplicates a workload in this process's memory with the pksm engine and
reports on it; optionally runs the same workload under the kernel's KSM.

workload:
  --size-mib S            workload size in MiB (default 64)
  --mix zero=Z,dup=D,unique=U
                          percent of pages of each kind, summing to 100
                          (default zero=25,dup=50,unique=25)
  --dup-contents K        distinct contents the duplicate pages are drawn
                          from (default 1024)
  --run-length L          duplicates in runs of L consecutive pages of one
                          content sequence (default 1: scattered)
  --seed N                placement of the pages (default 1)
scanning (the same values for pksm and, with the comparison, for ksmd):
  --delay N               probation: visits a page must stay unwritten (default 1)
  --pages-to-scan K       pages per wake-up (default 4096)
  --sleep-ms MS           pause between wake-ups (default 10)
  --timeout SEC           give up waiting for steady state after SEC (default 300;
                          also bounds waiting for another kernel KSM user)
  --dirty-log auto|uffd|uffd-async|checksum
                          dirty-log provider of the pksm phase (default auto =
                          uffd, synchronous write protection; uffd-async:
                          WP_ASYNC + PAGEMAP_SCAN, merges move the page out)
  --max-vmas N            VMA budget of the pksm phase (default 0: derived
                          from vm.max_map_count)
  --nice N|ksmd|keep      nice value of pksm's merging thread (default: ksmd's
                          with --compare-kernel-ksm, else keep)
writers:
  --writers T             T threads write sequence-stamped data to random
                          pages while merging runs (needs --seconds)
  --seconds SEC           how long the writers write
  --write-interval-us US  pause of each writer between writes (default 50)
output and phases:
  --hold SEC              after steady state keep everything mapped for SEC
                          seconds (inspect the process), then verify
  --compare-kernel-ksm    also run the workload under the kernel's KSM (root)
  --kernel-only           run only the kernel's KSM phase
  --json                  print one JSON object as the last line
  --help                  this text
exit status: 0 ok, 1 integrity errors / lost writes / runtime error, 2 bad options
)";
}

std::string ParseHostOptions(const std::vector<std::string>& args, HostOptions* out) {
  HostOptions o;
  bool seconds_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg.substr(0, 2) != "--") {
      return "unexpected argument '" + std::string(arg) + "' (options start with --; see --help)";
    }
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    // Flags take no value.
    auto flag = [&](bool* f) -> std::string {
      if (has_value) return "option " + std::string(name) + " takes no value (got '" + std::string(value) + "')";
      *f = true;
      return "";
    };
    if (name == "--help" || name == "-h") {
      if (auto e = flag(&o.help); !e.empty()) return e;
      continue;
    }
    if (name == "--json") {
      if (auto e = flag(&o.json); !e.empty()) return e;
      continue;
    }
    if (name == "--compare-kernel-ksm") {
      if (auto e = flag(&o.compare_kernel_ksm); !e.empty()) return e;
      continue;
    }
    if (name == "--kernel-only") {
      if (auto e = flag(&o.kernel_only); !e.empty()) return e;
      continue;
    }
    static constexpr std::string_view kValued[] = {
        "--size-mib", "--mix",      "--dup-contents", "--run-length", "--seed",
        "--delay",    "--pages-to-scan", "--sleep-ms", "--timeout",   "--dirty-log",
        "--writers",  "--seconds",  "--write-interval-us", "--hold", "--nice", "--max-vmas"};
    bool known = false;
    for (auto k : kValued) known = known || (k == name);
    if (!known) return "unknown option '" + std::string(name) + "' (see --help)";
    if (!has_value) {
      if (i + 1 >= args.size()) return "option " + std::string(name) + " needs a value";
      value = args[++i];
    }
    uint64_t u = 0;
    if (name == "--size-mib") {
      if (!ParseUint(value, 1, kMaxSizeMib, &u)) return Bad(name, value, "an integer 1.." + std::to_string(kMaxSizeMib));
      o.size_mib = u;
    } else if (name == "--mix") {
      if (auto e = ParseMix(value, &o); !e.empty()) return e;
    } else if (name == "--dup-contents") {
      if (!ParseUint(value, 1, uint64_t{1} << 40, &u)) return Bad(name, value, "an integer >= 1");
      o.dup_contents = u;
    } else if (name == "--run-length") {
      if (!ParseUint(value, 1, uint64_t{1} << 30, &u)) return Bad(name, value, "an integer >= 1");
      o.run_length = u;
    } else if (name == "--seed") {
      if (!ParseUint(value, 0, std::numeric_limits<uint64_t>::max(), &u)) return Bad(name, value, "an unsigned integer");
      o.seed = u;
    } else if (name == "--delay") {
      if (!ParseUint(value, 0, 1000, &u)) return Bad(name, value, "an integer 0..1000");
      o.delay = static_cast<uint32_t>(u);
    } else if (name == "--pages-to-scan") {
      if (!ParseUint(value, 1, 1000000, &u)) return Bad(name, value, "an integer 1..1000000");
      o.pages_to_scan = static_cast<uint32_t>(u);
    } else if (name == "--sleep-ms") {
      if (!ParseUint(value, 0, 60000, &u)) return Bad(name, value, "an integer 0..60000");
      o.sleep_ms = static_cast<uint32_t>(u);
    } else if (name == "--timeout") {
      double d = 0;
      if (!ParseSeconds(value, 0.001, 86400, &d)) return Bad(name, value, "seconds, a number > 0 and <= 86400");
      o.timeout_sec = d;
    } else if (name == "--dirty-log") {
      if (value == "auto") {
        o.dirty_log = DirtyLogChoice::kAuto;
      } else if (value == "uffd") {
        o.dirty_log = DirtyLogChoice::kUffd;
      } else if (value == "uffd-async") {
        o.dirty_log = DirtyLogChoice::kUffdAsync;
      } else if (value == "checksum") {
        o.dirty_log = DirtyLogChoice::kChecksum;
      } else {
        return Bad(name, value, "one of auto, uffd, uffd-async, checksum");
      }
    } else if (name == "--max-vmas") {
      if (!ParseUint(value, 0, uint64_t{1} << 40, &u)) return Bad(name, value, "an integer >= 0");
      o.max_vmas = u;
    } else if (name == "--nice") {
      if (value == "ksmd") {
        o.nice = HostOptions::NiceChoice::kKsmd;
      } else if (value == "keep") {
        o.nice = HostOptions::NiceChoice::kKeep;
      } else {
        bool neg = !value.empty() && value[0] == '-';
        if (!ParseUint(neg ? value.substr(1) : value, 0, neg ? 20 : 19, &u)) {
          return Bad(name, value, "an integer -20..19, 'ksmd' or 'keep'");
        }
        o.nice = HostOptions::NiceChoice::kValue;
        o.nice_value = neg ? -static_cast<int>(u) : static_cast<int>(u);
      }
    } else if (name == "--writers") {
      if (!ParseUint(value, 0, 256, &u)) return Bad(name, value, "an integer 0..256");
      o.writers = static_cast<uint32_t>(u);
    } else if (name == "--seconds") {
      double d = 0;
      if (!ParseSeconds(value, 0.001, 86400, &d)) return Bad(name, value, "seconds, a number > 0 and <= 86400");
      o.writer_seconds = d;
      seconds_given = true;
    } else if (name == "--write-interval-us") {
      if (!ParseUint(value, 0, 10000000, &u)) return Bad(name, value, "an integer 0..10000000");
      o.write_interval_us = static_cast<uint32_t>(u);
    } else if (name == "--hold") {
      double d = 0;
      if (!ParseSeconds(value, 0, 86400, &d)) return Bad(name, value, "seconds, a number >= 0 and <= 86400");
      o.hold_sec = d;
    }
  }
  if (o.writers > 0 && !seconds_given) {
    return "option --writers " + std::to_string(o.writers) + " needs --seconds SEC (how long the writers write)";
  }
  if (o.writers == 0 && seconds_given) {
    return "option --seconds needs --writers T (T >= 1)";
  }
  if (o.kernel_only) o.compare_kernel_ksm = true;
  *out = o;
  return "";
}

std::string ParseHostOptions(int argc, const char* const* argv, HostOptions* out) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return ParseHostOptions(args, out);
}

}  // namespace pksm::host
