// Phase: what one deduplication run (pksm, or the kernel's KSM) over the
// workload measured, the steady-state rule both runs share, and the small
// pieces both phases use (the workload mapping, progress lines).
#ifndef PKSM_TOOLS_HOST_PHASE_H_
#define PKSM_TOOLS_HOST_PHASE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "json.h"
#include "options.h"
#include "workload.h"

namespace pksm::host {

struct PhaseResult {
  std::string name;                 // "pksm" or "kernel_ksm"
  uint64_t pages_total = 0;
  uint64_t expected_saved = 0;
  uint64_t expected_saved_capped = 0;
  // The deduplicator's own counters.
  uint64_t pages_sharing = 0;
  uint64_t pages_shared = 0;
  uint64_t ksm_zero_pages = 0;
  uint64_t full_scans = 0;
  // Saving measured from the page tables of the workload range (pagemap):
  // pages - distinct anonymous frames behind them - pool pages allocated.
  uint64_t saved_pages = 0;
  uint64_t distinct_anon_frames = 0;
  uint64_t pool_pages = 0;          // pksm's pool memfd, allocated pages
  uint64_t pages_not_present = 0;
  uint64_t pages_zero_frame = 0;
  uint64_t pages_file_present = 0;
  uint64_t pagetable_pages_shared = 0;   // frames mapped more than once
  uint64_t pagetable_pages_sharing = 0;  // their mappings beyond the first
  // Time and CPU to steady state.
  bool steady = false;
  bool timed_out = false;
  double seconds_to_steady = 0;  // when the saving last grew
  double seconds_detected = 0;   // when steady state was declared
  double cpu_seconds = 0;        // merging thread (pksm) or ksmd (kernel)
  // Whole-process memory (smaps_rollup).
  uint64_t rss_before_kib = 0;
  uint64_t rss_after_kib = 0;
  uint64_t pss_before_kib = 0;
  uint64_t pss_after_kib = 0;
  // Mappings.
  uint64_t vmas_used = 0;        // mappings the deduplicator created (pksm) / 0 (kernel)
  uint64_t vma_budget = 0;       // pksm's budget (0: none)
  uint64_t vmas_in_range = 0;    // VMAs covering the workload range afterwards
  uint64_t vmas_total = 0;       // VMAs of the process afterwards
  uint64_t max_map_count = 0;    // vm.max_map_count during the run
  bool budget_capped = false;    // merging was refused for lack of mappings
  uint64_t budget_refusals = 0;
  std::string dirty_log;
  // Integrity.
  uint64_t integrity_errors = 0;
  uint64_t lost_writes = 0;
  uint64_t writes = 0;
  // Extra JSON members (engine statistics, knobs), already serialised.
  std::vector<std::pair<std::string, std::string>> extras;

  double saved_kib_pss() const;
  double us_per_merge() const;          // cpu_seconds / saved_pages
  double vmas_per_merged_page() const;  // vmas_in_range / (pages_sharing + pages_shared)
  void AddTo(JsonObject* j) const;
};

// Steady state: the saving stopped growing for two full passes after its
// last growth (and after the writers stopped), or it reached `target`.
// Before any growth at all it waits four passes: ksmd counts a pass when
// its cursor wraps, and it inserts a newly registered area just behind the
// cursor, so the first counted pass may not have seen the area, and a page
// needs two visits (checksum, then the unstable tree) before it can merge.
class SteadyDetector {
 public:
  // With `wait_for_rebase` (writers running) it is never steady before
  // Rebase().
  SteadyDetector(uint64_t target, bool wait_for_rebase) : target_(target), gated_(wait_for_rebase) {}
  // Feed one observation; returns true once steady.
  bool Update(double now, uint64_t saving, uint64_t full_scans);
  // The writers just stopped: wait for two more passes from here.
  void Rebase(double now, uint64_t saving, uint64_t full_scans);
  double last_growth() const { return last_growth_time_; }

