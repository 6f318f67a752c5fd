// Scanner: see scanner.h for the round structure and the locking rules.
#include "qemu-plugin/scanner.h"

#include <sys/time.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <set>

#include "pksm/page.h"

namespace pksm::plugin {

using qemu::api;

namespace {

constexpr int kRunStateRestoreVm = 8;
constexpr int kRunStateSaveVm = 10;
// Least time between two syncs of QEMU's dirty log (see Scanner::Round).
constexpr auto kSnapshotInterval = std::chrono::milliseconds(250);

uint64_t ThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

Scanner::Scanner(const PluginConfig& config, Control* control) : config_(config), control_(control) {}

std::string Scanner::Init() {
  ProcessMemoryOptions opts;
  bool use_qemu_log = false;
  switch (config_.dirty_log) {
    case DirtyLogChoice::kQemu:
      use_qemu_log = true;
      opts.dirty_log = DirtyLogKind::kChecksum;  // the Linux layer only merges
      break;
    case DirtyLogChoice::kUffd:
      opts.dirty_log = DirtyLogKind::kUffdSync;
      break;
    case DirtyLogChoice::kUffdAsync:
      opts.dirty_log = DirtyLogKind::kUffdAsync;
      break;
    case DirtyLogChoice::kChecksum:
      opts.dirty_log = DirtyLogKind::kChecksum;
      break;
    case DirtyLogChoice::kAuto:
      // GLOBAL_DIRTY_LIMIT belongs to set-vcpu-dirty-limit under KVM with a
      // dirty ring; only there is QEMU's log unusable for pksm.
      if (*api.kvm_allowed && api.kvm_dirty_ring_enabled()) {
        opts.dirty_log = DirtyLogKind::kAuto;
      } else {
        use_qemu_log = true;
        opts.dirty_log = DirtyLogKind::kChecksum;
      }
      break;
  }
  if (config_.dirty_log == DirtyLogChoice::kQemu && *api.kvm_allowed && api.kvm_dirty_ring_enabled())
    return "dirty-log=qemu is not available with a KVM dirty ring (its flag belongs to the dirty limit); "
           "use dirty-log=uffd or auto";
  if (!config_.log_file.empty()) {
    std::string path = config_.log_file;
    opts.log = [path](const std::string& line) {
      if (FILE* f = std::fopen(path.c_str(), "a")) {
        std::fprintf(f, "pksm: %s\n", line.c_str());
        std::fclose(f);
      }
    };
  }
  opts.max_vmas = config_.max_vmas;
  std::string err;
  memory_ = ProcessMemory::Create(opts, &err);
  if (memory_ == nullptr) return "cannot set up real-memory merging: " + err;
  DirtyLog* dirty_log = nullptr;
  if (use_qemu_log) {
    qemu_dirty_log_ = std::make_unique<QemuDirtyLog>();
    dirty_log = qemu_dirty_log_.get();
    dirty_log_name_ = "qemu";
  } else {
    dirty_log = memory_->dirty_log();
    dirty_log_name_ = memory_->dirty_log_name();
    if (config_.dirty_log == DirtyLogChoice::kUffd && dirty_log == nullptr)
      return "dirty-log=uffd is not available: " + memory_->unavailable_reason();
  }
  if (!memory_->merging_enabled())
    Log("merging is unavailable (" + memory_->unavailable_reason() + "); pksm stays paused");
  engine_ = std::make_unique<Engine>(memory_->memory(), memory_->merger(), dirty_log, config_.params);
  Publish();
  return "";
}

void Scanner::Start() {
  static QemuThread thread;  // QEMU_THREAD_DETACHED: never joined
  api.qemu_thread_create(&thread, "pksm-scanner", &Scanner::ThreadMain, this, qemu::kQemuThreadDetached);
}

void* Scanner::ThreadMain(void* opaque) {
  try {
    static_cast<Scanner*>(opaque)->Loop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pksm: scanner thread stopped: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "pksm: scanner thread stopped by an unknown exception\n");
  }
  return nullptr;
}

void Scanner::Loop() {
  api.rcu_register_thread();
  while (!control_->stop_requested()) {
    Round();
    if (control_->stop_requested()) break;
    uint32_t sleep_ms = control_->params().sleep_millisecs;
    control_->Sleep(sleep_ms);
  }
  api.rcu_unregister_thread();
}

void Scanner::Round() {
  // Waiting for the BQL without holding owner_mu_ (lock order BQL -> owner).
  qemu::LockBql();
  if (control_->stop_requested() || !machine_ready_.load()) {
    qemu::UnlockBql();
    return;
  }
  std::unique_lock<std::timed_mutex> owner(owner_mu_);
  Params requested;
  if (control_->TakeParams(&requested)) {
    std::string err = engine_->SetParams(requested);
    if (!err.empty()) Log("parameters refused by the engine: " + err);
  }
  bool step = PrepareUnderBql();
  // Syncing QEMU's dirty log is not free for the guest: under TCG every
  // snapshot re-arms the slow path for the next store to each cleared page,
  // and under KVM it re-protects them. Taking it on every wake-up (50 times
  // a second at sleep-ms=20) cost a guest that keeps writing ~8% of its
  // memory throughput and doubled the scanner's CPU (scripts/bench-guest.sh);
  // a page is visited only once per pass (seconds), so fresher bits buy
  // nothing. Between snapshots the engine just finds no new bits: merges are
  // still decided under write protection, so nothing can be lost.
  const auto now = std::chrono::steady_clock::now();
  if (step && qemu_dirty_log_ && now - last_snapshot_ >= kSnapshotInterval) {
    last_snapshot_ = now;
    // QEMU may drop the BQL inside the snapshot (see QemuDirtyLog); the
    // notifiers that then run need owner_mu_, so let go of it meanwhile
    // and look at the state again afterwards.
    owner.unlock();
    qemu_dirty_log_->Snapshot();
    owner.lock();
    step = !suspended_ && paused_reason_.empty() && !regions_.empty() && engine_->params().run != 0;
  }
  if (step) qemu::RcuReadLock();  // entered with the BQL held: see scanner.h
  FlushEvents();
  qemu::UnlockBql();

  uint32_t run_before = engine_->params().run;
  if (step) {
    engine_->Step(engine_->params().pages_to_scan);
    qemu::RcuReadUnlock();
  }
  scanner_cpu_ns_ = ThreadCpuNs();
  AfterStep(run_before);
  Publish();
}

bool Scanner::PrepareUnderBql() {
  std::string reason = PauseReason();
  const bool run = engine_->params().run != 0;
  bool active = run && reason.empty();
  UpdateDiscardHold(active);
  if (active && !discard_held_) {
    // Someone requires discards (virtio-mem): merged non-zero pages would
    // read their old content after a discard instead of zeros.
    reason = "discard-required";
    active = false;
  }
  SetPaused(reason);
  if (!active && !suspended_) {
    memory_->Suspend();
    suspended_ = true;
  } else if (active && suspended_) {
    std::string err;
    if (!memory_->Resume(&err)) {
      // Probably another userfaultfd owns the memory now: retry in a while
      // rather than every round.
      Log("cannot resume merging: " + err + " (retrying in 5 s)");
      resume_retry_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      SetPaused("uffd-error");
      FollowBlocks();
      return false;
    }
    suspended_ = false;
    add_failed_.clear();
  }
  FollowBlocks();
  return active && !regions_.empty();
}

std::string Scanner::PauseReason() {
  if (!memory_->merging_enabled()) return "uffd-unavailable";
  if (std::chrono::steady_clock::now() < resume_retry_at_) return "uffd-error";
  if (api.runstate_check(kRunStateSaveVm) || api.runstate_check(kRunStateRestoreVm)) return "snapshot";
  if (migration_seen_ || !api.migration_is_idle()) return api.migration_in_bg_snapshot() ? "snapshot" : "migration";
  if (api.runstate_check(qemu::kRunStateInmigrate) || api.migration_in_incoming_postcopy())
    return "incoming-migration";
  // Pinned guest memory (VFIO, vhost-vdpa, ...) disables discards. Our own
  // hold must not count: look with it released (the BQL keeps the window
  // closed to everyone who changes it).
  bool others;
  if (discard_held_) {
    api.ram_block_discard_disable(false);
    others = api.ram_block_discard_is_disabled();
    if (api.ram_block_discard_disable(true) != 0) discard_held_ = false;
  } else {
    others = api.ram_block_discard_is_disabled();
  }
  if (others) return "discard-disabled";
  return "";
}

// While pages may be merged onto pool pages, discards (balloon, free page
// reporting) would not read back as zero: hold ram_block_discard_disable().
// Given back once nothing is merged onto the pool and merging is off.
void Scanner::UpdateDiscardHold(bool active) {
  if (active && !discard_held_) {
    if (api.ram_block_discard_disable(true) == 0) discard_held_ = true;
  } else if (!active && discard_held_ && engine_->params().run == 0 && memory_->pool_pages() == 0) {
    api.ram_block_discard_disable(false);
    discard_held_ = false;
  }
}

void Scanner::SetPaused(const std::string& reason) {
  if (reason == paused_reason_) return;
  if (reason.empty()) {
    control_->QueueEvent(PendingEvent{"PKSM_RESUMED", {}}.Str("reason", paused_reason_));
    Log("merging resumed (was paused: " + paused_reason_ + ")");
  } else {
    control_->QueueEvent(PendingEvent{"PKSM_PAUSED", {}}.Str("reason", reason));
    Log("merging paused: " + reason);
  }
  paused_reason_ = reason;
}

void Scanner::FollowBlocks() {
  std::vector<RamBlockInfo> blocks = ListRamBlocks();
  std::vector<SkippedReport> skipped;
  std::set<RegionId> seen;
  for (const RamBlockInfo& b : blocks) {
    const BlockFacts& f = b.facts;
    if (f.name.empty()) continue;  // idstr is set after creation: next round
    std::string reason = SkipReason(f);
    if (!reason.empty()) {
      skipped.push_back({f.name, reason});
      continue;
    }
    bool known = false;
    for (auto& [id, r] : regions_) {
      if (r.block == b.block && r.host == f.host && r.size == f.used_length) {
        seen.insert(id);
        known = true;
        break;
      }
    }
    if (known) continue;
    DropRegionsAt(f.host);  // same memory under another identity (resized)
    if (suspended_) continue;  // added when merging is allowed again
    if (add_failed_.count(f.host)) {
      skipped.push_back({f.name, "uffd-register-failed"});
      continue;
    }
    std::string why;
    if (!AddRegion(b, &why)) {
      skipped.push_back({f.name, why});
      continue;
    }
    seen.insert(next_region_id_ - 1);
  }
  std::vector<RegionId> gone;
  for (auto& [id, r] : regions_)
    if (!seen.count(id)) gone.push_back(id);
  for (RegionId id : gone) DropRegion(id);
  skipped_ = std::move(skipped);
}

bool Scanner::AddRegion(const RamBlockInfo& b, std::string* why) {
  const BlockFacts& f = b.facts;
  const size_t pages = f.used_length / kPageSize;
  const RegionId id = next_region_id_;
  std::string err;
  if (!memory_->AddRegion(id, reinterpret_cast<void*>(f.host), pages, &err)) {
    add_failed_.insert(f.host);
    *why = "uffd-register-failed";
    Log("cannot scan RAM block " + f.name + ": " + err);
    return false;
  }
  ++next_region_id_;
  engine_->AddRegion(id, f.name, pages);
  engine_->Track(id, 0, pages);
  if (qemu_dirty_log_) qemu_dirty_log_->AddBlock(id, b.mr, f.offset, pages);
  regions_[id] = Region{id, f.name, f.host, f.used_length, f.offset, b.block};
  Log("scanning RAM block " + f.name + " (" + std::to_string(f.used_length >> 20) + " MiB)");
  return true;
}

void Scanner::DropRegion(RegionId id) {
  auto it = regions_.find(id);
  if (it == regions_.end()) return;
  Log("RAM block " + it->second.name + " is gone; forgetting it");
  memory_->RemoveRegion(id);
  engine_->RemoveRegion(id);
  if (qemu_dirty_log_) qemu_dirty_log_->RemoveBlock(id);
  regions_.erase(it);
}

void Scanner::DropRegionsAt(uintptr_t host) {
  std::vector<RegionId> ids;
  for (auto& [id, r] : regions_)
    if (r.host == host) ids.push_back(id);
  for (RegionId id : ids) DropRegion(id);
}

void Scanner::AfterStep(uint32_t run_before) {
  if (run_before == 2 && engine_->params().run == 0) {
    if (control_->UnmergeFinished()) {
      control_->QueueEvent(PendingEvent{"PKSM_RUN_CHANGED", {}}.Int("run", 0).Str("reason", "unmerge-done"));
      Log("run 2: every page unmerged; run is now 0");
    }
  }
  const Stats st = engine_->GetStats();
  const uint64_t used = memory_->vmas_used(), budget = memory_->vma_budget();
  const bool refusing = st.budget_refusals > last_budget_refusals_;
  last_budget_refusals_ = st.budget_refusals;
  if (refusing && !budget_exhausted_) {
    budget_exhausted_ = true;
    control_->QueueEvent(PendingEvent{"PKSM_BUDGET_EXHAUSTED", {}}
                             .Int("vmas-used", static_cast<int64_t>(used))
                             .Int("vma-budget", static_cast<int64_t>(budget)));
    Log("VMA budget reached (" + std::to_string(used) + "/" + std::to_string(budget) +
        "): non-zero merges stop, zero pages go on");
  } else if (budget_exhausted_ && !refusing && used * 10 < budget * 9) {
    budget_exhausted_ = false;  // room again: the next exhaustion is reported
  }
}

void Scanner::Publish() {
  StatusSnapshot s;
  s.stats = engine_->GetStats();
  s.dirty_log = dirty_log_name_;
  s.paused = !paused_reason_.empty();
  s.paused_reason = paused_reason_;
  s.vmas_used = memory_->vmas_used();
  s.vma_budget = memory_->vma_budget();
  s.scanner_cpu_ns = scanner_cpu_ns_;
  for (const RegionStats& r : engine_->GetRegionStats()) {
    auto it = regions_.find(r.id);
    if (it == regions_.end()) continue;
    s.blocks.push_back({it->second.name, it->second.size, r.pages_merged, r.zero_pages});
  }
  s.skipped = skipped_;
  control_->Publish(std::move(s));
}

// --- main-thread hooks (BQL held) ---

void Scanner::OnMigrationStateChange(MigrationState* s) {
  if (control_->stop_requested()) return;
  if (api.migration_in_setup(s)) {
    // Before the migration thread starts: no merge is in flight (we hold
    // owner_mu_), so drop the userfaultfd registrations now -- a background
    // snapshot or postcopy needs them, and nothing must remap pages under
    // a migration.
    {
      std::lock_guard<std::timed_mutex> owner(owner_mu_);
      migration_seen_ = true;
      SetPaused(api.migration_in_bg_snapshot() ? "snapshot" : "migration");
      if (!suspended_) {
        memory_->Suspend();
        suspended_ = true;
      }
      if (qemu_dirty_log_) qemu_dirty_log_->MarkAllDirty();
      Publish();
    }
    // Outside owner_mu_: QEMU calls may drop the BQL (see scanner.h).
    if (qemu_dirty_log_) qemu_dirty_log_->StopForMigration();
    FlushEvents();
  } else if (api.migration_has_finished(s) || api.migration_has_failed(s)) {
    std::lock_guard<std::timed_mutex> owner(owner_mu_);
    migration_seen_ = false;  // the next round resumes (if nothing else stops it)
    control_->Wake();
  }
}

void Scanner::OnMachineReady() {
  machine_ready_ = true;
  control_->Wake();
}

void Scanner::OnBlockRemoved(void* host, size_t /*size*/) {
  if (control_->stop_requested()) return;
  std::lock_guard<std::timed_mutex> owner(owner_mu_);
  DropRegionsAt(reinterpret_cast<uintptr_t>(host));
}

void Scanner::OnBlockResized(void* host, size_t /*old_size*/, size_t /*new_size*/) {
  if (control_->stop_requested()) return;
  std::lock_guard<std::timed_mutex> owner(owner_mu_);
  DropRegionsAt(reinterpret_cast<uintptr_t>(host));  // re-added with its new size
}

void Scanner::OnExit() {
  control_->RequestStop();
  // Wait for a Step in progress to end (it needs no BQL); a scanner waiting
  // for the BQL never gets it again and dies with the process.
  if (owner_mu_.try_lock_for(std::chrono::seconds(2))) owner_mu_.unlock();
}

void Scanner::FlushEvents() {
  for (const PendingEvent& e : control_->TakeEvents()) {
    QDict* data = api.qdict_new();
    for (const PendingEvent::Field& f : e.data) {
      if (f.is_string) api.qdict_put_str(data, f.key.c_str(), f.text.c_str());
      else api.qdict_put_int(data, f.key.c_str(), f.number);
    }
    timeval tv{};
    gettimeofday(&tv, nullptr);
    QDict* ts = api.qdict_new();
    api.qdict_put_int(ts, "seconds", tv.tv_sec);
    api.qdict_put_int(ts, "microseconds", tv.tv_usec);
    QDict* msg = api.qdict_new();
    api.qdict_put_str(msg, "event", e.name.c_str());
    api.qdict_put_obj(msg, "data", qemu::AsQObject(data));
    api.qdict_put_obj(msg, "timestamp", qemu::AsQObject(ts));
    api.qapi_event_emit(qemu::kQapiEventUnthrottled, msg);
    qemu::QObjectUnref(qemu::AsQObject(msg));
  }
}

void Scanner::Log(const std::string& line) {
  if (!config_.log_file.empty()) {
    if (FILE* f = std::fopen(config_.log_file.c_str(), "a")) {
      timeval tv{};
      gettimeofday(&tv, nullptr);
      std::fprintf(f, "%ld.%06ld pksm: %s\n", static_cast<long>(tv.tv_sec), static_cast<long>(tv.tv_usec),
                   line.c_str());
      std::fclose(f);
      return;
    }
  }
  std::fprintf(stderr, "pksm: %s\n", line.c_str());
}

}  // namespace pksm::plugin
