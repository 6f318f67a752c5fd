// HostOptions: the command line of pksm-host, parsed and validated.
//
// Every option of issue 3 has a field here; ParseHostOptions() is the only
// parser, so the tool and its tests agree on what is accepted. A bad option
// never gets as far as touching memory or the kernel's KSM knobs: the
// parser names the option and the value, and main() exits with status 2.
#ifndef PKSM_TOOLS_HOST_OPTIONS_H_
#define PKSM_TOOLS_HOST_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace pksm::host {

enum class DirtyLogChoice { kAuto, kUffd, kUffdAsync, kChecksum };

const char* ToString(DirtyLogChoice c);

struct HostOptions {
  // --- workload ---
  uint64_t size_mib = 64;          // --size-mib
  uint32_t mix_zero = 25;          // --mix zero=Z,dup=D,unique=U (percent of pages)
  uint32_t mix_dup = 50;
  uint32_t mix_unique = 25;
  uint64_t dup_contents = 1024;    // --dup-contents: distinct duplicate contents
  uint64_t run_length = 1;         // --run-length: 1 = scattered
  uint64_t seed = 1;               // --seed: placement of the pages

  // --- scanning (the same values drive pksm and, with the comparison, ksmd) ---
  uint32_t delay = 1;              // --delay: probation N
  uint32_t pages_to_scan = 4096;   // --pages-to-scan
  uint32_t sleep_ms = 10;          // --sleep-ms
  double timeout_sec = 300;        // --timeout: bound on reaching steady state
  DirtyLogChoice dirty_log = DirtyLogChoice::kAuto;  // --dirty-log
  // --max-vmas N: the pksm phase's VMA budget (0 = derived from
  // vm.max_map_count, the Linux layer's default).
  uint64_t max_vmas = 0;
  // --nice N|ksmd|keep: nice value of pksm's merging thread. Default "ksmd"
  // with --compare-kernel-ksm (ksmd runs at nice 5: on a busy machine the
  // two then compete for CPU on equal terms), otherwise "keep".
  enum class NiceChoice { kDefault, kKeep, kKsmd, kValue };
  NiceChoice nice = NiceChoice::kDefault;
  int nice_value = 0;

  // --- writers ---
  uint32_t writers = 0;            // --writers
  double writer_seconds = 0;       // --seconds
  uint32_t write_interval_us = 50; // --write-interval-us: pause between writes

  // --- output / phases ---
  double hold_sec = 0;             // --hold
  bool compare_kernel_ksm = false; // --compare-kernel-ksm
  bool kernel_only = false;        // --kernel-only: skip the pksm phase
  bool json = false;               // --json
  bool help = false;               // --help
};

// Parses argv[1..argc-1]. Accepts "--opt value" and "--opt=value".
// Returns "" on success, otherwise one line naming the bad option and value.
std::string ParseHostOptions(int argc, const char* const* argv, HostOptions* out);

// Same, for a vector of arguments (without the program name). For tests.
std::string ParseHostOptions(const std::vector<std::string>& args, HostOptions* out);

// The --help text.
std::string HostUsage();

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_OPTIONS_H_
