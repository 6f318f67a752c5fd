// Scanner: the plugin's engine thread and everything it owns.
//
// One thread owns the Engine, the ProcessMemory (userfaultfd + pool) and the
// QEMU dirty log, and runs rounds:
//
//   take the newest requested parameters
//   BQL:   follow RAM blocks (add / drop regions), decide whether QEMU's
//          state allows merging (migration, snapshot, incoming, pinned
//          memory), snapshot the dirty log, emit queued events,
//          enter an RCU read section                     (short: ~1-2 ms)
//   no BQL: Engine::Step(pages_to_scan)                  (compares, merges)
//          leave the RCU read section
//   publish statistics, sleep sleep-ms (woken early by QMP)
//
// Guest memory is only touched inside the RCU read section, which is entered
// with the BQL held and after the block list was checked: a block removed
// meanwhile cannot be unmapped (QEMU frees RAM blocks through call_rcu)
// until the section ends.
//
// Main-thread hooks (notifiers, which hold the BQL) must act on the engine
// or the ProcessMemory synchronously -- a removed block must leave
// userfaultfd before QEMU unmaps it, and a migration must find merging
// stopped. They take owner_mu_, which the scanner holds for the whole of a
// round except while it waits for the BQL, sleeps, or is inside a QEMU call
// that may drop the BQL. Lock order: BQL, then owner_mu_; the scanner never
// waits for the BQL while holding owner_mu_, so a notifier waits at most for
// one Step.
//
// Trap (found the hard way): "holding the BQL" is not atomic across QEMU
// calls. memory_region_snapshot_and_clear_dirty() under TCG waits for the
// vCPUs with run_on_cpu(), which drops and retakes the BQL; a notifier that
// ran meanwhile and blocked on owner_mu_ deadlocked QEMU. So no QEMU call
// that can drop the BQL is made while holding owner_mu_, on either side.
#ifndef PKSM_QEMU_PLUGIN_SCANNER_H_
#define PKSM_QEMU_PLUGIN_SCANNER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "pksm/engine.h"
#include "pksm/linux/process_memory.h"
#include "qemu-plugin/control.h"
#include "qemu-plugin/plugin_args.h"
#include "qemu-plugin/qemu_api.h"
#include "qemu-plugin/qemu_dirty_log.h"
#include "qemu-plugin/ram_blocks.h"

namespace pksm::plugin {

class Scanner {
 public:
  Scanner(const PluginConfig& config, Control* control);
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // At install, main thread, BQL held: opens the real-memory layer, picks
  // the dirty log, builds the engine. "" or an error.
  std::string Init();
  // Starts the scanner thread (detached; it is never joined).
  void Start();

  // --- main thread, BQL held ---
  void OnMigrationStateChange(MigrationState* s);
  void OnBlockRemoved(void* host, size_t size);
  void OnBlockResized(void* host, size_t old_size, size_t new_size);
  // Machine and -device devices are created: rounds may start. Before it,
  // QEMU's initialisation drops the BQL (vCPU creation waits for threads),
  // and a round then could take the discard hold before virtio-mem is
  // realized (which would make QEMU refuse to start).
  void OnMachineReady();
  // Exit notifier: stops the thread (waits for a running Step, at most 2 s).
  void OnExit();
  // Emits queued events (also called by the QMP handlers).
  void FlushEvents();

 private:
  struct Region {
    RegionId id = 0;
    std::string name;
    uintptr_t host = 0;
    uint64_t size = 0;
    uint64_t ram_offset = 0;
    RAMBlock* block = nullptr;
  };

  static void* ThreadMain(void* opaque);
  void Loop();
  void Round();
  // With the BQL held and owner_mu_ locked. Returns whether to Step.
  bool PrepareUnderBql();
  void FollowBlocks();
  bool AddRegion(const RamBlockInfo& b, std::string* why);
  void DropRegion(RegionId id);
  void DropRegionsAt(uintptr_t host);
  std::string PauseReason();
  void SetPaused(const std::string& reason);
  void UpdateDiscardHold(bool active);
  void AfterStep(uint32_t run_before);
  void Publish();
  void Log(const std::string& line);

  const PluginConfig config_;
  Control* const control_;

  std::timed_mutex owner_mu_;
  std::atomic<bool> machine_ready_{false};

  // Owned by the scanner (guarded by owner_mu_).
  std::unique_ptr<ProcessMemory> memory_;
  std::unique_ptr<QemuDirtyLog> qemu_dirty_log_;
  std::unique_ptr<Engine> engine_;
  std::string dirty_log_name_;
  std::map<RegionId, Region> regions_;
  std::vector<SkippedReport> skipped_;
  // Blocks whose userfaultfd registration failed (by host address): not
  // retried every round, only after the next successful Resume().
  std::set<uintptr_t> add_failed_;
  RegionId next_region_id_ = 1;
  bool suspended_ = false;          // ProcessMemory's uffd registrations dropped
  std::string paused_reason_;       // "" = QEMU state allows merging
  bool migration_seen_ = false;     // between the SETUP and cleanup notifications
  bool discard_held_ = false;       // we hold ram_block_discard_disable(true)
  bool budget_exhausted_ = false;
  std::chrono::steady_clock::time_point resume_retry_at_{};  // after a failed Resume()
  // QEMU's dirty log is synced at most every kSnapshotInterval (see Round()).
  std::chrono::steady_clock::time_point last_snapshot_{};
  uint64_t last_budget_refusals_ = 0;
  uint64_t scanner_cpu_ns_ = 0;
};

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_SCANNER_H_
