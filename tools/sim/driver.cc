#include "driver.h"

#include <time.h>

#include <array>
#include <cstring>
#include <iomanip>
#include <istream>
#include <ostream>
#include <sstream>

namespace pksm::sim {
namespace {

uint64_t ProcessCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

const char* StateName(SimMemory::PageState s) {
  switch (s) {
    case SimMemory::PageState::kUntouched: return "untouched";
    case SimMemory::PageState::kPrivate: return "private";
    case SimMemory::PageState::kStable: return "stable";
    case SimMemory::PageState::kZero: return "zero-mapped";
  }
  return "?";
}

std::string Hex(uint8_t b) {
  static const char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

const std::array<uint8_t, kPageSize>& ZeroPage() {
  static const std::array<uint8_t, kPageSize> zero{};
  return zero;
}

}  // namespace

Driver::Driver(const SimConfig& config, std::ostream& out, std::ostream& log)
    : config_(config), out_(out), log_(log) {
  engine_ = std::make_unique<Engine>(memory_.memory(), memory_.merger(),
                                     config_.use_dirty_log ? memory_.dirty_log() : nullptr,
                                     config_.params);
}

Driver::~Driver() = default;

std::string Driver::CheckRange(uint64_t id, uint64_t first, uint64_t count, Region** region) {
  auto it = regions_.find(static_cast<uint32_t>(id));
  if (id > kMaxRegionId || it == regions_.end()) {
    return "region " + std::to_string(id) + " is not declared";
  }
  const uint64_t pages = it->second.pages.size();
  if (first >= pages || count > pages - first) {
    // count >= 1; FIRST+COUNT may pass 2^64 in a hostile trace.
    const std::string last = count - 1 > UINT64_MAX - first ? std::string("(past 2^64)")
                                                            : std::to_string(first + count - 1);
    return "pages " + std::to_string(first) + ".." + last +
           " are past the end of region " + std::to_string(id) + " (" + std::to_string(pages) +
           " pages: 0.." + std::to_string(pages - 1) + ")";
  }
  *region = &it->second;
  return "";
}

// Runs the engine with the CPU clock around it. budget > 0: one Step;
// otherwise RunPasses(passes). Returns what Step returned (0 for passes).
size_t Driver::RunTimed(size_t budget, uint64_t passes) {
  const uint64_t start = config_.measure_cpu ? ProcessCpuNs() : 0;
  size_t examined = 0;
  if (budget > 0) {
    examined = engine_->Step(budget);
  } else {
    engine_->RunPasses(passes);
  }
  if (config_.measure_cpu) scan_cpu_ns_ += ProcessCpuNs() - start;
  return examined;
}

// `scan N`: N single passes, so that progress (and the benchmark) can see
// the state after every pass. With run 2 one Step does the whole unmerge.
void Driver::ScanPasses(uint64_t passes, size_t line) {
  const uint32_t run = engine_->params().run;
  if (run == 0) {
    if (config_.progress) log_ << "pksm-sim: line " << line << ": scan: run is 0, nothing to do\n";
    return;
  }
  if (run == 2) {
    RunTimed(engine_->params().pages_to_scan, 0);
    if (config_.progress) {
      const Stats s = engine_->GetStats();
      log_ << "pksm-sim: line " << line << ": unmerged every page (unmerges " << s.unmerges
           << ", merged now " << s.pages_sharing + s.ksm_zero_pages << "), run is "
           << engine_->params().run << " now\n";
    }
    return;
  }
  for (uint64_t i = 0; i < passes; ++i) {
    RunTimed(0, 1);
    if (config_.progress) {
      const Stats s = engine_->GetStats();
      log_ << "pksm-sim: pass " << s.full_scans << ": merged " << s.pages_sharing + s.ksm_zero_pages
           << " pages (sharing " << s.pages_sharing << ", zero " << s.ksm_zero_pages
           << "), shared " << s.pages_shared << ", unshared " << s.pages_unshared
           << ", volatile " << s.pages_volatile << ", cow breaks " << s.cow_breaks
           << ", scanned " << s.pages_scanned << "\n";
    }
  }
}

Driver::Result Driver::Execute(const Command& c, size_t line, std::string* error) {
  Region* region = nullptr;
  switch (c.op) {
    case Command::Op::kNone:
      return Result::kOk;

    case Command::Op::kRegion: {
      const auto id = static_cast<uint32_t>(c.region);
      if (auto it = regions_.find(id); it != regions_.end()) {
        *error = "region " + std::to_string(id) + " declared twice (first at line " +
                 std::to_string(it->second.declared_at_line) + ")";
        return Result::kMalformed;
      }
      Region& r = regions_[id];
      r.pages.resize(c.count);
      r.declared_at_line = line;
      memory_.AddRegion(id, c.count);
      engine_->AddRegion(id, "region" + std::to_string(id), c.count);
      return Result::kOk;
    }

    case Command::Op::kFill:
    case Command::Op::kWrite: {
      if (*error = CheckRange(c.region, c.first, c.count, &region); !error->empty()) {
        return Result::kMalformed;
      }
      const auto id = static_cast<uint32_t>(c.region);
      std::array<uint8_t, kPageSize> buf;
      PageExpect e;
      e.seed = c.seed;
      if (c.op == Command::Op::kWrite) {
        e.kind = Expect::kSame;
      } else {
        e.kind = c.kind == ContentKind::kZero   ? Expect::kZero
                 : c.kind == ContentKind::kSame ? Expect::kSame
                                                : Expect::kUnique;
      }
      if (e.kind == Expect::kSame) FillContent(buf.data(), e.seed);
      for (uint64_t p = c.first; p < c.first + c.count; ++p) {
        const uint8_t* data = buf.data();
        if (e.kind == Expect::kZero) {
          data = ZeroPage().data();
        } else if (e.kind == Expect::kUnique) {
          FillContent(buf.data(), e.seed, p);
        }
        memory_.Write(PageRef{id, p}, data);
        region->pages[p] = e;
      }
      engine_->Track(id, c.first, c.count);
      return Result::kOk;
    }

    case Command::Op::kDiscard: {
      if (*error = CheckRange(c.region, c.first, c.count, &region); !error->empty()) {
        return Result::kMalformed;
      }
      const auto id = static_cast<uint32_t>(c.region);
      for (uint64_t p = c.first; p < c.first + c.count; ++p) {
        memory_.Discard(PageRef{id, p});
        region->pages[p] = PageExpect{};
      }
      engine_->Discard(id, c.first, c.count);
      return Result::kOk;
    }

    case Command::Op::kSet: {
      Params p = engine_->params();
      if (std::string err = p.Set(c.key, c.value); !err.empty()) {
        *error = "set: " + err;
        return Result::kMalformed;
      }
      if (std::string err = engine_->SetParams(p); !err.empty()) {
        *error = "set " + c.key + " " + c.value + ": " + err;
        return Result::kMalformed;
      }
      return Result::kOk;
    }

    case Command::Op::kScan:
      ScanPasses(c.count, line);
      return Result::kOk;

    case Command::Op::kStep: {
      const size_t examined = c.count > 0 ? RunTimed(c.count, 0) : 0;
      if (config_.progress) {
        const Stats s = engine_->GetStats();
        log_ << "pksm-sim: line " << line << ": step " << c.count << ": examined " << examined
             << " candidates, merged " << s.pages_sharing + s.ksm_zero_pages << " pages, "
             << s.full_scans << " full passes\n";
      }
      return Result::kOk;
    }

    case Command::Op::kStats:
      out_ << StatsJson() << "\n";
      return Result::kOk;

    case Command::Op::kVerify: {
      if (config_.corrupt_before_verify) {
        const PageRef ref = config_.corrupt_page;
        auto it = regions_.find(ref.region);
        if (it != regions_.end() && ref.index < it->second.pages.size()) {
          const uint8_t* now = memory_.Read(ref);
          memory_.WriteByte(ref, 0, static_cast<uint8_t>((now ? now[0] : 0) ^ 0x5a));
        }
      }
      uint64_t pages = 0;
      for (const auto& [id, r] : regions_) pages += r.pages.size();
      const uint64_t bad = VerifyAll();
      if (bad != 0) {
        *error = "verify failed: " + std::to_string(bad) + " of " + std::to_string(pages) +
                 " pages do not read what the trace wrote";
        return Result::kVerifyFailed;
      }
      ++verifies_passed_;
      if (config_.progress) {
        log_ << "pksm-sim: line " << line << ": verify: all " << pages << " pages read correctly\n";
      }
      return Result::kOk;
    }
  }
  *error = "internal error: unhandled command";
  return Result::kMalformed;
}

int Driver::RunTrace(std::istream& in, std::ostream& err) {
  std::string text;
  size_t line = 0;
  Command command;
  while (std::getline(in, text)) {
    ++line;
    std::string problem = ParseLine(text, &command);
    if (!problem.empty()) {
      err << "pksm-sim: trace:" << line << ": " << problem << "\n";
      return 2;
    }
    switch (Execute(command, line, &problem)) {
      case Result::kOk:
        break;
      case Result::kMalformed:
        err << "pksm-sim: trace:" << line << ": " << problem << "\n";
        return 2;
      case Result::kVerifyFailed:
        err << "pksm-sim: trace:" << line << ": " << problem << "\n";
        for (const Mismatch& m : mismatches_) {
          err << "  region " << m.region << " page " << m.page << ": expected " << m.expected
              << ", " << m.found << "\n";
        }
        if (mismatches_.size() < mismatch_total_) {
          err << "  (only the first " << mismatches_.size() << " are listed)\n";
        }
        return 1;
    }
  }
  if (in.bad()) {
    err << "pksm-sim: trace:" << line + 1 << ": read error\n";
    return 2;
  }
  return 0;
}

std::string Driver::Describe(const PageExpect& e, uint64_t index) const {
  switch (e.kind) {
    case Expect::kUntouched: return "zero (untouched)";
    case Expect::kZero: return "zero";
    case Expect::kSame: return "content(" + std::to_string(e.seed) + ")";
    case Expect::kUnique:
      return "content(" + std::to_string(e.seed) + ", " + std::to_string(index) + ")";
  }
  return "?";
}

uint64_t Driver::VerifyAll(size_t keep) {
  mismatches_.clear();
  uint64_t bad = 0;
  std::array<uint8_t, kPageSize> buf;
  for (const auto& [id, r] : regions_) {
    // Pages filled `same` in a row share one seed: generate it once.
    bool have_same = false;
    uint64_t same_seed = 0;
    for (uint64_t p = 0; p < r.pages.size(); ++p) {
      const PageExpect& e = r.pages[p];
      const uint8_t* want = ZeroPage().data();
      if (e.kind == Expect::kSame) {
        if (!have_same || same_seed != e.seed) {
          FillContent(buf.data(), e.seed);
          have_same = true;
          same_seed = e.seed;
        }
        want = buf.data();
      } else if (e.kind == Expect::kUnique) {
        FillContent(buf.data(), e.seed, p);
        have_same = false;
        want = buf.data();
      }
      const PageRef ref{id, p};
      const uint8_t* got = memory_.Read(ref);
      if (got != nullptr && std::memcmp(got, want, kPageSize) == 0) continue;
      ++bad;
      if (mismatches_.size() >= keep) continue;
      Mismatch m;
      m.region = id;
      m.page = p;
      m.expected = Describe(e, p);
      if (got == nullptr) {
        m.found = "but the page cannot be read";
      } else {
        size_t off = 0;
        while (got[off] == want[off]) ++off;
        m.found = "but byte " + std::to_string(off) + " is " + Hex(got[off]) + " instead of " +
                  Hex(want[off]) + " (page state " + StateName(memory_.State(ref)) + ")";
      }
      mismatches_.push_back(std::move(m));
    }
  }
  mismatch_total_ = bad;
  return bad;
}

std::string Driver::StatsJson() const {
  std::string json = engine_->GetStats().ToJson();
  if (!config_.measure_cpu) return json;
  while (!json.empty() && (json.back() == '\n' || json.back() == ' ')) json.pop_back();
  if (json.empty() || json.back() != '}') return json;
  json.pop_back();
  const uint64_t scanned = engine_->GetStats().pages_scanned;
  std::ostringstream extra;
  extra << (json.size() > 1 ? "," : "") << "\"scan_cpu_ns\":" << scan_cpu_ns_
        << ",\"scan_cpu_ns_per_page\":" << std::fixed << std::setprecision(1)
        << (scanned ? static_cast<double>(scan_cpu_ns_) / static_cast<double>(scanned) : 0.0)
        << "}";
  return json + extra.str();
}

void Driver::PrintResultTable(std::ostream& out) const {
  const Stats s = engine_->GetStats();
  const Params& p = engine_->params();
  uint64_t pages = 0;
  for (const auto& [id, r] : regions_) pages += r.pages.size();
  const uint64_t merged = s.pages_sharing + s.ksm_zero_pages;
  auto mib = [](uint64_t n) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(1) << static_cast<double>(n) * kPageSize / (1 << 20)
      << " MiB";
    return o.str();
  };
  auto row = [&out](const char* name, const std::string& value) {
    out << "  " << std::left << std::setw(26) << name << value << "\n";
  };
  auto num = [](uint64_t v) { return std::to_string(v); };

