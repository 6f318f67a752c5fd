#include "phase.h"

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "proc_stats.h"
#include "stop_signals.h"

namespace pksm::host {

double PhaseResult::saved_kib_pss() const {
  return static_cast<double>(pss_before_kib) - static_cast<double>(pss_after_kib);
}

double PhaseResult::us_per_merge() const {
  if (saved_pages == 0) return NAN;
  return cpu_seconds * 1e6 / static_cast<double>(saved_pages);
}

double PhaseResult::vmas_per_merged_page() const {
  // Zero pages need no mapping; pages merged onto shared pages may.
  const uint64_t merged = pages_sharing + pages_shared;
  if (merged == 0) return NAN;
  return static_cast<double>(vmas_in_range) / static_cast<double>(merged);
}

void PhaseResult::AddTo(JsonObject* j) const {
  j->Add("pages_total", pages_total)
      .Add("expected_saved", expected_saved)
      .Add("expected_saved_capped", expected_saved_capped)
      .Add("pages_sharing", pages_sharing)
      .Add("pages_shared", pages_shared)
      .Add("ksm_zero_pages", ksm_zero_pages)
      .Add("full_scans", full_scans)
      .Add("saved_pages", saved_pages)
      .Add("saved_fraction", expected_saved ? static_cast<double>(saved_pages) / static_cast<double>(expected_saved) : NAN)
      .Add("distinct_anon_frames", distinct_anon_frames)
      .Add("pool_pages", pool_pages)
      .Add("pages_not_present", pages_not_present)
      .Add("pages_zero_frame", pages_zero_frame)
      .Add("pages_file_present", pages_file_present)
      .Add("pagetable_pages_shared", pagetable_pages_shared)
      .Add("pagetable_pages_sharing", pagetable_pages_sharing)
      .Add("steady", steady)
      .Add("timed_out", timed_out)
      .Add("seconds_to_steady", seconds_to_steady)
      .Add("seconds_detected", seconds_detected)
      .Add("cpu_seconds", cpu_seconds)
      .Add("us_per_merge", us_per_merge())
      .Add("rss_before_kib", rss_before_kib)
      .Add("rss_after_kib", rss_after_kib)
      .Add("pss_before_kib", pss_before_kib)
      .Add("pss_after_kib", pss_after_kib)
      .Add("saved_kib_pss", saved_kib_pss())
      .Add("vmas_used", vmas_used)
      .Add("vma_budget", vma_budget)
      .Add("vmas_in_range", vmas_in_range)
      .Add("vmas_total", vmas_total)
      .Add("vmas_per_merged_page", vmas_per_merged_page())
      .Add("max_map_count", max_map_count)
      .Add("budget_capped", budget_capped)
      .Add("budget_refusals", budget_refusals)
      .Add("dirty_log", dirty_log)
      .Add("integrity_errors", integrity_errors)
      .Add("lost_writes", lost_writes)
      .Add("writes", writes);
  for (const auto& [key, json] : extras) j->AddRaw(key, json.empty() ? "null" : json);
}

bool SteadyDetector::Update(double now, uint64_t saving, uint64_t full_scans) {
  if (!started_) {
    started_ = true;
    best_ = saving;
    scans_at_growth_ = full_scans;
    last_growth_time_ = now;
  }
  if (saving > best_) {
    best_ = saving;
    scans_at_growth_ = full_scans;
    last_growth_time_ = now;
    grew_ = true;
  }
  if (gated_) return false;
  if (saving >= target_) return true;
  return full_scans >= scans_at_growth_ + (grew_ ? 2 : 4);
}

void SteadyDetector::Rebase(double now, uint64_t saving, uint64_t full_scans) {
  started_ = true;
  gated_ = false;
  best_ = saving;
  scans_at_growth_ = full_scans;
  last_growth_time_ = now;
}

SaveMonitor::SaveMonitor(const uint8_t* base, uint64_t pages, uint64_t target,
                         std::function<uint64_t()> full_scans, std::function<bool()> writers_done,
                         std::function<uint64_t()> extra_frames)
    : base_(base),
      pages_(pages),
      full_scans_(std::move(full_scans)),
      writers_done_(std::move(writers_done)),
      extra_frames_(std::move(extra_frames)),
      detector_(target, !writers_done_()) {}

SaveMonitor::~SaveMonitor() { Stop(); }

void SaveMonitor::Start(double t0) {
  t0_ = t0;
  thread_ = std::thread([this] { Run(); });
}

void SaveMonitor::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::string SaveMonitor::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool SaveMonitor::Done(double now, double timeout_sec, const char* tag, PhaseResult* r) const {
  if (std::string e = error(); !e.empty()) throw std::runtime_error(e);
  if (steady()) {
    r->steady = true;
    r->seconds_detected = steady_time();
    return true;
  }
  if (now > timeout_sec) {
    r->timed_out = true;
    r->seconds_detected = now;
    Progress("[%s] timeout after %.1fs before steady state", tag, now);
    return true;
  }
  return false;
}

void SaveMonitor::Run() {
  // The monitor measures; it runs at the process's base nice in both
  // phases whatever the merging thread's is (lowering needs root).
  SetThreadNice(BaseNice());
  bool writers_were_done = writers_done_();
  while (!stop_.load()) {
    const double c0 = NowSeconds();
    // Read the pass counter before the page tables: a pass counted here
    // has finished before the saving it is compared with was measured.
    const uint64_t scans = full_scans_();
    std::string err;
    auto pm = ScanPagemap(base_, pages_, &err);
    if (!pm) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = err;
      return;
    }
    const uint64_t extra = extra_frames_();
    const uint64_t used = pm->distinct_anon + extra;
    const uint64_t saved = used < pages_ ? pages_ - used : 0;
    const double now = NowSeconds() - t0_;
    const double cost = NowSeconds() - c0;
    saved_.store(saved);
    polls_.fetch_add(1);
    if (!writers_were_done && writers_done_()) {
      writers_were_done = true;
      detector_.Rebase(now, saved, scans);
    }
    const bool is_steady = detector_.Update(now, saved, scans);
    last_growth_.store(detector_.last_growth());
    if (is_steady && !steady_.load()) {
      steady_time_.store(now);
      steady_.store(true);
    }
    const double interval = std::min(0.5, std::max(0.02, 5 * cost));
    interval_ms_.store(interval * 1e3);
    const double until = c0 + interval;
    while (!stop_.load() && NowSeconds() < until) {
      timespec ts{0, 2 * 1000 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
}

WorkloadMapping::WorkloadMapping(uint64_t pages) : pages_(pages) {
  void* p = mmap(nullptr, pages * kHostPageSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    throw std::runtime_error("mmap of " + std::to_string(pages * kHostPageSize) +
                             " bytes for the workload failed: " + std::strerror(errno));
  }
  data_ = static_cast<uint8_t*>(p);
  // Best effort: with THP set to "always" the kernel would otherwise back
  // the range with huge pages that neither deduplicator can share whole.
  madvise(p, bytes(), MADV_NOHUGEPAGE);
}

WorkloadMapping::~WorkloadMapping() {
  if (data_ != nullptr) munmap(data_, bytes());
}

void Progress(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

double NowSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void SleepMs(double ms) {
  if (ms <= 0) return;
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(std::fmod(ms, 1000.0) * 1e6)};
  nanosleep(&ts, nullptr);
}

uint64_t ReadMaxMapCount() {
  auto s = ReadSmallFile("/proc/sys/vm/max_map_count");
  if (!s) return 0;
  return std::strtoull(s->c_str(), nullptr, 10);
}

void PopulateForPhase(const char* tag, const Workload& w, const WorkloadMapping& m, PhaseResult* r) {
  Progress("[%s] populating %llu pages", tag, static_cast<unsigned long long>(w.pages_total));
  if (!Populate(w, m.data(), StopFlag())) throw Interrupted();
  std::string err;
  auto before = ReadMemRollup(&err);
  if (!before) throw std::runtime_error(err);
  r->rss_before_kib = before->rss_kib;
  r->pss_before_kib = before->pss_kib;
}

void MeasureAfter(const WorkloadMapping& m, uint64_t pool_pages, PhaseResult* r) {
  std::string err;
  auto roll = ReadMemRollup(&err);
  if (!roll) throw std::runtime_error(err);
  r->rss_after_kib = roll->rss_kib;
  r->pss_after_kib = roll->pss_kib;
  auto pm = ScanPagemap(m.data(), m.pages(), &err);
  if (!pm) throw std::runtime_error(err);
  const uint64_t used = pm->distinct_anon + pool_pages;
  r->saved_pages = used < pm->pages ? pm->pages - used : 0;
  r->distinct_anon_frames = pm->distinct_anon;
  r->pool_pages = pool_pages;
  r->pages_not_present = pm->not_present;
  r->pages_zero_frame = pm->zero_frame;
  r->pages_file_present = pm->file_present;
  r->pagetable_pages_shared = pm->shared_frames;
  r->pagetable_pages_sharing = pm->sharing_pages;
  auto v = CountVmas(reinterpret_cast<uintptr_t>(m.data()), reinterpret_cast<uintptr_t>(m.data()) + m.bytes(), &err);
  if (!v) throw std::runtime_error(err);
  r->vmas_in_range = v->in_range;
  r->vmas_total = v->total;
  r->max_map_count = ReadMaxMapCount();
}

void RecordIntegrity(const char* tag, const VerifyResult& merged, const VerifyResult& unmerged, bool writers,
                     uint64_t writes, uint64_t lost_writes, const std::vector<uint64_t>& keys,
                     const std::vector<uint8_t>& written, const uint8_t* base, PhaseResult* r) {
  r->integrity_errors = merged.mismatches + unmerged.mismatches;
  if (merged.mismatches || unmerged.mismatches) {
    const VerifyResult& f = merged.mismatches ? merged : unmerged;
    Progress("[%s] INTEGRITY: %llu pages wrong while merged, %llu after unmerge; first page %llu "
             "expected key %llx found %llx",
             tag, static_cast<unsigned long long>(merged.mismatches),
             static_cast<unsigned long long>(unmerged.mismatches), static_cast<unsigned long long>(f.first_page),
             static_cast<unsigned long long>(f.first_expected), static_cast<unsigned long long>(f.first_found));
  }
  if (writers) {
    r->writes = writes;
    r->lost_writes = lost_writes;
    for (uint64_t i = 0; i < keys.size(); ++i) {
      if (written[i] && !PageMatches(base + i * kHostPageSize, keys[i])) ++r->lost_writes;
    }
  }
}

void HoldForInspection(const char* tag, double seconds) {
  if (seconds <= 0) return;
  Progress("[%s] holding for %.1fs (pid %d)", tag, seconds, static_cast<int>(getpid()));
  const double until = NowSeconds() + seconds;
  while (NowSeconds() < until) {
    ThrowIfStopRequested();
    SleepMs(50);
  }
}

}  // namespace pksm::host
