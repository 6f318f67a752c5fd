// block_filter: which QEMU RAM blocks pksm may deduplicate, and why not.
//
// Only plain guest RAM is safe to remap: private anonymous memory of 4 KiB
// pages that no device owns and no other process maps. Everything else is
// skipped with a reason that QMP's skipped-blocks shows:
//   read-only          ROMs, option ROMs, firmware blobs (readonly / rom_device)
//   ram-device         device memory (e.g. VFIO BARs)
//   discard-manager    virtio-mem memory (unplugged parts must not be touched)
//   display-dirty-log  a display device owns the region's VGA dirty bits
//   shared             fd-backed or share=on memory: a private remap would
//                      silently end the sharing (vhost-user, other processes)
//   hugepages          not 4 KiB pages (hugetlbfs)
//   not-page-aligned   host address or size not a multiple of 4 KiB
//   no-host-memory     the block has no host mapping
#ifndef PKSM_QEMU_PLUGIN_BLOCK_FILTER_H_
#define PKSM_QEMU_PLUGIN_BLOCK_FILTER_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace pksm::plugin {

// What the plugin learns about one RAM block (all read under the BQL).
struct BlockFacts {
  std::string name;
  uintptr_t host = 0;
  uint64_t offset = 0;       // start in ram_addr space
  uint64_t used_length = 0;  // bytes
  size_t page_size = 0;
  int fd = -1;
  bool shared = false;
  bool is_ram = true;        // MemoryRegion.ram
  bool readonly = false;
  bool rom_device = false;
  bool ram_device = false;
  bool discard_manager = false;
  bool display_dirty_log = false;  // VGA client logging on the region
};

// "" when pksm may scan the block, otherwise the reason (see above).
std::string SkipReason(const BlockFacts& b);

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_BLOCK_FILTER_H_
