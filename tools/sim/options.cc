#include "options.h"

#include <cstdlib>
#include <string_view>

namespace pksm::sim {
namespace {

// Options whose value goes straight to Params::Set (same key, dashes).
constexpr std::string_view kParamOptions[] = {
    "delay", "pages-to-scan", "max-page-sharing", "use-zero-pages", "new-ratio",
};

}  // namespace

std::string_view Usage() {
  return "usage: pksm-sim [options] TRACE    (TRACE '-' reads standard input)\n"
         "  --mode pksm|ksm          algorithm (default pksm; ksm is the classic baseline)\n"
         "  --delay N                probation: visits a new page must stay unwritten (default 1)\n"
         "  --pages-to-scan K        candidates per engine step (default 100)\n"
         "  --max-page-sharing M     mappings per stable page before a dup starts (default 256)\n"
         "  --use-zero-pages 0|1     merge zero pages onto the zero page (default 1)\n"
         "  --new-ratio R            percent of candidates from the new list (default 50)\n"
         "  --dirty-log auto|sim|checksum\n"
         "                           how volatility is judged (auto: sim for pksm, checksum for ksm)\n"
         "  --cpu                    measure scan CPU time (adds scan_cpu_ns to the JSON)\n"
         "  --json                   print the final statistics as one JSON line, last\n"
         "  --quiet                  no progress lines on stderr\n"
         "  --test-corrupt R:PAGE    (testing verify) flip a byte of that page before each verify\n"
         "  --help                   this text\n"
         "Exit status: 0 ok, 1 a verify failed, 2 bad option or malformed trace line.\n";
}

std::string ParseOptions(int argc, const char* const* argv, Options* out) {
  *out = Options{};
  std::string dirty_log = "auto";
  bool have_trace = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-" || arg.empty() || arg[0] != '-') {
      if (have_trace) {
        return "more than one trace given ('" + out->trace_path + "' and '" + std::string(arg) +
               "')";
      }
      out->trace_path = std::string(arg);
      have_trace = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") return "unknown option '" + std::string(arg) + "'";
    std::string_view name = arg.substr(2);
    std::string value;
    bool has_inline_value = false;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
      has_inline_value = true;
    }
    const std::string opt = "--" + std::string(name);
    // Flags.
    if (name == "json" || name == "cpu" || name == "quiet" || name == "help") {
      if (has_inline_value) return opt + " takes no value";
      if (name == "json") out->json = true;
      if (name == "cpu") out->config.measure_cpu = true;
      if (name == "quiet") out->config.progress = false;
      if (name == "help") out->help = true;
      continue;
    }
    bool known = name == "mode" || name == "dirty-log" || name == "test-corrupt";
    for (std::string_view k : kParamOptions) known = known || k == name;
    if (!known) return "unknown option '" + std::string(arg) + "'";
    if (!has_inline_value) {
      if (i + 1 >= argc) return opt + " needs a value";
      value = argv[++i];
    }
    if (name == "mode") {
      if (value == "pksm") {
        out->config.params.mode = Mode::kPksm;
      } else if (value == "ksm") {
        out->config.params.mode = Mode::kKsm;
      } else {
        return "--mode: invalid value '" + value + "': expected pksm or ksm";
      }
    } else if (name == "test-corrupt") {
      // R:PAGE
      const size_t colon = value.find(':');
      char* end = nullptr;
      const char* v = value.c_str();
      bool good = colon != std::string::npos && colon > 0 && colon + 1 < value.size() &&
                  value.find_first_not_of("0123456789:") == std::string::npos &&
                  value.find(':', colon + 1) == std::string::npos;
      if (good) {
        out->config.corrupt_page.region = static_cast<RegionId>(std::strtoul(v, &end, 10));
        out->config.corrupt_page.index = std::strtoull(v + colon + 1, &end, 10);
        out->config.corrupt_before_verify = true;
      } else {
        return "--test-corrupt: invalid value '" + value + "': expected REGION:PAGE";
      }
    } else if (name == "dirty-log") {
      if (value != "auto" && value != "sim" && value != "checksum") {
        return "--dirty-log: invalid value '" + value + "': expected auto, sim or checksum";
      }
      dirty_log = value;
    } else if (std::string err = out->config.params.Set(name, value); !err.empty()) {
      return opt + ": " + err;
    }
  }
  if (out->help) return "";
  if (!have_trace) return "no trace given";
  if (std::string err = out->config.params.Validate(); !err.empty()) return err;
  out->config.use_dirty_log =
      dirty_log == "auto" ? out->config.params.mode == Mode::kPksm : dirty_log == "sim";
  return "";
}

}  // namespace pksm::sim
