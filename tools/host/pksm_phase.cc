#include "pksm_phase.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>

#include "pksm/engine.h"
#include "pksm/linux/process_memory.h"
#include "pksm/params.h"
#include "proc_stats.h"
#include "stop_signals.h"
#include "writers.h"

namespace pksm::host {

namespace {

constexpr RegionId kWorkloadRegion = 0;
// The name core/linux gives the pool memfd (memfd_create): its allocated
// pages are the memory the merged pages use.
constexpr const char* kPoolMemfdName = "pksm-pool";

DirtyLogKind ToKind(DirtyLogChoice c) {
  switch (c) {
    case DirtyLogChoice::kAuto:
      return DirtyLogKind::kAuto;
    case DirtyLogChoice::kUffd:
      return DirtyLogKind::kUffdSync;
    case DirtyLogChoice::kUffdAsync:
      return DirtyLogKind::kUffdAsync;
    case DirtyLogChoice::kChecksum:
      return DirtyLogKind::kChecksum;
  }
  return DirtyLogKind::kAuto;
}

// The region must leave ProcessMemory before its memory is unmapped, and
// the engine must go before the seams it reads.
class RegionRegistration {
 public:
  RegionRegistration(ProcessMemory* pm, RegionId id) : pm_(pm), id_(id) {}
  ~RegionRegistration() { pm_->RemoveRegion(id_); }
  RegionRegistration(const RegionRegistration&) = delete;
  RegionRegistration& operator=(const RegionRegistration&) = delete;

 private:
  ProcessMemory* pm_;
  RegionId id_;
};

// Sets the calling thread's nice value for the phase, restores it after.
class NiceGuard {
 public:
  explicit NiceGuard(const HostOptions& o) : saved_(ThreadNice()) {
    using C = HostOptions::NiceChoice;
    C c = o.nice;
    if (c == C::kDefault) c = o.compare_kernel_ksm ? C::kKsmd : C::kKeep;
    std::optional<int> want;
    if (c == C::kValue) want = o.nice_value;
    if (c == C::kKsmd) {
      if (auto ksmd = FindKsmd()) want = TaskNice(*ksmd);
    }
    if (want && *want != saved_) {
      if (SetThreadNice(*want)) {
        changed_ = true;
      } else {
        Progress("[pksm] could not set the merging thread's nice to %d", *want);
      }
    }
  }
  ~NiceGuard() {
    if (changed_) SetThreadNice(saved_);
  }
  NiceGuard(const NiceGuard&) = delete;
  NiceGuard& operator=(const NiceGuard&) = delete;

