// Driver: runs a trace against the engine over simulated guest memory.
//
// The driver owns a SimMemory (guest RAM plus the three seams) and an Engine
// built over it, and plays the guest: fills and writes go to SimMemory::Write
// and Engine::Track, discards to SimMemory::Discard and Engine::Discard.
//
// It also remembers, for every page, what the trace last put there -- only
// the recipe (zero, content(seed) or content(seed, index)), 16 bytes a page,
// not the 4 KiB -- so `verify` can regenerate each page and compare it with
// what SimMemory::Read returns. That is the simulator's end-to-end check that
// merging, copy-on-write breaks and unmerging never changed what the guest
// reads.
//
// Everything is deterministic: the same trace and options give the same
// statistics, except the optional scan CPU time.
#ifndef PKSM_TOOLS_SIM_DRIVER_H_
#define PKSM_TOOLS_SIM_DRIVER_H_

#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pksm/engine.h"
#include "pksm/params.h"
#include "pksm/sim_memory.h"
#include "pksm/stats.h"
#include "trace.h"

namespace pksm::sim {

struct SimConfig {
  Params params;               // must be valid (Params::Validate() == "")
  bool use_dirty_log = true;   // false: engine without DirtyLog (checksum fallback)
  bool measure_cpu = false;    // add scan CPU time to every statistics JSON
  bool progress = true;        // one progress line per completed pass
  // Fault injection for tests of `verify` itself: before every verify, flip
  // a byte of this page behind the driver's back (SimMemory::WriteByte).
  bool corrupt_before_verify = false;
  PageRef corrupt_page;
};

// One page that does not read what the trace gave it.
struct Mismatch {
  uint32_t region = 0;
  uint64_t page = 0;
  std::string expected;  // "zero", "content(7)", "content(7, 12)"
  std::string found;     // first differing byte and the page's state
};

class Driver {
 public:
  // `out` receives `stats` lines; `log` receives progress lines.
  Driver(const SimConfig& config, std::ostream& out, std::ostream& log);
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  enum class Result { kOk, kMalformed, kVerifyFailed };

  // Executes one parsed command (line number for progress lines). On
  // kMalformed, *error names the problem (e.g. "region 3 is not declared");
  // on kVerifyFailed, *error is a summary and mismatches() lists the pages.
  Result Execute(const Command& command, size_t line, std::string* error);

  // Parses and executes every line of `in`. A malformed line prints
  // "pksm-sim: trace:LINE: PROBLEM" to `err` and returns 2; a failed verify
  // prints the mismatching pages to `err` and returns 1; otherwise 0.
  int RunTrace(std::istream& in, std::ostream& err);

  // Checks every page of every region; returns the number that differ and
  // keeps the first `keep` of them in mismatches().
  uint64_t VerifyAll(size_t keep = 20);
  const std::vector<Mismatch>& mismatches() const { return mismatches_; }

  // Stats::ToJson(), plus "scan_cpu_ns" and "scan_cpu_ns_per_page" when
  // measuring CPU.
  std::string StatsJson() const;
  // A human-readable summary of the run.
  void PrintResultTable(std::ostream& out) const;

  Stats GetStats() const { return engine_->GetStats(); }
  uint64_t scan_cpu_ns() const { return scan_cpu_ns_; }
  uint64_t verifies_passed() const { return verifies_passed_; }
  SimMemory& memory() { return memory_; }
  Engine& engine() { return *engine_; }

 private:
  // What the trace last put in a page. kUntouched and kZero both read as
  // zero; only kZero pages are populated (and tracked).
  enum class Expect : uint8_t { kUntouched, kZero, kSame, kUnique };
  struct PageExpect {
    uint64_t seed = 0;
    Expect kind = Expect::kUntouched;
  };
  struct Region {
    std::vector<PageExpect> pages;
    size_t declared_at_line = 0;
  };

  // Region `id` if declared and [first, first+count) inside it; else an error.
  std::string CheckRange(uint64_t id, uint64_t first, uint64_t count, Region** region);
  void ScanPasses(uint64_t passes, size_t line);
  size_t RunTimed(size_t budget, uint64_t passes);
  std::string Describe(const PageExpect& e, uint64_t index) const;

  SimConfig config_;
  std::ostream& out_;
  std::ostream& log_;
  SimMemory memory_;
  std::unique_ptr<Engine> engine_;
  std::map<uint32_t, Region> regions_;
  std::vector<Mismatch> mismatches_;
  uint64_t mismatch_total_ = 0;
  uint64_t scan_cpu_ns_ = 0;
  uint64_t verifies_passed_ = 0;
};

}  // namespace pksm::sim

#endif  // PKSM_TOOLS_SIM_DRIVER_H_
