// QemuDirtyLog: see qemu_dirty_log.h.
#include "qemu-plugin/qemu_dirty_log.h"

#include <algorithm>

#include "pksm/page.h"

namespace pksm::plugin {

using qemu::api;

namespace {
size_t Words(size_t pages) { return (pages + 63) / 64; }
}  // namespace

void QemuDirtyLog::EnsureStarted() {
  if ((*api.global_dirty_tracking & qemu::kGlobalDirtyLimit) == 0)
    api.memory_global_dirty_log_start(qemu::kGlobalDirtyLimit);
}

void QemuDirtyLog::StopForMigration() {
  // Only ever stop a flag that is set (stopping an unset flag aborts QEMU);
  // GLOBAL_DIRTY_LIMIT is pksm's own under TCG and KVM without a dirty ring.
  if ((*api.global_dirty_tracking & qemu::kGlobalDirtyLimit) != 0)
    api.memory_global_dirty_log_stop(qemu::kGlobalDirtyLimit);
}

void QemuDirtyLog::MarkAllDirty() {
  for (auto& [id, b] : blocks_) {
    for (uint64_t& w : b.bits) w = ~uint64_t{0};
    if (b.pages % 64) b.bits.back() = (uint64_t{1} << (b.pages % 64)) - 1;
  }
}

void QemuDirtyLog::AddBlock(RegionId id, MemoryRegion* mr, uint64_t ram_offset, size_t pages) {
  Block b;
  b.mr = mr;
  b.ram_offset = ram_offset;
  b.pages = pages;
  b.bits.assign(Words(pages), 0);
  blocks_[id] = std::move(b);
}

void QemuDirtyLog::RemoveBlock(RegionId id) { blocks_.erase(id); }

bool QemuDirtyLog::Sync() {
  bool o = observed_;
  observed_ = false;
  return o;
}

void QemuDirtyLog::Snapshot() {
  if (blocks_.empty()) return;
  observed_ = true;
  EnsureStarted();
  api.memory_global_dirty_log_sync();
  // memory_region_snapshot_and_clear_dirty() may drop the BQL while it
  // waits for vCPUs (TCG TLB reset through run_on_cpu): RAM block notifiers
  // can run meanwhile and remove blocks (RemoveBlock). So walk a copy of the
  // ids and look each block up again after every QEMU call.
  std::vector<RegionId> ids;
  for (auto& [id, b] : blocks_) ids.push_back(id);
  for (RegionId id : ids) {
    auto it = blocks_.find(id);
    if (it == blocks_.end()) continue;
    MemoryRegion* mr = it->second.mr;
    const size_t pages = it->second.pages;
    DirtyBitmapSnapshot* snap =
        api.memory_region_snapshot_and_clear_dirty(mr, 0, pages * kPageSize, qemu::kDirtyMemoryVga);
    it = blocks_.find(id);
    if (it == blocks_.end()) {
      if (snap) api.g_free(snap);
      continue;
    }
    Block& b = it->second;
    if (snap == nullptr) {
      // Cannot tell: treat everything as written (never miss a write).
      for (uint64_t& w : b.bits) w = ~uint64_t{0};
      if (b.pages % 64) b.bits.back() = (uint64_t{1} << (b.pages % 64)) - 1;
      continue;
    }
    if (b.baseline_pending) {  // see AddBlock
      b.baseline_pending = false;
      api.g_free(snap);
      continue;
    }
    // Bit i of the snapshot is the page at ram_addr snap->start + i * 4096.
    const uint64_t first_bit = (b.ram_offset - snap->start) / kPageSize;
    const uint64_t snap_bits = (snap->end - snap->start) / kPageSize;
    const auto* words = reinterpret_cast<const uint64_t*>(snap + 1);
    static_assert(sizeof(unsigned long) == sizeof(uint64_t));
    if (first_bit % 64 == 0) {
      // Blocks start on 256 KiB boundaries in ram_addr space: word aligned.
      const uint64_t base = first_bit / 64;
      for (size_t w = 0; w < b.bits.size() && (w * 64 + first_bit) < snap_bits; ++w) b.bits[w] |= words[base + w];
      if (b.pages % 64) b.bits.back() &= (uint64_t{1} << (b.pages % 64)) - 1;
    } else {
      for (size_t p = 0; p < b.pages && first_bit + p < snap_bits; ++p) {
        uint64_t bit = first_bit + p;
        if ((words[bit / 64] >> (bit % 64)) & 1) b.bits[p / 64] |= uint64_t{1} << (p % 64);
      }
    }
    api.g_free(snap);
  }
}

void QemuDirtyLog::Harvest(RegionId region, size_t pages, uint64_t* dirty) {
  auto it = blocks_.find(region);
  if (it == blocks_.end()) return;
  Block& b = it->second;
  size_t words = Words(std::min(pages, b.pages));
  for (size_t w = 0; w < words; ++w) {
    uint64_t bits = b.bits[w];
    if (w == words - 1 && pages % 64 && pages < b.pages + 64) {
      size_t valid = std::min(pages, b.pages) - w * 64;
      if (valid < 64) bits &= (uint64_t{1} << valid) - 1;
    }
    dirty[w] |= bits;
    b.bits[w] = 0;
  }
}

}  // namespace pksm::plugin
