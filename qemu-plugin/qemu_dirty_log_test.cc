// QemuDirtyLog against a fake QEMU: the api table is filled with test
// functions, so the bit bookkeeping (snapshot windows rounded to 256 KiB,
// block offsets in ram_addr space, private accumulation, harvest-and-clear)
// is checked without a QEMU process.
#include "qemu-plugin/qemu_dirty_log.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace pksm::plugin {
namespace {

using qemu::api;

// The fake QEMU: one global dirty bitmap over ram_addr space.
struct FakeQemu {
  unsigned global_dirty_tracking = 0;
  int starts = 0;
  int syncs = 0;
  std::vector<uint64_t> vga;  // bit per 4 KiB page of ram_addr space
  uint64_t block_offset = 0;  // ram_addr of the (single) fake MemoryRegion
};
FakeQemu* fake = nullptr;

void FakeStart(unsigned flags) {
  fake->global_dirty_tracking |= flags;
  ++fake->starts;
}
void FakeSync() { ++fake->syncs; }
void FakeFree(void* p) { std::free(p); }

// As QEMU: the window is rounded out to 64 pages; bits are returned and
// cleared for the whole window.
DirtyBitmapSnapshot* FakeSnapshot(MemoryRegion*, hwaddr addr, hwaddr size, unsigned client) {
  EXPECT_EQ(client, 0u);  // only ever the VGA client
  uint64_t first = (fake->block_offset + addr) / 4096, last = (fake->block_offset + addr + size) / 4096;
  uint64_t start = first / 64 * 64, end = (last + 63) / 64 * 64;
  size_t words = (end - start) / 64;
  auto* snap = static_cast<DirtyBitmapSnapshot*>(std::calloc(1, sizeof(DirtyBitmapSnapshot) + words * 8));
  snap->start = start * 4096;
  snap->end = end * 4096;
  auto* bits = reinterpret_cast<uint64_t*>(snap + 1);
  for (size_t w = 0; w < words; ++w) {
    bits[w] = fake->vga[start / 64 + w];
    fake->vga[start / 64 + w] = 0;
  }
  return snap;
}

class QemuDirtyLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake = &state_;
    state_.vga.assign(4096, 0);
    api.global_dirty_tracking = &state_.global_dirty_tracking;
    api.memory_global_dirty_log_start = &FakeStart;
    api.memory_global_dirty_log_sync = &FakeSync;
    api.memory_region_snapshot_and_clear_dirty = &FakeSnapshot;
    api.g_free = &FakeFree;
  }
  void TearDown() override {
    api = qemu::Api();
    fake = nullptr;
  }
  void Write(uint64_t block_page) {
    uint64_t bit = state_.block_offset / 4096 + block_page;
    state_.vga[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  std::vector<uint64_t> Harvest(QemuDirtyLog& log, size_t pages) {
    std::vector<uint64_t> dirty((pages + 63) / 64, 0);
    log.Harvest(1, pages, dirty.data());
    return dirty;
  }
  static bool Bit(const std::vector<uint64_t>& d, size_t p) { return (d[p / 64] >> (p % 64)) & 1; }

  FakeQemu state_;
  MemoryRegion* mr_ = reinterpret_cast<MemoryRegion*>(0x1000);
};

// QEMU's bitmap holds every write since the RAM was allocated: the first
// snapshot after AddBlock is a baseline whose bits are dropped; after it,
// only writes are reported. Sync() says whether a snapshot ran since.
TEST_F(QemuDirtyLogTest, NewBlockStartsFromABaselineThenReportsOnlyWrites) {
  state_.block_offset = 64 * 4096 * 3;  // 256 KiB aligned, as QEMU places blocks
  QemuDirtyLog log;
  const size_t pages = 200;  // not a multiple of 64
  for (size_t p = 0; p < pages; ++p) Write(p);  // boot-time writes, before pksm
  log.AddBlock(1, mr_, state_.block_offset, pages);
  EXPECT_FALSE(log.Sync());
  auto d = Harvest(log, pages);
  for (uint64_t w : d) EXPECT_EQ(w, 0u) << "nothing is known before the baseline";
  log.Snapshot();
  EXPECT_TRUE(log.Sync());
  EXPECT_FALSE(log.Sync()) << "one observation per snapshot";
  EXPECT_EQ(state_.global_dirty_tracking, qemu::kGlobalDirtyLimit);
  d = Harvest(log, pages);
  for (uint64_t w : d) EXPECT_EQ(w, 0u) << "the baseline's bits are dropped";

  Write(0);
  Write(63);
  Write(64);
  Write(199);
  log.Snapshot();
  d = Harvest(log, pages);
  for (size_t p = 0; p < pages; ++p) EXPECT_EQ(Bit(d, p), p == 0 || p == 63 || p == 64 || p == 199) << p;
  EXPECT_EQ(d.back() >> (pages % 64), 0u);  // nothing past the end
  d = Harvest(log, pages);  // harvested bits are forgotten
  for (uint64_t w : d) EXPECT_EQ(w, 0u);
}

TEST_F(QemuDirtyLogTest, UnalignedBlockOffsetIsHandled) {
  state_.block_offset = 5 * 4096;  // not word aligned in the bitmap
  QemuDirtyLog log;
  log.AddBlock(1, mr_, state_.block_offset, 100);
  log.Snapshot();
  Harvest(log, 100);
  Write(3);
  Write(99);
  log.Snapshot();
  auto d = Harvest(log, 100);
  for (size_t p = 0; p < 100; ++p) EXPECT_EQ(Bit(d, p), p == 3 || p == 99) << p;
}

TEST_F(QemuDirtyLogTest, BitsAccumulateAcrossSnapshotsUntilHarvested) {
  QemuDirtyLog log;
  log.AddBlock(1, mr_, 0, 128);
  log.Snapshot();
  Harvest(log, 128);
  Write(10);
  log.Snapshot();
  Write(100);
  log.Snapshot();  // the engine did not step in between (run 0, paused)
  auto d = Harvest(log, 128);
  EXPECT_TRUE(Bit(d, 10));
  EXPECT_TRUE(Bit(d, 100));
  EXPECT_FALSE(Bit(d, 11));
}

TEST_F(QemuDirtyLogTest, FlagIsRestartedIfSomeoneClearedIt) {
  QemuDirtyLog log;
  log.AddBlock(1, mr_, 0, 64);
  log.Snapshot();
  EXPECT_EQ(state_.starts, 1);
  log.Snapshot();
  EXPECT_EQ(state_.starts, 1);  // already set: not started twice
  state_.global_dirty_tracking = 0;
  log.Snapshot();
  EXPECT_EQ(state_.starts, 2);
}

TEST_F(QemuDirtyLogTest, MarkAllDirtyAndRemovedBlocks) {
  QemuDirtyLog log;
  log.AddBlock(1, mr_, 0, 64);
  log.Snapshot();
  Harvest(log, 64);
  log.MarkAllDirty();
  auto d = Harvest(log, 64);
  EXPECT_EQ(d[0], ~uint64_t{0});
  log.RemoveBlock(1);
  Write(5);
  log.Snapshot();  // no block: no QEMU call, nothing reported
  d = Harvest(log, 64);
  EXPECT_EQ(d[0], 0u);
}

}  // namespace
}  // namespace pksm::plugin
