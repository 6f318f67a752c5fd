// Kernel KSM phase: the same workload deduplicated by the kernel's ksmd,
// measured the same way as pksm (page tables, smaps_rollup), so the two can
// be put side by side.
//
// KSM is global: its knobs live in /sys/kernel/mm/ksm and ksmd serves every
// process. KsmKnobGuard remembers every knob before it changes one and puts
// them all back on every path out (normal return, exception, SIGINT/SIGTERM
// through the normal unwinding, a second signal or a crash through an
// async-signal-safe emergency hook). A host-wide lock file serialises
// comparisons, and a phase refuses to start when ksmd is already running.
#ifndef PKSM_TOOLS_HOST_KERNEL_KSM_H_
#define PKSM_TOOLS_HOST_KERNEL_KSM_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "options.h"
#include "phase.h"
#include "workload.h"

namespace pksm::host {

inline constexpr const char* kKsmSysfs = "/sys/kernel/mm/ksm";
// flock()ed for the whole kernel phase; other tools comparing against the
// kernel's KSM on this host should take it too.
inline constexpr const char* kKsmLockPath = "/run/pksm-kernel-ksm.lock";

// Reads /sys/kernel/mm/ksm/<knob> (trimmed); empty optional on error.
std::optional<std::string> ReadKsmKnob(const std::string& knob);
uint64_t ReadKsmCounter(const std::string& knob);  // 0 if unreadable

class KsmKnobGuard {
 public:
  // Throws std::runtime_error when the KSM sysfs directory is missing or
  // not writable, or when ksmd is still running (run != 0) after waiting up
  // to `wait_sec` for whoever runs it to finish.
  explicit KsmKnobGuard(double wait_sec = 0);
  // Restore(); errors are printed to stderr.
  ~KsmKnobGuard();
  KsmKnobGuard(const KsmKnobGuard&) = delete;
  KsmKnobGuard& operator=(const KsmKnobGuard&) = delete;

  // Writes `value` to the knob, remembering its original value first.
  void Set(const std::string& knob, const std::string& value);
  // run=2: ksmd unmerges every KSM page (synchronously, in the write).
  void Unmerge();
  // run=2 if ksmd was started, then every knob back to its original value,
  // last changed first. Idempotent. Returns "" when every knob reads back its
  // original value, else what differs.
  std::string Restore();
  // The originals (knob -> value) recorded so far.
  const std::vector<std::pair<std::string, std::string>>& originals() const { return originals_; }

 private:
  std::vector<std::pair<std::string, std::string>> originals_;
  bool started_ = false;
  bool restored_ = false;
};

// Runs the workload under the kernel's KSM with o.pages_to_scan and
// o.sleep_ms, use_zero_pages=1. Throws std::runtime_error (knobs restored)
// on failure, Interrupted on a stop signal.
PhaseResult RunKernelKsmPhase(const HostOptions& o, const Workload& w);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_KERNEL_KSM_H_
