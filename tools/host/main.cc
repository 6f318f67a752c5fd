// pksm-host: deduplicates a workload in its own memory with the pksm engine
// and reports on it; with --compare-kernel-ksm it then runs the same
// workload under the kernel's KSM and puts the two side by side.
//
// The phases run one after the other, never together: the pksm phase's
// memory is unmapped before the kernel phase maps its own, the pksm phase's
// memory is never MADV_MERGEABLE, and ksmd is at run=0 outside the kernel
// phase. Output: progress lines, then a summary table, or with --json one
// JSON object as the last line. Exit status: 0 ok, 1 integrity errors, lost
// writes or a failed phase, 2 bad options, 130 interrupted.
#include <sys/prctl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "json.h"
#include "kernel_ksm.h"
#include "options.h"
#include "phase.h"
#include "pksm_phase.h"
#include "proc_stats.h"
#include "stop_signals.h"
#include "workload.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

namespace pksm::host {
namespace {

double Ratio(double a, double b) { return b != 0 ? a / b : NAN; }

std::string WorkloadJson(const HostOptions& o, const Workload& w) {
  JsonObject j;
  j.Add("size_mib", o.size_mib)
      .Add("mix", "zero=" + std::to_string(o.mix_zero) + ",dup=" + std::to_string(o.mix_dup) +
                      ",unique=" + std::to_string(o.mix_unique))
      .Add("dup_contents", o.dup_contents)
      .Add("dup_contents_used", w.dup_contents_used)
      .Add("run_length", o.run_length)
      .Add("seed", o.seed)
      .Add("zero_pages", w.zero_pages)
      .Add("dup_pages", w.dup_pages)
      .Add("unique_pages", w.unique_pages);
  return j.ToString();
}

std::string ParamsJson(const HostOptions& o) {
  JsonObject j;
  j.Add("delay", o.delay)
      .Add("pages_to_scan", o.pages_to_scan)
      .Add("sleep_ms", o.sleep_ms)
      .Add("timeout_sec", o.timeout_sec)
      .Add("dirty_log", ToString(o.dirty_log))
      .Add("writers", o.writers)
      .Add("seconds", o.writer_seconds)
      .Add("write_interval_us", o.write_interval_us);
  return j.ToString();
}

void PrintTable(const std::optional<PhaseResult>& p, const std::optional<PhaseResult>& k) {
  std::printf("\n%-26s %14s %14s\n", "", "pksm", "kernel KSM");
  auto row = [&](const char* label, auto get, const char* fmt) {
    char a[64] = "-", b[64] = "-";
    if (p) std::snprintf(a, sizeof(a), fmt, get(*p));
    if (k) std::snprintf(b, sizeof(b), fmt, get(*k));
    std::printf("%-26s %14s %14s\n", label, a, b);
  };
  using R = const PhaseResult&;
  row("expected saved (pages)", [](R r) { return static_cast<unsigned long long>(r.expected_saved); }, "%llu");
  row("saved (pages, pagemap)", [](R r) { return static_cast<unsigned long long>(r.saved_pages); }, "%llu");
  row("pages_sharing", [](R r) { return static_cast<unsigned long long>(r.pages_sharing); }, "%llu");
  row("ksm_zero_pages", [](R r) { return static_cast<unsigned long long>(r.ksm_zero_pages); }, "%llu");
  row("saved (MiB, Pss)", [](R r) { return r.saved_kib_pss() / 1024.0; }, "%.1f");
  row("seconds to steady", [](R r) { return r.seconds_to_steady; }, "%.2f");
  row("cpu seconds", [](R r) { return r.cpu_seconds; }, "%.3f");
  row("us cpu per saved page", [](R r) { return r.us_per_merge(); }, "%.2f");
  row("VMAs in workload range", [](R r) { return static_cast<unsigned long long>(r.vmas_in_range); }, "%llu");
  row("VMAs per merged page", [](R r) { return r.vmas_per_merged_page(); }, "%.3f");
  row("budget capped", [](R r) { return r.budget_capped ? "yes" : "no"; }, "%s");
  row("dirty log", [](R r) { return r.dirty_log.c_str(); }, "%s");
  row("integrity errors", [](R r) { return static_cast<unsigned long long>(r.integrity_errors); }, "%llu");
  row("lost writes", [](R r) { return static_cast<unsigned long long>(r.lost_writes); }, "%llu");
}

int Main(int argc, char** argv) {
  HostOptions o;
  if (std::string err = ParseHostOptions(argc, argv, &o); !err.empty()) {
    std::fprintf(stderr, "pksm-host: %s\n", err.c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(HostUsage().c_str(), stdout);
    return 0;
  }
  InstallStopSignals();
  BaseNice();  // recorded before any thread changes its own
  // pksm's memory must never be visible to ksmd: no process-wide merging.
  if (prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 1) prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0);

  const Workload w = BuildWorkload(o, 256);
  Progress("pksm-host: %llu MiB, %llu pages: %llu zero, %llu duplicate (%llu contents, runs of %llu), %llu unique; "
           "expected saved %llu pages",
           static_cast<unsigned long long>(o.size_mib), static_cast<unsigned long long>(w.pages_total),
           static_cast<unsigned long long>(w.zero_pages), static_cast<unsigned long long>(w.dup_pages),
           static_cast<unsigned long long>(w.dup_contents_used), static_cast<unsigned long long>(o.run_length),
           static_cast<unsigned long long>(w.unique_pages), static_cast<unsigned long long>(w.expected_saved));

  std::optional<PhaseResult> pksm_result, kernel_result;
  std::string error;
  bool interrupted = false;
  try {
    if (!o.kernel_only) pksm_result = RunPksmPhase(o, w);
    if (o.compare_kernel_ksm) kernel_result = RunKernelKsmPhase(o, w);
  } catch (const Interrupted&) {
    interrupted = true;
    error = "interrupted by a signal";
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) std::fprintf(stderr, "pksm-host: %s\n", error.c_str());

  uint64_t bad = 0;
  for (auto* r : {&pksm_result, &kernel_result}) {
    if (*r) bad += (*r)->integrity_errors + (*r)->lost_writes;
  }

  if (o.json) {
    JsonObject j;
    j.Add("tool", "pksm-host").AddRaw("workload", WorkloadJson(o, w)).AddRaw("params", ParamsJson(o));
    if (pksm_result) {
      pksm_result->AddTo(&j);
    } else {
      j.Add("pages_total", w.pages_total).Add("expected_saved", w.expected_saved);
    }
    if (kernel_result) {
      JsonObject k;
      kernel_result->AddTo(&k);
      j.AddRaw("kernel_ksm", k.ToString());
    }
    if (pksm_result && kernel_result) {
      JsonObject ratios;
      ratios.Add("seconds_to_steady", Ratio(pksm_result->seconds_to_steady, kernel_result->seconds_to_steady))
          .Add("cpu_seconds", Ratio(pksm_result->cpu_seconds, kernel_result->cpu_seconds))
          .Add("memory_saved", Ratio(static_cast<double>(pksm_result->saved_pages),
                                     static_cast<double>(kernel_result->saved_pages)))
          .Add("memory_saved_pss", Ratio(pksm_result->saved_kib_pss(), kernel_result->saved_kib_pss()))
          .Add("us_per_merge", Ratio(pksm_result->us_per_merge(), kernel_result->us_per_merge()));
      j.AddRaw("ratios", ratios.ToString());
    }
    j.Add("ok", error.empty() && bad == 0);
    if (!error.empty()) j.Add("error", error);
    std::printf("%s\n", j.ToString().c_str());
  } else {
    PrintTable(pksm_result, kernel_result);
  }
  std::fflush(stdout);
  if (interrupted) return 130;
  return (error.empty() && bad == 0) ? 0 : 1;
}

}  // namespace
}  // namespace pksm::host

int main(int argc, char** argv) { return pksm::host::Main(argc, argv); }
