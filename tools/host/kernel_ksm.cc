#include "kernel_ksm.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "proc_stats.h"
#include "stop_signals.h"
#include "writers.h"

namespace pksm::host {

namespace {

std::string KnobPath(const std::string& knob) { return std::string(kKsmSysfs) + "/" + knob; }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Writes a knob; retries on EINTR (run=2 can be interrupted by a signal).
bool WriteKnob(const std::string& knob, const std::string& value, std::string* err) {
  const std::string path = KnobPath(knob);
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      *err = "open " + path + ": " + std::strerror(errno);
      return false;
    }
    ssize_t n = write(fd, value.data(), value.size());
    int saved = errno;
    close(fd);
    if (n == static_cast<ssize_t>(value.size())) return true;
    if (n < 0 && (saved == EINTR || saved == EAGAIN || saved == EBUSY)) {
      timespec ts{0, 10 * 1000 * 1000};
      nanosleep(&ts, nullptr);
      continue;
    }
    *err = "write '" + value + "' to " + path + ": " + (n < 0 ? std::strerror(saved) : "short write");
    return false;
  }
  *err = "write '" + value + "' to " + path + ": still interrupted after 100 attempts";
  return false;
}

// --- emergency restore, for signal handlers: fixed buffers, raw syscalls ---
struct EmergencyKnob {
  char path[128];
  char value[64];
  size_t len;
};
EmergencyKnob g_emergency_knobs[16];
volatile int g_emergency_count = 0;
volatile int g_emergency_started = 0;

void EmergencyWrite(const char* path, const char* value, size_t len) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = write(fd, value, len);
    close(fd);
    if (n >= 0 || errno != EINTR) return;
  }
}

void EmergencyRestore() {
  static char run_path[128];
  std::snprintf(run_path, sizeof(run_path), "%s/run", kKsmSysfs);  // no allocation
  if (g_emergency_started) EmergencyWrite(run_path, "2", 1);
  for (int i = g_emergency_count - 1; i >= 0; --i) {
    EmergencyWrite(g_emergency_knobs[i].path, g_emergency_knobs[i].value, g_emergency_knobs[i].len);
  }
  static const char kMsg[] = "pksm-host: kernel KSM knobs restored from the signal handler\n";
  ssize_t n = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
  (void)n;
}