 private:
  int saved_;
  bool changed_ = false;
};

std::string LinuxStatsJson(const ProcessMemoryStats& s) {
  JsonObject j;
  j.Add("vmas_used", s.vmas_used)
      .Add("vma_budget", s.vma_budget)
      .Add("pool_pages", s.pool_pages)
      .Add("merges", s.merges)
      .Add("zero_merges", s.zero_merges)
      .Add("changed", s.changed)
      .Add("no_budget", s.no_budget)
      .Add("errors", s.errors)
      .Add("unmerges", s.unmerges)
      .Add("wp_faults", s.wp_faults)
      .Add("missing_faults", s.missing_faults)
      .Add("racing_writes", s.racing_writes)
      .Add("merge_ns", s.merge_ns)
      .Add("us_per_merge_wall", s.merges ? static_cast<double>(s.merge_ns) / 1e3 / static_cast<double>(s.merges) : NAN);
  return j.ToString();
}

}  // namespace

PhaseResult RunPksmPhase(const HostOptions& o, const Workload& w) {
  PhaseResult r;
  r.name = "pksm";
  r.pages_total = w.pages_total;
  r.expected_saved = w.expected_saved;
  r.expected_saved_capped = w.expected_saved_capped;

  Params params;
  params.run = 1;
  params.pages_to_scan = o.pages_to_scan;
  params.sleep_millisecs = o.sleep_ms;
  params.delay = o.delay;
  params.use_zero_pages = true;
  params.max_page_sharing = 256;
  if (std::string e = params.Validate(); !e.empty()) throw std::runtime_error("engine parameters: " + e);

  WorkloadMapping m(w.pages_total);
  PopulateForPhase("pksm", w, m, &r);
  std::string err;

  std::vector<uint64_t> keys = w.keys;
  std::vector<uint8_t> written(w.pages_total, 0);

  // The merging thread (and the fault thread ProcessMemory starts, which
  // inherits it) runs at the chosen nice value; restored on the way out.
  NiceGuard nice_guard(o);
  r.extras.emplace_back("merging_thread_nice", std::to_string(ThreadNice()));

  // Time and CPU count from here: opening userfaultfd, registering and
  // write-protecting the region are part of what pksm costs.
  const double cpu0 = ThreadCpuSeconds();
  const double t0 = NowSeconds();
  ProcessMemoryOptions pmo;
  pmo.dirty_log = ToKind(o.dirty_log);
  pmo.pool_max_pages = 0;  // the layer's default (address space only)
  pmo.max_vmas = o.max_vmas;
  pmo.log = [](const std::string& line) { Progress("[pksm] %s", line.c_str()); };
  std::unique_ptr<ProcessMemory> pm = ProcessMemory::Create(pmo, &err);
  if (!pm) throw std::runtime_error("opening the Linux memory layer: " + err);
  if (!pm->merging_enabled()) throw std::runtime_error("pksm cannot merge here: " + pm->unavailable_reason());
  if (!pm->AddRegion(kWorkloadRegion, m.data(), w.pages_total, &err)) {
    throw std::runtime_error("registering the workload with userfaultfd: " + err);
  }
  RegionRegistration registration(pm.get(), kWorkloadRegion);
  r.dirty_log = pm->dirty_log_name();
  auto engine = std::make_unique<Engine>(pm->memory(), pm->merger(), pm->dirty_log(), params);
  engine->AddRegion(kWorkloadRegion, "workload", w.pages_total);
  engine->Track(kWorkloadRegion, 0, w.pages_total);
  Progress("[pksm] dirty log %s, VMA budget %llu, pages_to_scan %u, sleep %u ms, delay %u", r.dirty_log.c_str(),
           static_cast<unsigned long long>(pm->vma_budget()), o.pages_to_scan, o.sleep_ms, o.delay);

  // Declared after the engine and the memory layer: destroyed (joined)
  // first, so no writer is left faulting on a region being torn down.
  std::unique_ptr<WriterPool> writers;
  if (o.writers > 0) {
    writers = std::make_unique<WriterPool>(m.data(), &keys, &written, o.writers, o.writer_seconds,
                                           o.write_interval_us, o.dup_contents, o.seed);
    writers->Start();
  }
  std::atomic<uint64_t> full_scans{0};
  SaveMonitor monitor(
      m.data(), w.pages_total, w.expected_saved_capped, [&full_scans] { return full_scans.load(); },
      [&writers] { return writers == nullptr || writers->Done(); }, [] { return MemfdPages(kPoolMemfdName); });
  monitor.Start(t0);
  bool told_budget = false;
  double last_print = 0;
  Stats s;
  for (;;) {
    ThrowIfStopRequested();
    engine->Step(o.pages_to_scan);
    s = engine->GetStats();
    full_scans.store(s.full_scans);
    const double now = NowSeconds() - t0;
    if (!told_budget && s.budget_refusals > 0) {
      told_budget = true;
      Progress("[pksm] %.1fs VMA budget reached (%llu mappings): non-zero merges are being refused", now,
               static_cast<unsigned long long>(pm->vma_budget()));
    }
    if (monitor.Done(now, o.timeout_sec, "pksm", &r)) break;
    if (now - last_print >= 1.0) {
      last_print = now;
      Progress("[pksm] %.1fs saved %llu/%llu pages (page tables; engine: sharing %llu, zero %llu) full_scans %llu "
               "vmas %llu",
               now, static_cast<unsigned long long>(monitor.saved()),
               static_cast<unsigned long long>(w.expected_saved), static_cast<unsigned long long>(s.pages_sharing),
               static_cast<unsigned long long>(s.ksm_zero_pages), static_cast<unsigned long long>(s.full_scans),
               static_cast<unsigned long long>(pm->vmas_used()));
    }
    SleepMs(o.sleep_ms);
  }
  r.cpu_seconds = ThreadCpuSeconds() - cpu0;
  monitor.Stop();
  r.seconds_to_steady = monitor.last_growth();
  if (writers) {
    writers->Stop();
    writers->Join();
  }
  s = engine->GetStats();
  const ProcessMemoryStats ls = pm->stats();
  r.pages_sharing = s.pages_sharing;
  r.pages_shared = s.pages_shared;
  r.ksm_zero_pages = s.ksm_zero_pages;
  r.full_scans = s.full_scans;
  r.vmas_used = ls.vmas_used;
  r.vma_budget = ls.vma_budget;
  r.budget_refusals = s.budget_refusals;
  r.budget_capped = s.budget_refusals > 0 || ls.no_budget > 0;
  MeasureAfter(m, MemfdPages(kPoolMemfdName), &r);
  Progress("[pksm] steady=%s after %.2fs (last growth %.2fs): saved %llu pages by the page tables, cpu %.2fs%s",
           r.steady ? "yes" : "no", r.seconds_detected, r.seconds_to_steady,
           static_cast<unsigned long long>(r.saved_pages), r.cpu_seconds,
           r.budget_capped ? ", CAPPED by the VMA budget" : "");

  HoldForInspection("pksm", o.hold_sec);

  // Every page must read what was last written: merged, then unmerged.
  VerifyResult v = VerifyPages(keys, m.data());
  Params unmerge = engine->params();
  unmerge.run = 2;
  if (std::string e = engine->SetParams(unmerge); !e.empty()) throw std::runtime_error("run=2: " + e);
  engine->Step(o.pages_to_scan);
  const Stats after_unmerge = engine->GetStats();
  VerifyResult v2 = VerifyPages(keys, m.data());
  RecordIntegrity("pksm", v, v2, writers != nullptr, writers ? writers->writes() : 0,
                  writers ? writers->lost_writes() : 0, keys, written, m.data(), &r);
  Progress("[pksm] unmerged %llu pages (left merged: %llu sharing, %llu zero) and verified",
           static_cast<unsigned long long>(after_unmerge.unmerges),
           static_cast<unsigned long long>(after_unmerge.pages_sharing),
           static_cast<unsigned long long>(after_unmerge.ksm_zero_pages));
  r.extras.emplace_back("engine", s.ToJson());
  r.extras.emplace_back("linux", LinuxStatsJson(ls));
  engine.reset();
  return r;
}

}  // namespace pksm::host