 private:
  uint64_t target_;
  bool started_ = false;
  bool gated_;  // Rebase pending: writers still running
  bool grew_ = false;
  uint64_t best_ = 0;
  uint64_t scans_at_growth_ = 0;
  double last_growth_time_ = 0;
};

// SaveMonitor: watches the saving of the workload range from the page
// tables (ScanPagemap) on its own thread, for both phases alike, and
// declares steady state with a SteadyDetector. Counters of either
// deduplicator are not trusted for this: the kernel's are global and lag
// (zero-content pages first merge as ordinary KSM pages), and pksm's would
// only be checked against themselves. The scan costs ~20 ms of CPU per GiB,
// so the poll interval is five times the cost of one scan (20..500 ms):
// about a fifth of a core, the same for both phases.
class SaveMonitor {
 public:
  // The callbacks are called from the monitor thread. `extra_frames`: pages
  // of memory outside the range that back it (pksm's pool), 0 for KSM.
  SaveMonitor(const uint8_t* base, uint64_t pages, uint64_t target, std::function<uint64_t()> full_scans,
              std::function<bool()> writers_done, std::function<uint64_t()> extra_frames);
  ~SaveMonitor();  // stops and joins
  SaveMonitor(const SaveMonitor&) = delete;
  SaveMonitor& operator=(const SaveMonitor&) = delete;

  // Starts polling; times are seconds since `t0` (NowSeconds()).
  void Start(double t0);
  void Stop();
  bool steady() const { return steady_.load(); }
  double steady_time() const { return steady_time_.load(); }  // when declared
  double last_growth() const { return last_growth_.load(); }
  uint64_t saved() const { return saved_.load(); }
  uint64_t polls() const { return polls_.load(); }
  double interval_ms() const { return interval_ms_.load(); }
  std::string error() const;  // a pagemap failure stops the monitor
  // The end test both phases' loops share: throws the monitor's error; true
  // (and r->steady / r->timed_out, r->seconds_detected set) once the saving
  // is steady or `now` passed `timeout_sec`, which `tag` reports.
  bool Done(double now, double timeout_sec, const char* tag, PhaseResult* r) const;

 private:
  void Run();

  const uint8_t* base_;
  uint64_t pages_;
  std::function<uint64_t()> full_scans_;
  std::function<bool()> writers_done_;
  std::function<uint64_t()> extra_frames_;
  SteadyDetector detector_;
  double t0_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> steady_{false};
  std::atomic<double> steady_time_{0};
  std::atomic<double> last_growth_{0};
  std::atomic<uint64_t> saved_{0};
  std::atomic<uint64_t> polls_{0};
  std::atomic<double> interval_ms_{0};
  mutable std::mutex mu_;
  std::string error_;
};

// Anonymous private memory for the workload, unmapped on destruction. Not
// MADV_MERGEABLE; transparent huge pages off so both phases start from 4 KiB
// pages.
class WorkloadMapping {
 public:
  explicit WorkloadMapping(uint64_t pages);
  ~WorkloadMapping();
  WorkloadMapping(const WorkloadMapping&) = delete;
  WorkloadMapping& operator=(const WorkloadMapping&) = delete;
  uint8_t* data() const { return data_; }
  uint64_t pages() const { return pages_; }
  size_t bytes() const { return pages_ * kHostPageSize; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t pages_ = 0;
};

// Integrity of a phase: `merged` and `unmerged` are VerifyPages() results
// taken while merged and after unmerging; with writers (`writes`, their
// `lost_writes` count so far), every page a writer wrote (`written`) must
// still read its last key. Fills r->integrity_errors, writes, lost_writes
// and reports problems as "[tag] INTEGRITY: ...".
void RecordIntegrity(const char* tag, const VerifyResult& merged, const VerifyResult& unmerged, bool writers,
                     uint64_t writes, uint64_t lost_writes, const std::vector<uint64_t>& keys,
                     const std::vector<uint8_t>& written, const uint8_t* base, PhaseResult* r);

// --hold: keeps everything mapped for `seconds` (inspection from outside),
// saying so as "[tag] holding ..."; a stop request ends it by throwing.
void HoldForInspection(const char* tag, double seconds);

// Progress lines ("[pksm] ...") on stdout, flushed.
void Progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Seconds on a monotonic clock.
double NowSeconds();
// Sleeps `ms` milliseconds (fractions allowed; 0 returns at once).
void SleepMs(double ms);

// Reads vm.max_map_count (0 if unreadable).
uint64_t ReadMaxMapCount();

// Fills `m` with the workload `w` and records the process's memory before
// any merging (r->rss_before_kib, r->pss_before_kib); `tag` names the phase
// in progress lines ("pksm", "kernel_ksm"). Throws std::runtime_error on
// failure, Interrupted on a stop signal.
void PopulateForPhase(const char* tag, const Workload& w, const WorkloadMapping& m, PhaseResult* r);

// Common measurement after steady state: page tables, smaps_rollup, VMAs.
// `pool_pages`: memory outside the range backing it (pksm's pool).
// Throws std::runtime_error on failure.
void MeasureAfter(const WorkloadMapping& m, uint64_t pool_pages, PhaseResult* r);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_PHASE_H_
