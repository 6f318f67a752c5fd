#include "qemu-plugin/block_filter.h"

#include <gtest/gtest.h>

namespace pksm::plugin {
namespace {

BlockFacts GuestRam() {
  BlockFacts b;
  b.name = "pc.ram";
  b.host = 0x7f0000000000;
  b.used_length = 512u << 20;
  b.page_size = 4096;
  return b;
}

TEST(BlockFilterTest, PlainGuestRamIsScanned) { EXPECT_EQ(SkipReason(GuestRam()), ""); }

TEST(BlockFilterTest, EachKindOfNonGuestRamIsSkippedWithItsReason) {
  struct Case {
    void (*change)(BlockFacts*);
    const char* reason;
  } cases[] = {
      {[](BlockFacts* b) { b->readonly = true; }, "read-only"},
      {[](BlockFacts* b) { b->rom_device = true; }, "read-only"},
      {[](BlockFacts* b) { b->is_ram = false; }, "read-only"},
      {[](BlockFacts* b) { b->ram_device = true; }, "ram-device"},
      {[](BlockFacts* b) { b->discard_manager = true; }, "discard-manager"},
      {[](BlockFacts* b) { b->display_dirty_log = true; }, "display-dirty-log"},
      {[](BlockFacts* b) { b->fd = 7; }, "shared"},
      {[](BlockFacts* b) { b->shared = true; }, "shared"},
      {[](BlockFacts* b) { b->page_size = 2u << 20; }, "hugepages"},
      {[](BlockFacts* b) { b->host += 8; }, "not-page-aligned"},
      {[](BlockFacts* b) { b->used_length = 100; }, "not-page-aligned"},
      {[](BlockFacts* b) { b->host = 0; }, "no-host-memory"},
  };
  for (const Case& c : cases) {
    BlockFacts b = GuestRam();
    c.change(&b);
    EXPECT_EQ(SkipReason(b), c.reason);
  }
}

TEST(BlockFilterTest, VgaVramIsSkippedEvenThoughWritable) {
  BlockFacts b = GuestRam();
  b.name = "0000:00:02.0/vga.vram";
  b.display_dirty_log = true;
  EXPECT_EQ(SkipReason(b), "display-dirty-log");
}

}  // namespace
}  // namespace pksm::plugin
