// block_filter: see block_filter.h. The order of the checks decides which
// reason an operator sees when several apply: the most fundamental first.
#include "qemu-plugin/block_filter.h"

#include "pksm/page.h"

namespace pksm::plugin {

std::string SkipReason(const BlockFacts& b) {
  if (b.host == 0) return "no-host-memory";
  if (!b.is_ram || b.readonly || b.rom_device) return "read-only";
  if (b.ram_device) return "ram-device";
  if (b.discard_manager) return "discard-manager";
  if (b.display_dirty_log) return "display-dirty-log";
  if (b.fd != -1 || b.shared) return "shared";
  if (b.page_size != kPageSize) return "hugepages";
  if (b.host % kPageSize != 0 || b.used_length % kPageSize != 0 || b.used_length == 0) return "not-page-aligned";
  return "";
}

}  // namespace pksm::plugin
