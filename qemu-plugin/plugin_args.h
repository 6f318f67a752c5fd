// plugin_args: the -plugin libpksm-qemu.so,KEY=VALUE,... arguments.
//
// Pure parsing, no QEMU: qemu_plugin_install hands argv here and refuses to
// start QEMU (non-zero return) with the returned message when it is not
// empty. The message always names the offending argument as the operator
// wrote it, so a typo in a libvirt domain or a launch script is found fast.
#ifndef PKSM_QEMU_PLUGIN_PLUGIN_ARGS_H_
#define PKSM_QEMU_PLUGIN_PLUGIN_ARGS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "pksm/params.h"

namespace pksm::plugin {

// Which dirty log drives the engine (the dirty-log= key).
enum class DirtyLogChoice {
  kAuto,      // QEMU's memory API when possible, else userfaultfd, else checksums
  kQemu,      // QEMU's dirty log (VGA client bits); refuse to merge without it
  kUffd,      // the userfaultfd provider of the Linux real-memory layer
  kUffdAsync, // its asynchronous provider (WP_ASYNC + PAGEMAP_SCAN; opt-in)
  kChecksum,  // no dirty log: xxh3 checksums of whole pages, like the kernel
};

const char* ToString(DirtyLogChoice c);

struct PluginConfig {
  Params params;                              // engine parameters (run 0|1 only)
  DirtyLogChoice dirty_log = DirtyLogChoice::kAuto;
  std::string log_file;                       // log=FILE: scanner log lines ("" = none)
  uint64_t max_vmas = 0;                      // max-vmas=N: VMA budget (0 = from vm.max_map_count)
};

// Parses argv[0..argc-1], each "key=value" as QEMU passes them. Keys:
// run (0|1), pages-to-scan, sleep-ms, delay, use-zero-pages, max-page-sharing,
// new-ratio, mode (pksm|ksm), dirty-log (auto|qemu|uffd|checksum), log,
// max-vmas (mappings pksm may create; default derived from vm.max_map_count).
// Underscores are accepted for dashes. Returns "" and fills *out, or an error
// naming the argument (nothing in *out is meaningful then).
std::string ParsePluginArgs(int argc, const char* const* argv, PluginConfig* out);

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_PLUGIN_ARGS_H_
