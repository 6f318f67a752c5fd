// QemuDirtyLog: the engine's DirtyLog over QEMU's own dirty bitmaps.
//
// QEMU already tracks guest writes per page for its display and migration
// clients; under TCG every vCPU store sets them, under KVM they come from
// KVM_GET_DIRTY_LOG. pksm turns global logging on under its own flag
// (GLOBAL_DIRTY_LIMIT, unused under TCG and under KVM without a dirty ring)
// and reads-and-clears the VGA client's bits of the blocks it scans -- never
// DIRTY_MEMORY_MIGRATION, which only live migration may consume. It never
// stops the flag (stopping a flag someone else cleared aborts QEMU); it only
// starts it again if it finds it cleared.
//
// The bitmaps may only be touched under the BQL, but the engine harvests in
// its Step, which runs without it. So Snapshot() runs under the BQL before
// each Step and ORs the bits into private per-region bitmaps; Harvest()
// then hands them over (and clears them) without any QEMU call. DMA writes
// do not reach the VGA bits: that is fine, since every merge re-compares the
// page under write protection.
#ifndef PKSM_QEMU_PLUGIN_QEMU_DIRTY_LOG_H_
#define PKSM_QEMU_PLUGIN_QEMU_DIRTY_LOG_H_

#include <cstdint>
#include <map>
#include <vector>

#include "pksm/dirty_log.h"
#include "qemu-plugin/qemu_api.h"

namespace pksm::plugin {

class QemuDirtyLog : public DirtyLog {
 public:
  std::string_view Name() const override { return "qemu"; }
  // Snapshot() did the QEMU side already; true if one ran since the last
  // Sync() (the engine counts those as observations).
  bool Sync() override;
  void Harvest(RegionId region, size_t pages, uint64_t* dirty) override;

  // --- the owner's thread, BQL held ---

  // Makes sure pksm's global dirty-log flag is set.
  void EnsureStarted();
  // Before a migration starts (its SETUP notification): drops pksm's flag
  // if it is set, so that the migration's own start finds dirty tracking
  // off and does what it does on a plain QEMU -- re-render the memory map,
  // which under TCG flushes every vCPU's TLB. QEMU 7.2's bitmap sync does
  // not reset TCG's TLB dirty state in its fast path (fixed upstream in
  // 9.0, "physmem: Fix migration dirty bitmap coherency with TCG memory
  // access"); without that flush, stores through TLB entries filled before
  // the migration (kernel pages with global mappings) escape the migration
  // bitmap and the destination guest is corrupted. Verified: a migration
  // from a TCG source with the flag left on crashed the destination kernel
  // (list corruption); with this, it passes. Snapshot() starts the flag
  // again once merging resumes. A QEMU call: do not hold locks notifiers take.
  void StopForMigration();
  // Pages written while the flag is off may be missed (under KVM): treat
  // every page as written at the next harvest.
  void MarkAllDirty();
  // Starts following a block. QEMU's bitmap for it holds every write since
  // the RAM was allocated, so the first snapshot after this is a baseline:
  // it is read and cleared, and its bits are dropped. From then on the block
  // reports writes since the baseline; before it, nothing (the engine waits
  // for two observations after Track() before it judges a page).
  void AddBlock(RegionId id, MemoryRegion* mr, uint64_t ram_offset, size_t pages);
  void RemoveBlock(RegionId id);
  // Syncs QEMU's log and moves every followed block's VGA bits into the
  // private bitmaps. BEWARE: QEMU may drop and retake the BQL inside (TCG
  // waits for vCPUs to reset their TLBs), so notifiers may run during this
  // call; it copes with blocks removed meanwhile, and its caller must not
  // hold locks those notifiers take.
  void Snapshot();

 private:
  struct Block {
    MemoryRegion* mr = nullptr;
    uint64_t ram_offset = 0;
    size_t pages = 0;
    std::vector<uint64_t> bits;
    bool baseline_pending = true;
  };
  bool observed_ = false;  // a Snapshot() ran since the last Sync()
  std::map<RegionId, Block> blocks_;
};

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_QEMU_DIRTY_LOG_H_
