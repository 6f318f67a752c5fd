// ram_blocks: see ram_blocks.h.
#include "qemu-plugin/ram_blocks.h"

namespace pksm::plugin {

using qemu::api;

namespace {

int CollectBlock(RAMBlock* rb, void* opaque) {
  auto* out = static_cast<std::vector<RamBlockInfo>*>(opaque);
  RamBlockInfo info;
  info.block = rb;
  BlockFacts& f = info.facts;
  const char* name = api.qemu_ram_get_idstr(rb);
  f.name = name ? name : "";
  void* host = api.qemu_ram_get_host_addr(rb);
  f.host = reinterpret_cast<uintptr_t>(host);
  f.offset = api.qemu_ram_get_offset(rb);
  f.used_length = api.qemu_ram_get_used_length(rb);
  f.page_size = api.qemu_ram_pagesize(rb);
  f.fd = api.qemu_ram_get_fd(rb);
  f.shared = api.qemu_ram_is_shared(rb);
  if (host != nullptr) {
    ram_addr_t offset_in_block = 0;
    info.mr = api.memory_region_from_host(host, &offset_in_block);
  }
  if (info.mr != nullptr) {
    // A memory backend no device uses yet has no idstr (vmstate_register_ram
    // sets it); its region is named after the backend's id.
    if (f.name.empty()) {
      const char* mr_name = api.memory_region_name(info.mr);
      f.name = mr_name ? mr_name : "";
    }
    f.is_ram = qemu::MemoryRegionIsRam(info.mr);
    f.readonly = qemu::MemoryRegionIsReadonly(info.mr);
    f.rom_device = qemu::MemoryRegionIsRomDevice(info.mr);
    f.ram_device = api.memory_region_is_ram_device(info.mr);
    f.discard_manager = api.memory_region_get_ram_discard_manager(info.mr) != nullptr;
    f.display_dirty_log = (api.memory_region_get_dirty_log_mask(info.mr) & qemu::kDirtyLogMaskVga) != 0;
  } else {
    f.host = 0;  // reported as no-host-memory
  }
  out->push_back(std::move(info));
  return 0;
}

}  // namespace

std::vector<RamBlockInfo> ListRamBlocks() {
  std::vector<RamBlockInfo> out;
  api.qemu_ram_foreach_block(&CollectBlock, &out);
  return out;
}

}  // namespace pksm::plugin
