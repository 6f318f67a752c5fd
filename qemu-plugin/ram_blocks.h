// ram_blocks: the RAM blocks of the running QEMU, with the facts the block
// filter needs. Call with the BQL held (qemu_ram_foreach_block takes the RCU
// read lock itself; the BQL keeps every listed block and its host mapping
// alive until it is released).
#ifndef PKSM_QEMU_PLUGIN_RAM_BLOCKS_H_
#define PKSM_QEMU_PLUGIN_RAM_BLOCKS_H_

#include <vector>

#include "qemu-plugin/block_filter.h"
#include "qemu-plugin/qemu_api.h"

namespace pksm::plugin {

struct RamBlockInfo {
  BlockFacts facts;
  RAMBlock* block = nullptr;
  MemoryRegion* mr = nullptr;
};

std::vector<RamBlockInfo> ListRamBlocks();

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_RAM_BLOCKS_H_