  out << "pksm-sim result: mode " << ToString(p.mode)
      << (p.mode == Mode::kKsm ? ", no probation" : ", delay " + std::to_string(p.delay))
      << ", pages_to_scan " << p.pages_to_scan << ", max_page_sharing " << p.max_page_sharing
      << ", use_zero_pages " << (p.use_zero_pages ? 1 : 0) << ", new_ratio " << p.new_ratio
      << ", volatility from " << (s.dirty_log.empty() ? "?" : s.dirty_log) << "\n";
  row("regions / pages", num(regions_.size()) + " / " + num(pages) + " (" + mib(pages) + ")");
  row("pages tracked", num(s.rmap_items));
  row("full passes", num(s.full_scans));
  row("pages merged", num(merged) + " (" + mib(merged) + " saved)");
  row("  pages_sharing", num(s.pages_sharing));
  row("  ksm_zero_pages", num(s.ksm_zero_pages));
  row("pages_shared", num(s.pages_shared));
  row("pages_unshared", num(s.pages_unshared));
  row("pages_volatile", num(s.pages_volatile));
  row("stable chains / dups", num(s.stable_node_chains) + " / " + num(s.stable_node_dups));
  row("general_profit", std::to_string(s.general_profit) + " bytes");
  row("host memory in use", num(memory_.HostPages()) + " pages (" + mib(memory_.HostPages()) + ")");
  row("cow breaks", num(s.cow_breaks));
  row("pages scanned", num(s.pages_scanned));
  row("merges / failures", num(s.merges) + " / " + num(s.merge_failures));
  row("unmerges", num(s.unmerges));
  row("pages compared (memcmp)", num(s.pages_compared));
  row("partial hash hits/misses", num(s.partial_hash_hits) + " / " + num(s.partial_hash_misses));
  row("bytes hashed", num(s.bytes_hashed));
  row("lists new/rescan/del", num(s.new_list) + " / " + num(s.rescan_list) + " / " + num(s.del_list));
  if (config_.measure_cpu) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(1) << scan_cpu_ns_ / 1e6 << " ms ("
      << (s.pages_scanned ? static_cast<double>(scan_cpu_ns_) / static_cast<double>(s.pages_scanned)
                          : 0.0)
      << " ns per scanned page)";
    row("scan CPU", o.str());
  }
  row("verify", verifies_passed_ ? "passed " + num(verifies_passed_) + " time(s)" : "not run");
}

}  // namespace pksm::sim
