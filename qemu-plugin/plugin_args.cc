// plugin_args: see plugin_args.h. Engine values go through Params::Set so the
// plugin, the simulator and QMP accept exactly the same values.
#include "qemu-plugin/plugin_args.h"

#include <charconv>
#include <set>

namespace pksm::plugin {

const char* ToString(DirtyLogChoice c) {
  switch (c) {
    case DirtyLogChoice::kAuto: return "auto";
    case DirtyLogChoice::kQemu: return "qemu";
    case DirtyLogChoice::kUffd: return "uffd";
    case DirtyLogChoice::kUffdAsync: return "uffd-async";
    case DirtyLogChoice::kChecksum: return "checksum";
  }
  return "?";
}

namespace {

std::string Dashed(std::string_view key) {
  std::string k(key);
  for (char& c : k)
    if (c == '_') c = '-';
  return k;
}

const char* const kEngineKeys[] = {"run", "pages-to-scan", "sleep-ms", "delay", "use-zero-pages",
                                   "max-page-sharing", "new-ratio", "mode"};

bool IsEngineKey(const std::string& k) {
  for (const char* e : kEngineKeys)
    if (k == e) return true;
  return false;
}

}  // namespace

std::string ParsePluginArgs(int argc, const char* const* argv, PluginConfig* out) {
  PluginConfig cfg;
  std::set<std::string> seen;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i] ? argv[i] : "";
    size_t eq = arg.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return "pksm: invalid plugin argument '" + std::string(arg) + "': expected KEY=VALUE";
    std::string key = Dashed(arg.substr(0, eq));
    std::string_view value = arg.substr(eq + 1);
    auto bad = [&](const std::string& why) {
      return "pksm: invalid plugin argument '" + std::string(arg) + "': " + why;
    };
    if (!seen.insert(key).second) return bad("'" + key + "' is given twice");
    if (key == "dirty-log") {
      if (value == "auto") cfg.dirty_log = DirtyLogChoice::kAuto;
      else if (value == "qemu") cfg.dirty_log = DirtyLogChoice::kQemu;
      else if (value == "uffd") cfg.dirty_log = DirtyLogChoice::kUffd;
      else if (value == "uffd-async") cfg.dirty_log = DirtyLogChoice::kUffdAsync;
      else if (value == "checksum") cfg.dirty_log = DirtyLogChoice::kChecksum;
      else return bad("invalid value '" + std::string(value) + "' for 'dirty-log': expected auto, qemu, uffd, uffd-async or checksum");
      continue;
    }
    if (key == "log") {
      if (value.empty()) return bad("'log' needs a file name");
      cfg.log_file = std::string(value);
      continue;
    }
    if (key == "max-vmas") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n, 10);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n < 1 || n > 100000000)
        return bad("invalid value '" + std::string(value) + "' for 'max-vmas': expected an integer 1..100000000");
      cfg.max_vmas = n;
      continue;
    }
    if (!IsEngineKey(key)) {
      return bad("unknown key '" + key +
                 "' (known: run, pages-to-scan, sleep-ms, delay, use-zero-pages, max-page-sharing, new-ratio, "
                 "mode, dirty-log, log, max-vmas)");
    }
    if (key == "run" && value == "2")
      return bad("invalid value '2' for 'run': expected 0 or 1 at start-up (use QMP pksm-set-parameters to unmerge)");
    std::string err = cfg.params.Set(key, value);
    if (!err.empty()) return bad(err);
  }
  std::string err = cfg.params.Validate();
  if (!err.empty()) return "pksm: invalid plugin arguments: " + err;
  *out = cfg;
  return "";
}

}  // namespace pksm::plugin