// Host-wide lock serialising kernel KSM comparisons.
class KsmLock {
 public:
  explicit KsmLock(double timeout_sec) {
    fd_ = open(kKsmLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(std::string("open ") + kKsmLockPath + ": " + std::strerror(errno));
    const double deadline = NowSeconds() + timeout_sec;
    bool told = false;
    while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        int e = errno;
        close(fd_);
        throw std::runtime_error(std::string("flock ") + kKsmLockPath + ": " + std::strerror(e));
      }
      if (!told) {
        Progress("[kernel_ksm] waiting for another kernel KSM comparison (lock %s)", kKsmLockPath);
        told = true;
      }
      if (StopRequested() || NowSeconds() > deadline) {
        close(fd_);
        if (StopRequested()) throw Interrupted();
        throw std::runtime_error(std::string("timed out waiting for ") + kKsmLockPath);
      }
      timespec ts{0, 200 * 1000 * 1000};
      nanosleep(&ts, nullptr);
    }
  }
  ~KsmLock() {
    if (fd_ >= 0) close(fd_);  // releases the lock
  }
  KsmLock(const KsmLock&) = delete;
  KsmLock& operator=(const KsmLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace

std::optional<std::string> ReadKsmKnob(const std::string& knob) {
  auto s = ReadSmallFile(KnobPath(knob));
  if (!s) return std::nullopt;
  return Trim(*s);
}

uint64_t ReadKsmCounter(const std::string& knob) {
  auto s = ReadKsmKnob(knob);
  return s ? std::strtoull(s->c_str(), nullptr, 10) : 0;
}

KsmKnobGuard::KsmKnobGuard(double wait_sec) {
  if (access(KnobPath("run").c_str(), W_OK) != 0) {
    throw std::runtime_error(std::string("the kernel's KSM is not available: ") + KnobPath("run") +
                             " is not writable (" + std::strerror(errno) + "; needs root and CONFIG_KSM)");
  }
  auto run = ReadKsmKnob("run");
  if (!run) throw std::runtime_error("cannot read " + KnobPath("run"));
  const double deadline = NowSeconds() + wait_sec;
  bool told = false;
  while (*run != "0" && NowSeconds() < deadline) {
    if (!told) {
      Progress("[kernel_ksm] the kernel's KSM is in use (run=%s): waiting up to %.0fs for it to stop", run->c_str(),
               wait_sec);
      told = true;
    }
    ThrowIfStopRequested();
    SleepMs(500);
    run = ReadKsmKnob("run");
    if (!run) throw std::runtime_error("cannot read " + KnobPath("run"));
  }
  if (*run != "0") {
    throw std::runtime_error("the kernel's KSM is already running (" + KnobPath("run") + " = " + *run +
                             "): refusing to compare, its pages would be counted and its state lost");
  }
}

KsmKnobGuard::~KsmKnobGuard() {
  std::string err = Restore();
  if (!err.empty()) std::fprintf(stderr, "pksm-host: restoring kernel KSM knobs: %s\n", err.c_str());
}

void KsmKnobGuard::Set(const std::string& knob, const std::string& value) {
  bool known = false;
  for (auto& kv : originals_) known = known || kv.first == knob;
  if (!known) {
    auto orig = ReadKsmKnob(knob);
    if (!orig) throw std::runtime_error("cannot read " + KnobPath(knob));
    // Remember it for the emergency hook first, then for the normal path.
    if (g_emergency_count < 16) {
      EmergencyKnob& e = g_emergency_knobs[g_emergency_count];
      std::snprintf(e.path, sizeof(e.path), "%s", KnobPath(knob).c_str());
      std::snprintf(e.value, sizeof(e.value), "%s", orig->c_str());
      e.len = std::strlen(e.value);
      g_emergency_count = g_emergency_count + 1;
    }
    originals_.emplace_back(knob, *orig);
    ArmEmergencyHook(EmergencyRestore);
  }
  restored_ = false;
  if (knob == "run" && value == "1") {
    started_ = true;
    g_emergency_started = 1;
  }
  std::string err;
  if (!WriteKnob(knob, value, &err)) throw std::runtime_error(err);
}

void KsmKnobGuard::Unmerge() {
  if (!started_) return;
  std::string err;
  if (!WriteKnob("run", "2", &err)) throw std::runtime_error("unmerging (run=2): " + err);
}

std::string KsmKnobGuard::Restore() {
  if (restored_) return "";
  std::string problems;
  std::string err;
  if (started_ && !WriteKnob("run", "2", &err)) problems += err + "; ";
  for (auto it = originals_.rbegin(); it != originals_.rend(); ++it) {
    if (!WriteKnob(it->first, it->second, &err)) problems += err + "; ";
  }
  for (auto& [knob, value] : originals_) {
    auto now = ReadKsmKnob(knob);
    if (!now || *now != value) {
      problems += knob + " reads '" + (now ? *now : std::string("?")) + "', was '" + value + "'; ";
    }
  }
  restored_ = true;
  started_ = false;
  g_emergency_started = 0;
  g_emergency_count = 0;
  ArmEmergencyHook(nullptr);
  return problems;
}

PhaseResult RunKernelKsmPhase(const HostOptions& o, const Workload& w_in) {
  PhaseResult r;
  r.name = "kernel_ksm";
  r.dirty_log = "checksum";  // ksmd judges volatility by page checksums
  KsmLock lock(o.timeout_sec);
  auto guard = std::make_unique<KsmKnobGuard>(o.timeout_sec);

  // The saving ceiling depends on the kernel's max_page_sharing.
  const uint32_t mps = static_cast<uint32_t>(ReadKsmCounter("max_page_sharing"));
  Workload w = mps == 256 ? w_in : BuildWorkload(o, mps ? mps : 256);
  r.pages_total = w.pages_total;
  r.expected_saved = w.expected_saved;
  r.expected_saved_capped = w.expected_saved_capped;

  // ksmd serves every process: mergeable memory of others is scanned (and
  // merged) too and pollutes time, CPU and KSM's counters. Say so.
  {
    std::string list = "[";
    uint64_t total = 0;
    for (const MergeableProcess& p : FindOtherMergeable()) {
      Progress("[kernel_ksm] WARNING: pid %d (%s) has %llu KiB of MADV_MERGEABLE memory: ksmd will scan it too",
               static_cast<int>(p.pid), p.comm.c_str(), static_cast<unsigned long long>(p.kib));
      JsonObject j;
      j.Add("pid", static_cast<int64_t>(p.pid)).Add("comm", p.comm).Add("kib", p.kib);
      if (list.size() > 1) list += ',';
      list += j.ToString();
      total += p.kib;
    }
    list += "]";
    r.extras.emplace_back("other_mergeable_processes", list);
    r.extras.emplace_back("other_mergeable_kib", std::to_string(total));
  }
  auto ksmd = FindKsmd();
  if (!ksmd) throw std::runtime_error("no ksmd thread found in /proc");

  WorkloadMapping m(w.pages_total);
  PopulateForPhase("kernel_ksm", w, m, &r);

  guard->Set("pages_to_scan", std::to_string(o.pages_to_scan));
  guard->Set("sleep_millisecs", std::to_string(o.sleep_ms));
  guard->Set("use_zero_pages", "1");
  if (madvise(m.data(), m.bytes(), MADV_MERGEABLE) != 0) {
    throw std::runtime_error(std::string("madvise(MADV_MERGEABLE): ") + std::strerror(errno));
  }
  const uint64_t scans0 = ReadKsmCounter("full_scans");
  std::vector<uint64_t> keys = w.keys;
  std::vector<uint8_t> written(w.pages_total, 0);
  std::unique_ptr<WriterPool> writers;
  if (o.writers > 0) {
    writers = std::make_unique<WriterPool>(m.data(), &keys, &written, o.writers, o.writer_seconds,
                                           o.write_interval_us, o.dup_contents, o.seed);
  }

  SaveMonitor monitor(
      m.data(), w.pages_total, w.expected_saved_capped, [scans0] { return ReadKsmCounter("full_scans") - scans0; },
      [&writers] { return writers == nullptr || writers->Done(); }, [] { return uint64_t{0}; });

  const double cpu0 = TaskCpuSeconds(*ksmd).value_or(0);
  const double t0 = NowSeconds();
  guard->Set("run", "1");
  if (writers) writers->Start();
  monitor.Start(t0);
  double last_print = 0;
  for (;;) {
    ThrowIfStopRequested();
    const double now = NowSeconds() - t0;
    if (monitor.Done(now, o.timeout_sec, "kernel_ksm", &r)) break;
    if (now - last_print >= 1.0) {
      last_print = now;
      Progress("[kernel_ksm] %.1fs saved %llu/%llu pages (page tables; ksm counters: sharing %llu, zero %llu) "
               "full_scans %llu",
               now, static_cast<unsigned long long>(monitor.saved()),
               static_cast<unsigned long long>(w.expected_saved),
               static_cast<unsigned long long>(ReadKsmCounter("pages_sharing")),
               static_cast<unsigned long long>(ReadKsmCounter("ksm_zero_pages")),
               static_cast<unsigned long long>(ReadKsmCounter("full_scans") - scans0));
    }
    SleepMs(5);
  }
  r.cpu_seconds = TaskCpuSeconds(*ksmd).value_or(0) - cpu0;
  monitor.Stop();
  r.seconds_to_steady = monitor.last_growth();
  if (writers) {
    writers->Stop();
    writers->Join();
  }
  r.full_scans = ReadKsmCounter("full_scans") - scans0;
  MeasureAfter(m, 0, &r);
  // KSM's own counters are global (other processes' mergeable memory counts
  // too); the page tables of our range say what was merged here.
  r.pages_sharing = r.pagetable_pages_sharing;
  r.pages_shared = r.pagetable_pages_shared;
  r.ksm_zero_pages = r.pages_zero_frame;
  {
    JsonObject c;
    for (const char* k : {"pages_sharing", "pages_shared", "ksm_zero_pages", "pages_unshared", "pages_volatile",
                          "full_scans", "stable_node_chains", "stable_node_dups", "general_profit"}) {
      c.Add(k, ReadKsmCounter(k));
    }
    JsonObject self;
    for (auto& [k, v] : ReadKsmStat()) self.Add(k, v);
    c.AddRaw("this_process", self.ToString());
    r.extras.emplace_back("ksm_counters_global", c.ToString());
  }
  Progress("[kernel_ksm] steady=%s after %.2fs (last growth %.2fs): saved %llu pages by the page tables, "
           "ksmd cpu %.2fs",
           r.steady ? "yes" : "no", r.seconds_detected, r.seconds_to_steady,
           static_cast<unsigned long long>(r.saved_pages), r.cpu_seconds);

  HoldForInspection("kernel_ksm", o.hold_sec);

  // Every page must read what was last written: merged, then unmerged.
  VerifyResult v = VerifyPages(keys, m.data());
  guard->Unmerge();
  VerifyResult v2 = VerifyPages(keys, m.data());
  RecordIntegrity("kernel_ksm", v, v2, writers != nullptr, writers ? writers->writes() : 0,
                  writers ? writers->lost_writes() : 0, keys, written, m.data(), &r);
  std::string problems = guard->Restore();
  JsonObject knobs;
  for (auto& [k, val] : guard->originals()) knobs.Add(k, val);
  knobs.Add("restored", problems.empty());
  knobs.Add("smart_scan", ReadKsmKnob("smart_scan").value_or("?"));
  knobs.Add("max_page_sharing", static_cast<uint64_t>(mps));
  r.extras.emplace_back("knobs_original", knobs.ToString());
  if (!problems.empty()) throw std::runtime_error("kernel KSM knobs not restored: " + problems);
  Progress("[kernel_ksm] knobs restored, pages unmerged and verified");
  return r;
}

}  // namespace pksm::host
