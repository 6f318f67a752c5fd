// ProcessMemory on Linux: merging pages of the calling process.
//
// Race safety. Every region is registered with ONE synchronous userfaultfd
// context in write-protect (WP) mode, and every page starts protected. One
// mutex (mu_) serialises the three things that change protection:
//
//   fault thread   a write hit a protected page: set its dirty bit, clear the
//                  protection of that page, wake the writer;
//   Harvest        for each dirty page: protect it again, report it, clear
//                  the bit;
//   Merger         protect the candidate (or find it protected), compare
//                  under protection, remap (or drop) it, register and
//                  protect the new mapping. Writers that blocked meanwhile
//                  are woken by the fault thread when it serves their
//                  fault, after the merge (see ProtectCandidate).
//
// Invariant at every unlock: a page without protection has its dirty bit set
// (or is being reported by the Harvest that holds the lock). So a write is
// either seen by the fault thread or lands on a page already known dirty;
// the dirty log never misses one. A writer that hits a page being merged
// blocks in the kernel until the merge is over: it cannot be served, since
// the fault thread waits for mu_. Woken, it faults again on the new mapping:
// on a pool page that is a normal copy-on-write break, on a dropped zero
// page a fresh zeroed page; the write lands either way.
//
// The one window the lock cannot close: a new mapping made by mmap(MAP_FIXED)
// or a page dropped by MADV_DONTNEED is unprotected until we protect it
// again a few microseconds later. A write arriving in that window lands (on
// a private copy of the pool page, or on a fresh zero page: the content
// before it is right either way) but raises no fault. Before the next
// harvest reports anything it reads the pagemap entries of the pages merged
// since (CheckRemapWindows); a private anonymous page there means such a
// write happened, and the page is marked dirty (counted as racing_writes).
// Nothing is lost and the dirty log still reports it.
//
// Unmerge does not remap at all: it performs an atomic add of zero on the
// page, which makes the kernel break copy-on-write exactly as a guest write
// would (the kernel copies the page under its page-table lock, so a racing
// writer's bytes survive). Remapping anonymous memory and copying the
// content back would lose a write landing between the mmap and the copy.
//
// Why not WP_ASYNC: an asynchronous context resolves write faults in the
// kernel and never blocks a writer, and a range can belong to only one
// context, so it cannot also protect a page while it is compared and
// remapped. Closing that race without blocking needs MISSING-mode
// registration (every first touch of guest RAM would then go through the
// fault thread) and UFFDIO_MOVE, which does not move shmem pool pages back
// for unmerge. The synchronous context costs one round trip through the
// fault thread per first write to a page after each harvest.
#include "pksm/linux/process_memory.h"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "pksm/linux/proc_self.h"
#include "stable_pool.h"
#include "uffd.h"

namespace pksm {

const char* ToString(DirtyLogKind k) {
  switch (k) {
    case DirtyLogKind::kAuto: return "auto";
    case DirtyLogKind::kUffdAsync: return "uffd-async";
    case DirtyLogKind::kUffdSync: return "uffd-sync";
    case DirtyLogKind::kChecksum: return "checksum";
  }
  return "?";
}

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

// Accesses to guest pages made while the page is write-protected (compare,
// copy, remap, drop). The kernel orders them against writers: a writer is
// blocked until the merge is over. ThreadSanitizer cannot see that ordering,
// so under TSan these accesses are hidden from it (ignored, not suppressed:
// the fault thread and the tables are still checked).
class [[maybe_unused]] ProtectedAccess {
 public:
#if defined(__SANITIZE_THREAD__)
  ProtectedAccess() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~ProtectedAccess() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
#else
  ProtectedAccess() {}  // user-provided: no unused-variable warnings
#endif
  ProtectedAccess(const ProtectedAccess&) = delete;
  ProtectedAccess& operator=(const ProtectedAccess&) = delete;
};

bool PksmProtectedEqual(const uint8_t* a, const uint8_t* b) {
  ProtectedAccess hide;
  return memcmp(a, b, kPageSize) == 0;
}
void PksmProtectedCopy(uint8_t* dst, const uint8_t* src) {
  ProtectedAccess hide;
  memcpy(dst, src, kPageSize);
}
bool PksmProtectedIsZero(const uint8_t* p) {
  ProtectedAccess hide;
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t acc = 0;
  for (size_t i = 0; i < kPageSize / 8; ++i) acc |= w[i];
  return acc == 0;
}

namespace {

// PAGEMAP_SCAN (Linux 6.7), declared here: Debian 12's headers predate it.
struct PmPageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsWritten = 1 << 1;
constexpr uint64_t kPmScanWpMatching = 1 << 0;  // write-protect what matched (async WP)

// Staging pages of the asynchronous mode: a candidate is moved out to one
// while it is compared and until its remap is made (see StageCandidate).
constexpr uint32_t kStagingSlots = 4096;
constexpr uint32_t kNoSlot = ~0u;

constexpr uint32_t kAnonKey = StablePool::kNone;
constexpr uint64_t kDefaultPoolPages = 1ULL << 24;  // 64 GiB of address space

enum class PageState : uint8_t { kPrivate, kStable, kZero };

// Takes mu_ for the owner thread (or a stats reader), first giving way to
// the fault thread if it is waiting for the lock: writers blocked in the
// kernel must not wait for a whole batch of merges.
class OwnerLock {
 public:
  OwnerLock(std::mutex& mu, const std::atomic<int>& fault_waiting) : mu_(mu) {
    for (int i = 0; i < 10000 && fault_waiting.load(std::memory_order_relaxed) > 0; ++i) {
      std::this_thread::yield();
    }
    mu_.lock();
  }
  ~OwnerLock() { mu_.unlock(); }
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;

 private:
  std::mutex& mu_;
};

inline void SetBit(std::vector<uint64_t>& v, size_t i) { v[i / 64] |= 1ULL << (i % 64); }
inline bool TestBit(const std::vector<uint64_t>& v, size_t i) { return v[i / 64] >> (i % 64) & 1; }

// One registered range of guest pages.
//   key[i]   what page i's VMA maps: kAnonKey (anonymous memory) or the pool
//            offset (a pool file VMA; the page itself may since have been
//            copied by a COW break). Adjacent pages share a VMA when both
//            are anonymous or their offsets are consecutive, which is how
//            the VMA count is kept without reading /proc/self/maps.
//   state[i] what the engine was told: private, stable (key[i]) or zero.
struct Region {
  RegionId id = 0;
  uint8_t* host = nullptr;
  size_t pages = 0;
  std::vector<uint64_t> dirty;
  std::vector<uint64_t> untracked;  // merged but not registered: always dirty
  std::vector<uint64_t> queued;     // its remap waits in pending_ (see QueueRemap)
  std::vector<uint32_t> key;
  std::vector<PageState> state;
  uint64_t extra_vmas = 0;
  // Hot-page backoff (see Harvest): harvest number of the last report,
  // consecutive reports, harvests left before protecting again.
  uint32_t harvest_gen = 0;
  std::vector<uint32_t> last_dirty;
  std::vector<uint8_t> streak, skip;
  // Pages remapped (merged) since the last harvest whose remap window has
  // not been checked yet (see CheckRemapWindows).
  std::vector<uint32_t> unchecked;
  std::chrono::steady_clock::time_point last_audit{};  // see AuditProtection
  uint8_t* Addr(size_t i) const { return host + i * kPageSize; }
  size_t bytes() const { return pages * kPageSize; }
};

// A merge that was decided and verified under protection but whose
// page-table change waits for FlushLocked (see QueueRemap).
struct PendingRemap {
  Region* r;
  uint32_t index;
  uint32_t new_key;  // pool offset, or kAnonKey for a zero merge
  uint32_t old_key;  // what the page's VMA mapped before
  bool zero;
  bool unprotected = false;  // lost its protection while queued (see FlushCluster)
  uint32_t slot = kNoSlot;   // async mode: the staging page holding its content
};

class LinuxProcessMemory;

class LinuxGuestMemory final : public GuestMemory {
 public:
  explicit LinuxGuestMemory(LinuxProcessMemory* pm) : pm_(pm) {}
  const uint8_t* PageData(PageRef page) override;

 private:
  LinuxProcessMemory* pm_;
};

class LinuxMerger final : public Merger {
 public:
  explicit LinuxMerger(LinuxProcessMemory* pm) : pm_(pm) {}
  std::string_view Name() const override { return "linux-uffd"; }
  MergeResult CreateStable(PageRef page, StableHandle* out) override;
  MergeResult MergeInto(StableHandle s, PageRef page) override;
  MergeResult MergeZero(PageRef page) override;
  bool Unmerge(PageRef page) override;
  bool IsMerged(PageRef page) override;
  const uint8_t* StableData(StableHandle s) override;
  void ReleaseStable(StableHandle s) override;
  void Flush() override;

 private:
  LinuxProcessMemory* pm_;
};

class LinuxDirtyLog final : public DirtyLog {
 public:
  explicit LinuxDirtyLog(LinuxProcessMemory* pm) : pm_(pm) {}
  std::string_view Name() const override;
  void Harvest(RegionId region, size_t pages, uint64_t* dirty) override;

 private:
  LinuxProcessMemory* pm_;
};

class LinuxProcessMemory final : public ProcessMemory {
 public:
  explicit LinuxProcessMemory(const ProcessMemoryOptions& o)
      : options_(o), guest_(this), merger_(this), dirty_(this) {}
  ~LinuxProcessMemory() override;

  bool Init(std::string* error);

  bool AddRegion(RegionId id, void* host, size_t pages, std::string* error) override;
  void RemoveRegion(RegionId id) override;
  GuestMemory* memory() override { return &guest_; }
  Merger* merger() override { return &merger_; }
  DirtyLog* dirty_log() override { return dirty_log_enabled_ ? &dirty_ : nullptr; }
  std::string dirty_log_name() const override {
    return dirty_log_enabled_ ? (async_ ? "uffd-async" : "uffd-sync") : "checksum";
  }
  bool async() const { return async_; }
  std::string kernel_features() const override {
    std::string f = Userfaultfd::FeatureNames(uffd_.kernel_features());
    if (scan_ok_) f += f.empty() ? "PAGEMAP_SCAN" : " PAGEMAP_SCAN";
    return f;
  }
  bool merging_enabled() const override {
    std::lock_guard<std::mutex> l(mu_);
    return merging_;
  }
  std::string unavailable_reason() const override {
    std::lock_guard<std::mutex> l(mu_);
    return unavailable_;
  }
  void Suspend() override;
  bool Resume(std::string* error) override;
  ProcessMemoryStats stats() const override {
    OwnerLock l(mu_, fault_waiting_);
    ProcessMemoryStats s = stats_;
    s.vmas_used = vmas_used_;
    s.vma_budget = budget_;
    s.pool_pages = pool_.live();
    return s;
  }

  // Seams (owner thread).
  const uint8_t* PageData(PageRef page);
  MergeResult CreateStable(PageRef page, StableHandle* out);
  MergeResult MergeInto(StableHandle s, PageRef page);
  MergeResult MergeZero(PageRef page);
  bool Unmerge(PageRef page);
  bool IsMerged(PageRef page);
  const uint8_t* StableData(StableHandle s) { return pool_.Page(static_cast<uint32_t>(s)); }
  void ReleaseStable(StableHandle s);
  void Flush() {
    OwnerLock l(mu_, fault_waiting_);
    FlushLocked();
  }
  void Harvest(RegionId region, size_t pages, uint64_t* dirty);

 private:
  void Log(const std::string& msg) const {
    if (options_.log) options_.log(msg);
    else fprintf(stderr, "pksm: %s\n", msg.c_str());
  }
  Region* Find(PageRef page) {
    auto it = regions_.find(page.region);
    if (it == regions_.end() || page.index >= it->second->pages) return nullptr;
    return it->second.get();
  }
  Region* FindAddr(uintptr_t addr) {
    auto it = by_addr_.upper_bound(addr);
    if (it == by_addr_.begin()) return nullptr;
    --it;
    Region* r = it->second;
    if (addr >= reinterpret_cast<uintptr_t>(r->host) + r->bytes()) return nullptr;
    return r;
  }
  void FaultLoop();
  void HandleWriteFault(uintptr_t addr);
  void HandleMissingFault(uintptr_t addr);
  void HarvestAsync(Region* r, size_t n, uint64_t* out);
  const uint8_t* CandidateData(Region* r, size_t i, uint32_t slot) const {
    return slot == kNoSlot ? r->Addr(i) : staging_ + static_cast<size_t>(slot) * kPageSize;
  }
  void Unstage(Region* r, size_t i, uint32_t slot);
  int MovePage(uint8_t* dst, uint8_t* src);
  void ReleaseSlots();
  void FaultThreadFailed(const std::string& why);

  // Pagemap views of one page.
  bool ReadsZeroPage(const PagemapEntry& e) const {
    // The 4 KiB zero page (known pfn), or a huge zero page (not anonymous:
    // pagemap shows it as a file page inside an anonymous VMA).
    return e.present && (e.file || (zero_pfn_ != 0 ? e.pfn == zero_pfn_ : !e.exclusive));
  }
  // No page behind the pte at all: empty, or only a write-protect marker.
  static bool NoMemory(const PagemapEntry& e) { return !e.present && (!e.swapped || e.wp_marker); }
  bool IsMergedLocked(Region* r, size_t i);
  void LeaveStable(Region* r, size_t i);  // state stable -> private
  bool PageAboutToMerge(Region* r, size_t i, MergeResult* refuse);
  bool ProtectCandidate(Region* r, size_t i, bool refuse_unpopulated, MergeResult* refuse, uint32_t* slot);
  bool CandidateEntry(Region* r, size_t i, PagemapEntry* e);
  void PageTablesChanged() { ++pt_gen_; }
  void NoteRemap(Region* r, size_t i);
  // Bookkeeping of a page now mapping pool page `off` (CreateStable, MergeInto).
  MergeResult CommitStableMerge(Region* r, size_t i, uint32_t off, uint32_t slot,
                                std::chrono::steady_clock::time_point t0);
  // Counts a merge that started at t0 (merges, merge_ns); returns kMerged.
  MergeResult CountMerge(std::chrono::steady_clock::time_point t0);
  void CheckRemapWindows(Region* r);
  int64_t VmaDelta(const Region* r, size_t i, uint32_t new_key) const;
  uint32_t AssignKey(Region* r, size_t i, uint32_t new_key);
  void DropKey(uint32_t key);
  bool OverBudget(int64_t delta);
  bool InjectMmapFailure();
  void QueueRemap(Region* r, size_t i, uint32_t new_key, bool zero, uint32_t slot);
  void FlushLocked();
  void FlushOne(Region* r, size_t i);
  void FlushCluster(size_t first, size_t end);
  void FailRemap(const struct PendingRemap& p, int err);
  void Track(Region* r, size_t i);
  void AuditProtection(Region* r);

  ProcessMemoryOptions options_;
  LinuxGuestMemory guest_;
  LinuxMerger merger_;
  LinuxDirtyLog dirty_;

  Userfaultfd uffd_;
  StablePool pool_;
  Pagemap pagemap_;
  bool have_uffd_ = false;
  bool async_ = false;  // dirty log uffd-async: WP_ASYNC + MISSING + MOVE
  uint8_t* staging_ = nullptr;           // kStagingSlots pages (async mode)
  std::vector<uint32_t> free_slots_;     // of staging_
  bool async_refusal_logged_ = false;
  bool merging_ = false;
  bool dirty_log_enabled_ = false;
  std::atomic<bool> scan_ok_{false};  // PAGEMAP_SCAN works (Linux 6.7+)
  std::string unavailable_;
  uint64_t zero_pfn_ = 0;

  int stop_fd_ = -1;
  std::thread fault_thread_;

  mutable std::atomic<int> fault_waiting_{0};
  mutable std::mutex mu_;  // guards everything below and the page tables' protection
  std::map<RegionId, std::unique_ptr<Region>> regions_;
  std::map<uintptr_t, Region*> by_addr_;
  std::vector<uint32_t> refs_;  // per pool offset: pages in state kStable mapping it
  std::vector<uint32_t> key_refs_;  // per pool offset: pages whose VMA maps it (any state)
  bool suspended_ = false;
  uint64_t budget_ = 0;
  uint64_t vmas_used_ = 0;
  uint64_t mmaps_done_ = 0;
  bool budget_logged_ = false;
  bool disabled_logged_ = false;
  ProcessMemoryStats stats_;
  // Merges verified but not yet remapped (see QueueRemap).
  std::vector<PendingRemap> pending_;
  std::vector<uint64_t> cluster_raw_;  // scratch of FlushCluster
  // Pagemap entries read ahead for merge candidates (see CandidateEntry),
  // valid while pt_gen_ is unchanged: every page-table change of ours
  // (protect, unprotect, remap, fault served) bumps it.
  struct PagemapWindow {
    const Region* r = nullptr;
    size_t first = 0, n = 0;
    uint64_t gen = 0;
    uint64_t raw[64];
  } window_;
  uint64_t pt_gen_ = 1;
};

LinuxProcessMemory::~LinuxProcessMemory() {
  if (fault_thread_.joinable()) {
    uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof one) < 0) { /* the thread also stops on close */ }
    fault_thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  if (have_uffd_ && !suspended_) {
    for (auto& [id, r] : regions_) uffd_.Unregister(r->host, r->bytes());
  }
  if (staging_ != nullptr) munmap(staging_, size_t{kStagingSlots} * kPageSize);
}

bool LinuxProcessMemory::Init(std::string* error) {
  const bool want_async = options_.dirty_log == DirtyLogKind::kUffdAsync;
  if (!pagemap_.ok()) {
    *error = std::string("cannot open /proc/self/pagemap: ") + strerror(errno);
    return false;
  }
  uint64_t pool_pages = options_.pool_max_pages ? options_.pool_max_pages : kDefaultPoolPages;
  if (!pool_.Open(pool_pages, error)) return false;
  refs_.assign(pool_.capacity(), 0);
  key_refs_.assign(pool_.capacity(), 0);

  // The pfn of the shared zero page (readable as root), to recognise pages
  // that read from it.
  void* probe = mmap(nullptr, kPageSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe != MAP_FAILED) {
    volatile const uint8_t* b = static_cast<const uint8_t*>(probe);
    (void)*b;
    PagemapEntry e;
    if (pagemap_.Read(probe, &e) && e.present) zero_pfn_ = e.pfn;
    // Probe PAGEMAP_SCAN on the same page.
    PmPageRegion v[1];
    PmScanArg a{};
    a.size = sizeof a;
    a.start = reinterpret_cast<uintptr_t>(probe);
    a.end = a.start + kPageSize;
    a.vec = reinterpret_cast<uintptr_t>(v);
    a.vec_len = 1;
    a.category_mask = kPageIsWritten;
    a.return_mask = kPageIsWritten;
    scan_ok_ = ioctl(pagemap_.fd(), kPagemapScan, &a) >= 0;
    munmap(probe, kPageSize);
  }

  std::string uerr;
  if (want_async && !scan_ok_) {
    *error = "dirty log 'uffd-async' needs PAGEMAP_SCAN (Linux 6.7), which this kernel refuses";
    return false;
  }
  if (options_.simulate_no_uffd) {
    uerr = "userfaultfd unavailable: disabled by simulate_no_uffd";
  } else if (uffd_.Open(&uerr, want_async)) {
    if (!uffd_.has_wp_shmem()) {
      uerr = "userfaultfd lacks WP_HUGETLBFS_SHMEM (needed to protect merged pool pages); kernel features: " +
             Userfaultfd::FeatureNames(uffd_.kernel_features());
    } else {
      have_uffd_ = true;
    }
  }
  if (!have_uffd_) {
    if (options_.dirty_log == DirtyLogKind::kUffdSync || want_async) {
      *error = uerr;
      return false;
    }
    unavailable_ = uerr + "; merging disabled (it needs write protection), dirty log: checksum";
    Log(unavailable_);
  } else {
    merging_ = true;
    // Without WP_UNPOPULATED the first write to a never-populated page does
    // not fault, so a synchronous dirty log would miss it.
    bool can_log = uffd_.has_wp_unpopulated();
    if (options_.dirty_log == DirtyLogKind::kUffdSync && !can_log) {
      *error = "dirty log 'uffd-sync' needs UFFD_FEATURE_WP_UNPOPULATED; kernel features: " +
               Userfaultfd::FeatureNames(uffd_.kernel_features());
      return false;
    }
    dirty_log_enabled_ = can_log && options_.dirty_log != DirtyLogKind::kChecksum;
    if (want_async) {
      // Candidates are moved out to staging pages (UFFDIO_MOVE wants both
      // ends anonymous and registered with this context).
      void* st = mmap(nullptr, size_t{kStagingSlots} * kPageSize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (st == MAP_FAILED) {
        *error = std::string("cannot map the staging area: ") + strerror(errno);
        return false;
      }
      staging_ = static_cast<uint8_t*>(st);
      madvise(staging_, size_t{kStagingSlots} * kPageSize, MADV_NOHUGEPAGE);
      if (int e = uffd_.Register(staging_, size_t{kStagingSlots} * kPageSize); e != 0) {
        *error = std::string("cannot register the staging area: ") + strerror(e);
        return false;
      }
      for (uint32_t k = kStagingSlots; k > 0; --k) free_slots_.push_back(k - 1);
      async_ = true;
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    if (stop_fd_ < 0) {
      *error = std::string("eventfd failed: ") + strerror(errno);
      return false;
    }
    fault_thread_ = std::thread([this] { FaultLoop(); });
  }

  if (options_.max_vmas != 0) {
    budget_ = options_.max_vmas;
  } else {
    int64_t max = ReadMaxMapCount();
    int64_t now = ReadMapCount();
    int64_t b = (max < 0 || now < 0) ? 0 : max - now - static_cast<int64_t>(options_.vma_reserve);
    budget_ = b > 0 ? static_cast<uint64_t>(b) : 0;
  }
  return true;
}

// ---- fault thread ----

void LinuxProcessMemory::FaultLoop() {
  pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  uffd_msg msgs[64];
  for (;;) {
    int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      FaultThreadFailed(std::string("poll failed: ") + strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    ssize_t n = read(uffd_.fd(), msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      FaultThreadFailed(std::string("read failed: ") + strerror(errno));
      return;
    }
    for (size_t k = 0; k < static_cast<size_t>(n) / sizeof(uffd_msg); ++k) {
      if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
      const uintptr_t addr = msgs[k].arg.pagefault.address & ~(kPageSize - 1);
      // A blocked thread waits for this: announce it so the owner thread
      // lets go of mu_ between two merges instead of starving us
      // (std::mutex is not fair), which bounds the wait to about one merge.
      fault_waiting_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard<std::mutex> l(mu_);
      fault_waiting_.fetch_sub(1, std::memory_order_relaxed);
      PageTablesChanged();
      if (msgs[k].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) HandleWriteFault(addr);
      else HandleMissingFault(addr);
    }
  }
}

// Nobody would serve write faults any more: drop every registration (which
// wakes blocked writers and lets later writes through) and stop merging.
// The dirty log then reports every page (as while suspended).
void LinuxProcessMemory::FaultThreadFailed(const std::string& why) {
  std::lock_guard<std::mutex> l(mu_);
  Log("fault thread stopped (" + why + "): userfaultfd released, merging disabled");
  for (auto& [id, r] : regions_) uffd_.Unregister(r->host, r->bytes());
  suspended_ = true;  // the dirty log reports every page from now on
  merging_ = false;
  have_uffd_ = false;  // Resume and AddRegion no longer register anything
  unavailable_ = "the userfaultfd fault thread failed: " + why;
}

// (mu_ held by FaultLoop.)
void LinuxProcessMemory::HandleWriteFault(uintptr_t addr) {
  ++stats_.wp_faults;
  void* p = reinterpret_cast<void*>(addr);
  if (Region* r = FindAddr(addr)) {
    const size_t i = (addr - reinterpret_cast<uintptr_t>(r->host)) / kPageSize;
    // The page may wait for its remap: make it now (that page alone, so the
    // writer waits for one remap), and the write lands after it.
    FlushOne(r, i);
    SetBit(r->dirty, i);
  }
  // Clearing the protection wakes the writer; if the range is no longer
  // registered (removed region) only a wake is left to do. Never strand a
  // writer.
  if (uffd_.Unprotect(p, kPageSize) != 0) uffd_.Wake(p, kPageSize);
}

// Asynchronous mode only: someone touched a page with no pte. Either it
// waits for its queued merge (the candidate was moved out to a staging
// page): make that remap now, which wakes it; or it is a page that was
// never populated (or was discarded): map the zero page, as the kernel
// would have without the MISSING registration. A write then copies it.
void LinuxProcessMemory::HandleMissingFault(uintptr_t addr) {
  ++stats_.missing_faults;
  void* p = reinterpret_cast<void*>(addr);
  Region* r = FindAddr(addr);
  if (r == nullptr) {
    uffd_.Wake(p, kPageSize);  // not ours (any more): let it retry
    return;
  }
  const size_t i = (addr - reinterpret_cast<uintptr_t>(r->host)) / kPageSize;
  if (TestBit(r->queued, i)) {
    FlushOne(r, i);
    uffd_.Wake(p, kPageSize);
    return;
  }
  // The message may be stale: its page was remapped since (by the owner's
  // flush). A pool mapping of a live pool page never faults as missing (the
  // page is in the pool file), and filling it would replace the merged
  // content with zeros: only wake. Only anonymous memory, or a hole of the
  // pool, is filled.
  if (r->key[i] != kAnonKey && pool_.IsAllocated(r->key[i])) {
    uffd_.Wake(p, kPageSize);
    return;
  }
  // UFFDIO_ZEROPAGE wants a none pte; a never-populated page protected with
  // WP_UNPOPULATED holds a marker instead (EEXIST), which UFFDIO_COPY of a
  // zero page accepts. EEXIST from both: populated meanwhile; anything
  // else: no longer ours. Never strand the faulting thread.
  alignas(4096) static const uint8_t kZeros[kPageSize] = {};
  if (uffd_.ZeroPage(p, kPageSize, /*dontwake=*/false) == 0) return;
  if (uffd_.Copy(p, kZeros, kPageSize) == 0) return;
  uffd_.Wake(p, kPageSize);
}

// ---- regions ----

bool LinuxProcessMemory::AddRegion(RegionId id, void* host, size_t pages, std::string* error) {
  auto addr = reinterpret_cast<uintptr_t>(host);
  if (host == nullptr || addr % kPageSize != 0 || pages == 0) {
    *error = "invalid region " + std::to_string(id) + ": host address must be page aligned and pages > 0";
    return false;
  }
  OwnerLock l(mu_, fault_waiting_);
  if (regions_.count(id)) {
    *error = "region " + std::to_string(id) + " already exists";
    return false;
  }
  Region* clash = FindAddr(addr);
  if (clash == nullptr) clash = FindAddr(addr + pages * kPageSize - 1);
  if (clash == nullptr) {
    auto it = by_addr_.lower_bound(addr);
    if (it != by_addr_.end() && it->first < addr + pages * kPageSize) clash = it->second;
  }
  if (clash != nullptr) {
    *error = "region " + std::to_string(id) + " overlaps region " + std::to_string(clash->id);
    return false;
  }
  auto r = std::make_unique<Region>();
  r->id = id;
  r->host = static_cast<uint8_t*>(host);
  r->pages = pages;
  r->dirty.assign((pages + 63) / 64, 0);
  r->untracked.assign((pages + 63) / 64, 0);
  r->queued.assign((pages + 63) / 64, 0);
  r->key.assign(pages, kAnonKey);
  r->state.assign(pages, PageState::kPrivate);
  r->last_dirty.assign(pages, 0);
  r->streak.assign(pages, 0);
  r->skip.assign(pages, 0);
  PageTablesChanged();
  if (have_uffd_ && !suspended_) {
    int e = uffd_.Register(host, r->bytes());
    if (e != 0) {
      *error = "cannot register region " + std::to_string(id) + " with userfaultfd: " + strerror(e) +
               (e == EBUSY ? " (the range already belongs to another userfaultfd, e.g. postcopy or a "
                             "background snapshot)"
                           : "");
      return false;
    }
    e = uffd_.Protect(host, r->bytes());
    if (e != 0) {
      uffd_.Unregister(host, r->bytes());
      *error = "cannot write-protect region " + std::to_string(id) + ": " + strerror(e);
      return false;
    }
  }
  by_addr_[addr] = r.get();
  regions_[id] = std::move(r);
  return true;
}

void LinuxProcessMemory::RemoveRegion(RegionId id) {
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  PageTablesChanged();
  auto it = regions_.find(id);
  if (it == regions_.end()) return;
  Region* r = it->second.get();
  if (have_uffd_ && !suspended_) uffd_.Unregister(r->host, r->bytes());  // wakes blocked writers
  for (size_t i = 0; i < r->pages; ++i) {
    if (r->state[i] == PageState::kStable && refs_[r->key[i]] > 0) --refs_[r->key[i]];
    DropKey(r->key[i]);  // the memory is going away with its VMAs
  }
  vmas_used_ -= r->extra_vmas;
  by_addr_.erase(reinterpret_cast<uintptr_t>(r->host));
  regions_.erase(it);
}

void LinuxProcessMemory::Suspend() {
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  PageTablesChanged();
  if (!have_uffd_ || suspended_) return;
  for (auto& [id, r] : regions_) uffd_.Unregister(r->host, r->bytes());
  suspended_ = true;
}

bool LinuxProcessMemory::Resume(std::string* error) {
  OwnerLock l(mu_, fault_waiting_);
  PageTablesChanged();
  if (!suspended_) return true;
  if (!have_uffd_) {
    *error = unavailable_;
    return false;
  }
  for (auto& [id, r] : regions_) {
    int e = uffd_.Register(r->host, r->bytes());
    if (e == 0) e = uffd_.Protect(r->host, r->bytes());
    if (e != 0) {
      *error = "cannot re-register region " + std::to_string(id) + " with userfaultfd: " + strerror(e) +
               (e == EBUSY ? " (another userfaultfd still owns the range)" : "");
      for (auto& [id2, r2] : regions_) {
        uffd_.Unregister(r2->host, r2->bytes());  // all or nothing (this one included)
        if (r2.get() == r.get()) break;
      }
      return false;
    }
    // Writes while suspended were not seen: report every page once.
    std::fill(r->dirty.begin(), r->dirty.end(), ~0ULL);
  }
  suspended_ = false;
  return true;
}

// ---- GuestMemory ----

const uint8_t* LinuxProcessMemory::PageData(PageRef page) {
  OwnerLock l(mu_, fault_waiting_);
  Region* r = Find(page);
  return r ? r->Addr(page.index) : nullptr;
}

// ---- DirtyLog ----

// Reports and forgets the dirty pages of a region, protecting them again
// first (a write after the protection faults and sets the bit for the next
// harvest).
//
// Hot pages back off: a page found dirty at kHotStreak harvests in a row is
// left writable, and reported dirty, for 2, 4, ... 64 harvests before it is
// protected again. Every first write after a harvest costs a round trip
// through the fault thread; a page a guest writes all the time would pay it
// at every harvest, for nothing (it is far from settling). False positives
// are allowed by the DirtyLog contract; a writable page always keeps its
// bit set, so nothing is missed.
void LinuxProcessMemory::Harvest(RegionId region, size_t pages, uint64_t* out) {
  constexpr uint8_t kHotStreak = 3;
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  PageTablesChanged();
  Region* r = Find(PageRef{region, 0});
  if (r == nullptr) return;
  size_t n = std::min(pages, r->pages);
  if (suspended_) {  // nothing is tracked: everything may have been written
    for (size_t i = 0; i < n; ++i) out[i / 64] |= 1ULL << (i % 64);
    r->unchecked.clear();
    return;
  }
  if (async_) {
    HarvestAsync(r, n, out);
    return;
  }
  CheckRemapWindows(r);
  AuditProtection(r);
  const uint32_t gen = ++r->harvest_gen;
  size_t run_start = 0, run_end = 0;  // pages [run_start, run_end) to protect
  auto flush = [&] {
    if (run_end == run_start) return;
    int e = uffd_.Protect(r->Addr(run_start), (run_end - run_start) * kPageSize);
    for (size_t k = run_start; k < run_end; ++k) {
      if (e == 0 || uffd_.Protect(r->Addr(k), kPageSize) == 0) {
        r->dirty[k / 64] &= ~(1ULL << (k % 64));
      }  // else: stays writable, so it stays dirty (reported every time)
    }
    run_start = run_end = 0;
  };
  for (size_t w = 0; w * 64 < n; ++w) {
    uint64_t bits = r->dirty[w] | r->untracked[w];
    while (bits) {
      size_t k = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (k >= n) break;
      out[k / 64] |= 1ULL << (k % 64);
      if (r->state[k] != PageState::kPrivate) IsMergedLocked(r, k);  // notice COW breaks
      if (TestBit(r->untracked, k)) {
        Track(r, k);  // try again to register a merged page
        continue;
      }
      uint8_t& streak = r->streak[k];
      uint8_t& skip = r->skip[k];
      bool consecutive = r->last_dirty[k] + 1 == gen;
      r->last_dirty[k] = gen;
      if (skip > 0 && --skip > 0) continue;  // backing off: stays writable
      streak = consecutive ? static_cast<uint8_t>(std::min(streak + 1, 16)) : 1;
      if (streak >= kHotStreak) {
        skip = static_cast<uint8_t>(1u << std::min(streak - kHotStreak + 1, 6));
        continue;
      }
      if (run_end != k) {
        flush();
        run_start = k;
      }
      run_end = k + 1;
    }
  }
  flush();
}

// Asynchronous mode: the kernel resolves write faults itself and clears
// the page's protection; PAGEMAP_SCAN reports the pages without protection
// and protects them again in the same walk (PM_SCAN_WP_MATCHING), so no
// write costs a round trip through the fault thread. Our own marks (remap
// windows, failed remaps, unmerges, Resume) and unregistered pages are
// reported from the dirty bits as in the synchronous mode.
void LinuxProcessMemory::HarvestAsync(Region* r, size_t n, uint64_t* out) {
  CheckRemapWindows(r);
  auto report = [&](size_t k) {
    out[k / 64] |= 1ULL << (k % 64);
    if (r->state[k] != PageState::kPrivate) IsMergedLocked(r, k);  // notice COW breaks
  };
  PmPageRegion vec[256];
  PmScanArg a{};
  a.size = sizeof a;
  a.flags = kPmScanWpMatching;
  a.start = reinterpret_cast<uintptr_t>(r->host);
  a.end = a.start + n * kPageSize;
  a.vec = reinterpret_cast<uintptr_t>(vec);
  a.vec_len = std::size(vec);
  a.category_mask = kPageIsWritten;
  a.return_mask = kPageIsWritten;
  for (;;) {
    long got = ioctl(pagemap_.fd(), kPagemapScan, &a);
    if (got < 0) {
      // Cannot tell: every page counts as written (never miss a write).
      ++stats_.errors;
      Log(std::string("PAGEMAP_SCAN failed: ") + strerror(errno) + " (every page reported written)");
      for (size_t k = 0; k < n; ++k) report(k);
      break;
    }
    for (long v = 0; v < got; ++v) {
      for (uint64_t addr = vec[v].start; addr < vec[v].end; addr += kPageSize) {
        size_t k = (addr - reinterpret_cast<uintptr_t>(r->host)) / kPageSize;
        if (k < n) report(k);
      }
    }
    if (got < static_cast<long>(a.vec_len) || a.walk_end >= a.end) break;
    a.start = a.walk_end;
  }
  for (size_t w = 0; w * 64 < n; ++w) {
    uint64_t bits = r->dirty[w] | r->untracked[w];
    r->dirty[w] = 0;
    while (bits) {
      size_t k = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (k >= n) break;
      report(k);
      if (TestBit(r->untracked, k)) Track(r, k);  // try again to register a merged page
    }
  }
}

// Someone else's MADV_DONTNEED (a balloon, virtio-mem, free page
// reporting) on anonymous memory drops the page and its write protection
// with it, silently: a later write would raise no fault. PAGEMAP_SCAN finds
// every page mapped without protection; each gets its dirty bit, so the
// harvest reports it and protects it again. Pages the fault thread made
// writable are found too (they are dirty already).
//
// The walk costs time in proportion to the region (and its VMAs), not to
// what was written, so it runs at most every audit_interval_ms: a write
// after a discard is reported up to that much later. That delays a
// decision, never corrupts one: every merge compares the page under
// protection. (Discards racing a merge itself are another matter: the
// caller must not discard pages while they are being merged; the QEMU
// plugin disables RAM discards while it merges.)
void LinuxProcessMemory::AuditProtection(Region* r) {
  if (!scan_ok_ || async_) return;  // async: a discarded page refaults through HandleMissingFault
  const auto now = std::chrono::steady_clock::now();
  if (r->last_audit.time_since_epoch().count() != 0 &&
      now - r->last_audit < std::chrono::milliseconds(options_.audit_interval_ms))
    return;
  r->last_audit = now;
  PmPageRegion vec[128];
  PmScanArg a{};
  a.size = sizeof a;
  a.start = reinterpret_cast<uintptr_t>(r->host);
  a.end = a.start + r->bytes();
  a.vec = reinterpret_cast<uintptr_t>(vec);
  a.vec_len = sizeof vec / sizeof vec[0];
  a.category_mask = kPageIsWritten;
  a.return_mask = kPageIsWritten;
  for (;;) {
    long got = ioctl(pagemap_.fd(), kPagemapScan, &a);
    if (got < 0) {
      Log(std::string("PAGEMAP_SCAN failed, protection audit off: ") + strerror(errno));
      scan_ok_ = false;
      return;
    }
    for (long k = 0; k < got; ++k) {
      for (uint64_t addr = vec[k].start; addr < vec[k].end; addr += kPageSize) {
        size_t i = (addr - reinterpret_cast<uintptr_t>(r->host)) / kPageSize;
        if (!TestBit(r->dirty, i)) {
          ++stats_.audit_found;
          SetBit(r->dirty, i);
        }
      }
    }
    if (got < static_cast<long>(a.vec_len) || a.walk_end >= a.end) break;
    a.start = a.walk_end;
  }
}

// ---- Merger ----

void LinuxProcessMemory::LeaveStable(Region* r, size_t i) {
  if (r->state[i] == PageState::kStable && refs_[r->key[i]] > 0) --refs_[r->key[i]];
  r->state[i] = PageState::kPrivate;
}

bool LinuxProcessMemory::IsMergedLocked(Region* r, size_t i) {
  if (r->state[i] == PageState::kPrivate) return false;
  PagemapEntry e;
  if (!pagemap_.Read(r->Addr(i), &e)) return true;  // cannot tell: assume unchanged
  bool merged;
  if (r->state[i] == PageState::kStable) {
    // Still the pool page (a file page), or not faulted in yet (reads it).
    merged = e.present ? e.file : NoMemory(e);
  } else {
    merged = e.present ? ReadsZeroPage(e) : NoMemory(e);
  }
  if (!merged) LeaveStable(r, i);
  return merged;
}

int64_t LinuxProcessMemory::VmaDelta(const Region* r, size_t i, uint32_t nk) const {
  auto split = [](uint32_t a, uint32_t b) {
    bool joined = (a == kAnonKey && b == kAnonKey) || (a != kAnonKey && b != kAnonKey && b == a + 1);
    return joined ? 0 : 1;
  };
  int64_t before = 0, after = 0;
  if (i > 0) before += split(r->key[i - 1], r->key[i]), after += split(r->key[i - 1], nk);
  if (i + 1 < r->pages) before += split(r->key[i], r->key[i + 1]), after += split(nk, r->key[i + 1]);
  return after - before;
}

// Points page i at key nk (VMA count included) and returns the old key,
// still referenced: the caller drops it once no VMA maps it any more.
uint32_t LinuxProcessMemory::AssignKey(Region* r, size_t i, uint32_t nk) {
  int64_t d = VmaDelta(r, i, nk);
  uint32_t old = r->key[i];
  if (nk != kAnonKey) ++key_refs_[nk];
  r->key[i] = nk;
  r->extra_vmas = static_cast<uint64_t>(static_cast<int64_t>(r->extra_vmas) + d);
  vmas_used_ = static_cast<uint64_t>(static_cast<int64_t>(vmas_used_) + d);
  return old;
}

// A page's VMA no longer maps pool offset `key`: once none does, a retired
// offset may be reused.
void LinuxProcessMemory::DropKey(uint32_t key) {
  if (key == kAnonKey || key_refs_[key] == 0) return;
  if (--key_refs_[key] == 0) pool_.Reuse(key);
}

bool LinuxProcessMemory::OverBudget(int64_t delta) {
  if (delta <= 0 || vmas_used_ + static_cast<uint64_t>(delta) <= budget_) return false;
  ++stats_.no_budget;
  if (!budget_logged_) {
    budget_logged_ = true;
    Log("VMA budget reached (" + std::to_string(vmas_used_) + " of " + std::to_string(budget_) +
        " mappings): non-zero merges stop, zero-page merges go on");
  }
  return true;
}

bool LinuxProcessMemory::InjectMmapFailure() {
  ++mmaps_done_;
  return options_.fail_mmap_after != 0 && mmaps_done_ >= options_.fail_mmap_after;
}

// Common checks before a merge; false with *refuse set if the page cannot
// be merged now.
bool LinuxProcessMemory::PageAboutToMerge(Region* r, size_t i, MergeResult* refuse) {
  if (!merging_ || suspended_) {
    ++stats_.errors;
    if (!disabled_logged_) {
      disabled_logged_ = true;
      Log(merging_ ? "merge refused: userfaultfd registrations are suspended"
                   : "merge refused: " + unavailable_);
    }
    *refuse = MergeResult::kError;
    return false;
  }
  if (r->state[i] != PageState::kPrivate) FlushLocked();  // it may be waiting for its remap
  if (r->state[i] != PageState::kPrivate && IsMergedLocked(r, i)) {
    Log("merge refused: region " + std::to_string(r->id) + " page " + std::to_string(i) +
        " is already merged");
    ++stats_.errors;
    *refuse = MergeResult::kError;
    return false;
  }
  return true;
}

// UFFDIO_MOVE of one page; 0 or an errno value. An error is checked
// against the page tables: on this kernel (6.18) a move that raced a write
// fault was seen to report EEXIST with the page moved all the same (the
// source pte empty, the destination holding the page; merge_race_test
// under TSan, about 1 run in 10). Trusting the error there strands the
// page in its staging slot.
int LinuxProcessMemory::MovePage(uint8_t* dst, uint8_t* src) {
  int e = uffd_.Move(dst, src, kPageSize);
  if (e == 0) return 0;
  PagemapEntry se, de;
  if (pagemap_.Read(src, &se) && pagemap_.Read(dst, &de) && !se.present && !se.swapped && de.present) return 0;
  return e;
}

// Asynchronous mode: a candidate that is not merged after all goes back
// from its staging page (the guest pte is still empty: whoever touched it
// waits), which wakes the waiters.
void LinuxProcessMemory::Unstage(Region* r, size_t i, uint32_t slot) {
  if (slot == kNoSlot) return;
  uint8_t* p = r->Addr(i);
  PageTablesChanged();
  if (int e = MovePage(p, staging_ + size_t{slot} * kPageSize); e != 0) {
    // Cannot happen while p's pte is empty and the staging page exclusive;
    // if it does, the content must not be lost: copy it back.
    // (Writing it ourselves would fault into the fault thread, which waits
    // for mu_.)
    int c = uffd_.Copy(p, staging_ + size_t{slot} * kPageSize, kPageSize);
    ++stats_.errors;
    Log(std::string("uffd-async: moving a candidate back failed: ") + strerror(e) +
        (c == 0 ? "; copied back" : std::string("; copying back failed too: ") + strerror(c)));
    SetBit(r->dirty, i);
    madvise(staging_ + size_t{slot} * kPageSize, kPageSize, MADV_DONTNEED);
  }
  uffd_.Wake(p, kPageSize);
  free_slots_.push_back(slot);
}

// The pagemap entry of merge candidate i. The engine examines pages in
// address order, so entries are read 64 at a time (one pread instead of
// one per merge) and reused while none of our own page-table changes
// happened since (pt_gen_). What can change behind our back is harmless
// here: only a writable page changes without us, and a writable page shows
// no uffd-wp bit, so it is protected before it is compared either way (a
// stale "never populated" costs a missed merge, nothing else).
bool LinuxProcessMemory::CandidateEntry(Region* r, size_t i, PagemapEntry* e) {
  PagemapWindow& w = window_;
  if (w.r != r || w.gen != pt_gen_ || i < w.first || i >= w.first + w.n) {
    size_t n = std::min<size_t>(std::size(w.raw), r->pages - i);
    if (!pagemap_.ReadRaw(r->Addr(i), n, w.raw)) {
      w.r = nullptr;
      return false;
    }
    w.r = r;
    w.first = i;
    w.n = n;
    w.gen = pt_gen_;
  }
  *e = Pagemap::Decode(w.raw[i - w.first]);
  return true;
}

// Write-protects the candidate page i (writers block from here until the
// merge is over), or finds it protected already, in one syscall: its
// pagemap entry. A page whose entry carries the uffd-wp bit is protected
// (every clean page is: the dirty log protects it at harvest), and only our
// own code under mu_ lifts protection, so it stays protected until the
// merge returns; otherwise UFFDIO_WRITEPROTECT it. With refuse_unpopulated,
// an anonymous page with no memory behind it (empty pte, a bare uffd-wp
// marker, or the zero page) is refused as kNotPopulated, before anything
// changed: merging it would save nothing.
//
// The merger never wakes writers itself. A writer that hits the protected
// page blocks in the kernel with a fault message queued on our context; the
// fault thread reads it and, once it gets mu_ (after this merge), sets the
// page's dirty bit and lifts the protection, which wakes it. So every
// blocked writer is woken exactly by the thread that knows it is there.
bool LinuxProcessMemory::ProtectCandidate(Region* r, size_t i, bool refuse_unpopulated,
                                          MergeResult* refuse, uint32_t* slot) {
  uint8_t* p = r->Addr(i);
  *slot = kNoSlot;
  PagemapEntry pe;
  bool known = CandidateEntry(r, i, &pe);
  if (known && refuse_unpopulated && r->key[i] == kAnonKey && (NoMemory(pe) || ReadsZeroPage(pe))) {
    *refuse = MergeResult::kNotPopulated;  // no memory behind it: nothing to save
    return false;
  }
  if (async_) {
    // An asynchronous context never blocks a writer on protection. Move the
    // page out instead (UFFDIO_MOVE, a pte swap): until it is remapped or
    // moved back, its pte is empty and whoever touches it waits in a
    // MISSING fault. Its content is compared in the staging page, which
    // nobody else can reach. Only anonymous VMAs can be moved from: a page
    // that broke away from a pool page stays private in this mode.
    if (r->key[i] != kAnonKey) {
      if (!async_refusal_logged_) {
        async_refusal_logged_ = true;
        Log("uffd-async: pages that broke away from a merged page (inside a pool mapping) cannot be "
            "moved and are not merged again");
      }
      *refuse = MergeResult::kError;
      return false;
    }
    if (free_slots_.empty()) FlushLocked();
    *slot = free_slots_.back();
    free_slots_.pop_back();
    PageTablesChanged();
    int e = MovePage(staging_ + size_t{*slot} * kPageSize, p);
    if (e != 0) {
      free_slots_.push_back(*slot);
      *slot = kNoSlot;
      if (e == ENOENT) {  // nothing there to move: never populated
        *refuse = MergeResult::kNotPopulated;
        return false;
      }
      ++stats_.errors;
      if (!async_refusal_logged_) {
        async_refusal_logged_ = true;
        Log(std::string("uffd-async: UFFDIO_MOVE of a candidate failed: ") + strerror(e) + " (not merged)");
      }
      *refuse = MergeResult::kError;
      return false;
    }
    return true;
  }
  if (known && pe.uffd_wp && !TestBit(r->untracked, i)) return true;  // protected already
  int e = uffd_.Protect(p, kPageSize);
  // Only this page's protection changed: keep the window, with its bit set.
  if (window_.r == r && i >= window_.first && i < window_.first + window_.n)
    window_.raw[i - window_.first] |= uint64_t{1} << 57;
  if (e != 0) {
    PageTablesChanged();
    ++stats_.errors;
    Log(std::string("write-protect failed: ") + strerror(e));
    *refuse = MergeResult::kError;
    return false;
  }
  return true;
}

// The one window the lock cannot close: the new mapping (or the dropped
// page) is writable without a fault from the mmap/madvise until Track (or
// MergeZero) protects it. A write landing there makes a private anonymous
// page where the pool (zero) page should be. That page is protected now, so
// the invariant holds; only its dirty bit is owed. It is paid before the
// next harvest reports anything (CheckRemapWindows), with one pagemap read
// for a whole batch of merged pages instead of one per merge. Without a
// dirty log nothing reads the dirty bits: the engine's IsMerged checks
// find such a page (a COW break), so nothing is recorded.
void LinuxProcessMemory::NoteRemap(Region* r, size_t i) {
  constexpr size_t kMaxUnchecked = 4096;
  if (!dirty_log_enabled_) return;
  r->unchecked.push_back(static_cast<uint32_t>(i));
  if (r->unchecked.size() >= kMaxUnchecked) CheckRemapWindows(r);
}

// Marks dirty every page written in its remap window (see NoteRemap):
// pages still in state stable that hold a private anonymous page, pages in
// state zero that hold anything but the zero page. A page written after it
// was protected faulted and is dirty already; it is not counted again.
// Entries are read in spans of up to 512 pages (one pread each).
void LinuxProcessMemory::CheckRemapWindows(Region* r) {
  constexpr size_t kSpan = 512;
  std::vector<uint32_t>& u = r->unchecked;
  if (u.empty()) return;
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  uint64_t raw[kSpan];
  for (size_t a = 0; a < u.size();) {
    size_t b = a;
    while (b + 1 < u.size() && u[b + 1] - u[a] < kSpan) ++b;
    size_t n = u[b] - u[a] + 1;
    bool ok = pagemap_.ReadRaw(r->Addr(u[a]), n, raw);
    for (size_t k = a; k <= b; ++k) {
      size_t i = u[k];
      if (r->state[i] == PageState::kPrivate || TestBit(r->dirty, i)) continue;
      PagemapEntry e = Pagemap::Decode(ok ? raw[i - u[a]] : 0);
      bool written = !ok || (e.present && (r->state[i] == PageState::kStable ? !e.file : !ReadsZeroPage(e)));
      if (written) {  // (a failed read counts as written: false positives are allowed)
        ++stats_.racing_writes;
        SetBit(r->dirty, i);
      }
    }
    a = b + 1;
  }
  u.clear();
}

// Registers page i (a new VMA made by our mmap) and protects it. A page
// that cannot be registered is marked untracked: reported dirty at every
// harvest until a later attempt succeeds.
void LinuxProcessMemory::Track(Region* r, size_t i) {
  PageTablesChanged();
  int e = uffd_.Register(r->Addr(i), kPageSize);
  if (e == 0) e = uffd_.Protect(r->Addr(i), kPageSize);
  if (e == 0) {
    r->untracked[i / 64] &= ~(1ULL << (i % 64));
  } else {
    if (!TestBit(r->untracked, i)) {
      ++stats_.errors;
      Log("cannot register merged page " + std::to_string(i) + " of region " + std::to_string(r->id) +
          ": " + strerror(e) + " (it is reported dirty until it can be)");
    }
    SetBit(r->untracked, i);
  }
}

// Deferred remaps. A merge verifies the page under protection and then only
// queues its page-table change; FlushLocked makes the queued changes sorted
// by address, one call per run of consecutive pages: one mmap of a run of
// consecutive pool offsets (or one MADV_DONTNEED of a run of zero pages),
// one UFFDIO_REGISTER for a whole cluster of new mappings and one
// UFFDIO_WRITEPROTECT per run. A page merged on its own pays for its own
// mmap either way; a run of 64 pays for one instead of 64, and every merge
// saves the register call. Until the flush the page keeps its memory (same
// content) and stays protected, so a writer that hits it waits: the fault
// thread flushes before it serves the fault (HandleWriteFault), and every
// other entry point that reads the page tables flushes first too.
// The engine flushes at the end of every step (Merger::Flush).
void LinuxProcessMemory::QueueRemap(Region* r, size_t i, uint32_t nk, bool zero, uint32_t slot) {
  constexpr size_t kMaxPending = kStagingSlots;
  uint32_t old = AssignKey(r, i, nk);
  PendingRemap q{r, static_cast<uint32_t>(i), nk, old, zero};
  q.slot = slot;
  pending_.push_back(q);
  SetBit(r->queued, i);
  if (pending_.size() >= kMaxPending) FlushLocked();
}

void LinuxProcessMemory::FlushLocked() {
  // Mappings registered with one UFFDIO_REGISTER: the kernel walks every VMA
  // in the range, so a cluster spans a bounded number of pages.
  constexpr uint32_t kClusterPages = 512;
  if (pending_.empty()) return;
  auto t0 = std::chrono::steady_clock::now();
  std::sort(pending_.begin(), pending_.end(), [](const PendingRemap& a, const PendingRemap& b) {
    return a.r->id != b.r->id ? a.r->id < b.r->id : a.index < b.index;
  });
  for (size_t a = 0; a < pending_.size();) {
    size_t b = a + 1;
    while (b < pending_.size() && pending_[b].r == pending_[a].r &&
           pending_[b].index - pending_[a].index < kClusterPages)
      ++b;
    FlushCluster(a, b);
    a = b;
  }
  pending_.clear();
  ReleaseSlots();
  stats_.merge_ns += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

// Makes the queued remap of page i now, if there is one.
void LinuxProcessMemory::FlushOne(Region* r, size_t i) {
  if (!TestBit(r->queued, i)) return;
  for (size_t k = 0; k < pending_.size(); ++k) {
    if (pending_[k].r == r && pending_[k].index == i) {
      std::swap(pending_[k], pending_.back());
      FlushCluster(pending_.size() - 1, pending_.size());
      const uint32_t slot = pending_.back().slot;
      pending_.pop_back();
      if (slot != kNoSlot) {
        madvise(staging_ + size_t{slot} * kPageSize, kPageSize, MADV_DONTNEED);
        free_slots_.push_back(slot);
      }
      return;
    }
  }
}

// Asynchronous mode, after a flush: no queued merge holds a staging page
// any more; drop their old pages in one call and free every slot.
void LinuxProcessMemory::ReleaseSlots() {
  if (!async_ || free_slots_.size() == kStagingSlots) return;
  madvise(staging_, size_t{kStagingSlots} * kPageSize, MADV_DONTNEED);
  free_slots_.clear();
  for (uint32_t k = kStagingSlots; k > 0; --k) free_slots_.push_back(k - 1);
}

// A queued remap could not be made: the page keeps its own memory, which
// holds the merged content, and is still protected. Undo the bookkeeping
// and report the page dirty, so the engine hears of it as of a broken merge.
void LinuxProcessMemory::FailRemap(const PendingRemap& q, int err) {
  Region* r = q.r;
  DropKey(AssignKey(r, q.index, q.old_key));
  if (r->state[q.index] == PageState::kStable && refs_[q.new_key] > 0) --refs_[q.new_key];
  r->state[q.index] = PageState::kPrivate;
  SetBit(r->dirty, q.index);
  ++stats_.errors;
  if (err == 0) {
    Log("region " + std::to_string(r->id) + " page " + std::to_string(q.index) +
        " lost its write protection while its merge was queued (discarded by someone else?): not merged");
  } else {
    Log(std::string(q.zero && q.old_key == kAnonKey ? "madvise(MADV_DONTNEED)" : "mmap") + " over region " +
        std::to_string(r->id) + " page " + std::to_string(q.index) + " failed: " + strerror(err) +
        " (page left as it was)");
  }
  if (q.slot != kNoSlot) {
    // Asynchronous mode: the content is in the staging page; move it back
    // (which wakes whoever waits). The slot itself is freed by the caller.
    PageTablesChanged();
    if (int e = MovePage(r->Addr(q.index), staging_ + size_t{q.slot} * kPageSize); e != 0) {
      uffd_.Copy(r->Addr(q.index), staging_ + size_t{q.slot} * kPageSize, kPageSize);
    }
  }
  uffd_.Wake(r->Addr(q.index), kPageSize);
}

void LinuxProcessMemory::FlushCluster(size_t first, size_t end) {
  struct Run {
    size_t a, b;  // pending_[a, b)
    bool drop;    // zero pages in anonymous memory: MADV_DONTNEED
    bool ok;
  };
  Region* r = pending_[first].r;
  PageTablesChanged();
  for (size_t k = first; k < end; ++k) r->queued[pending_[k].index / 64] &= ~(1ULL << (pending_[k].index % 64));
  // Every queued page must still be protected. Only someone else's
  // MADV_DONTNEED (a balloon) lifts protection behind our back, and a write
  // may have landed since without a fault: such a page is not remapped.
  // One pread for the cluster (at most 512 entries).
  // (In the asynchronous mode the page was moved out: its pte stays empty
  // and whoever touches it waits, whatever anyone discards.)
  if (!async_) {
    const size_t base = pending_[first].index;
    const size_t n = pending_[end - 1].index - base + 1;
    cluster_raw_.resize(n);
    if (pagemap_.ReadRaw(r->Addr(base), n, cluster_raw_.data())) {
      for (size_t k = first; k < end; ++k)
        pending_[k].unprotected = !Pagemap::Decode(cluster_raw_[pending_[k].index - base]).uffd_wp;
    }
  }
  std::vector<Run> runs;
  size_t lo = SIZE_MAX, hi = 0;  // pages covered by new mappings
  for (size_t a = first; a < end;) {
    const PendingRemap& f = pending_[a];
    if (f.unprotected) {
      FailRemap(f, 0);
      ++a;
      continue;
    }
    const bool drop = f.zero && f.old_key == kAnonKey;
    size_t b = a + 1;
    while (b < end && !pending_[b].unprotected && pending_[b].index == pending_[b - 1].index + 1 &&
           pending_[b].zero == f.zero &&
           (f.zero ? (pending_[b].old_key == kAnonKey) == drop : pending_[b].new_key == pending_[b - 1].new_key + 1))
      ++b;
    uint8_t* p = r->Addr(f.index);
    const size_t bytes = (b - a) * kPageSize;
    int err = 0;
    ++stats_.remap_calls;
    {
      ProtectedAccess hide;
      if (drop && async_) {
        // The pages were moved out: map the zero page into the empty ptes
        // (writers still wait: woken once protected below).
        err = uffd_.ZeroPage(p, bytes, /*dontwake=*/true);
      } else if (drop) {
        if (madvise(p, bytes, MADV_DONTNEED) != 0) err = errno;
      } else if (InjectMmapFailure()) {
        err = ENOMEM;
      } else {
        void* m = f.zero ? mmap(p, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
                         : mmap(p, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, pool_.fd(),
                                static_cast<off_t>(f.new_key) * kPageSize);
        if (m == MAP_FAILED) err = errno;
      }
    }
    if (err != 0) {
      for (size_t k = a; k < b; ++k) FailRemap(pending_[k], err);
    } else {
      if (options_.in_remap_window) {
        for (size_t k = a; k < b; ++k) options_.in_remap_window(r->Addr(pending_[k].index));
      }
      if (!drop) {
        lo = std::min<size_t>(lo, f.index);
        hi = std::max<size_t>(hi, pending_[b - 1].index + 1);
      }
    }
    runs.push_back(Run{a, b, drop, err == 0});
    a = b;
  }
  // New mappings are not registered with userfaultfd: one register call
  // covers them all (VMAs in between are registered already and skipped).
  const bool registered = lo >= hi || uffd_.Register(r->Addr(lo), (hi - lo) * kPageSize) == 0;
  // Likewise one UFFDIO_WRITEPROTECT for the whole cluster once everything
  // in it is registered. It also protects the untouched pages in between:
  // clean ones are protected already, and a dirty one keeps its dirty bit
  // (it only faults once more), so "writable => dirty" still holds.
  size_t plo = SIZE_MAX, phi = 0, ok_runs = 0;
  for (const Run& run : runs) {
    if (!run.ok) continue;
    ++ok_runs;
    plo = std::min<size_t>(plo, pending_[run.a].index);
    phi = std::max<size_t>(phi, pending_[run.b - 1].index + 1);
  }
  // Not in the asynchronous mode: there the protection *is* the dirty bit,
  // and protecting a written page would hide its write.
  const bool protected_all =
      !async_ && registered && ok_runs > 1 && uffd_.Protect(r->Addr(plo), (phi - plo) * kPageSize) == 0;
  for (const Run& run : runs) {
    if (!run.ok) continue;
    uint8_t* p = r->Addr(pending_[run.a].index);
    const size_t bytes = (run.b - run.a) * kPageSize;
    if (run.drop) {
      // Dropped anonymous pages kept no protection: protect the empty ptes.
      if (!protected_all && uffd_.Protect(p, bytes) != 0) {
        for (size_t k = run.a; k < run.b; ++k) SetBit(r->dirty, pending_[k].index);  // writable => dirty
      }
    } else {
      int e = registered ? 0 : uffd_.Register(p, bytes);
      if (e == 0 && !protected_all) e = uffd_.Protect(p, bytes);
      for (size_t k = run.a; k < run.b; ++k) {
        size_t i = pending_[k].index;
        if (e == 0) r->untracked[i / 64] &= ~(1ULL << (i % 64));
        else Track(r, i);  // page by page; marks it untracked if that fails too
        DropKey(pending_[k].old_key);
      }
    }
    for (size_t k = run.a; k < run.b; ++k) NoteRemap(r, pending_[k].index);
    if (async_) uffd_.Wake(p, bytes);  // writers waiting in MISSING faults
  }
}

MergeResult LinuxProcessMemory::CreateStable(PageRef page, StableHandle* out) {
  auto t0 = std::chrono::steady_clock::now();
  OwnerLock l(mu_, fault_waiting_);
  Region* r = Find(page);
  if (r == nullptr) return MergeResult::kError;
  size_t i = page.index;
  MergeResult refuse;
  if (!PageAboutToMerge(r, i, &refuse)) return refuse;
  // Keep runs contiguous: the offset after the one the previous page maps.
  uint32_t preferred = kAnonKey;
  if (i > 0 && r->key[i - 1] != kAnonKey) preferred = r->key[i - 1] + 1;
  else if (i + 1 < r->pages && r->key[i + 1] != kAnonKey && r->key[i + 1] > 0) preferred = r->key[i + 1] - 1;
  uint32_t off = pool_.Allocate(preferred);
  if (pool_.capacity() > refs_.size()) {  // the pool grew
    refs_.resize(pool_.capacity(), 0);
    key_refs_.resize(pool_.capacity(), 0);
  }
  if (off == StablePool::kNone) {
    ++stats_.no_budget;
    if (!budget_logged_) {
      budget_logged_ = true;
      Log("stable pool full (" + std::to_string(pool_.live()) + " pages): non-zero merges stop");
    }
    return MergeResult::kNoBudget;
  }
  if (OverBudget(VmaDelta(r, i, off))) {
    pool_.Free(off);
    return MergeResult::kNoBudget;
  }
  uint32_t slot;
  if (!ProtectCandidate(r, i, /*refuse_unpopulated=*/true, &refuse, &slot)) {
    pool_.Free(off);
    return refuse;
  }
  PksmProtectedCopy(pool_.Page(off), CandidateData(r, i, slot));
  *out = off;
  return CommitStableMerge(r, i, off, slot, t0);
}

MergeResult LinuxProcessMemory::CommitStableMerge(Region* r, size_t i, uint32_t off, uint32_t slot,
                                                  std::chrono::steady_clock::time_point t0) {
  QueueRemap(r, i, off, /*zero=*/false, slot);
  r->state[i] = PageState::kStable;
  ++refs_[off];
  return CountMerge(t0);
}

MergeResult LinuxProcessMemory::CountMerge(std::chrono::steady_clock::time_point t0) {
  ++stats_.merges;
  stats_.merge_ns += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  return MergeResult::kMerged;
}

MergeResult LinuxProcessMemory::MergeInto(StableHandle s, PageRef page) {
  auto t0 = std::chrono::steady_clock::now();
  OwnerLock l(mu_, fault_waiting_);
  Region* r = Find(page);
  if (r == nullptr || s >= refs_.size() || !pool_.IsAllocated(static_cast<uint32_t>(s))) {
    ++stats_.errors;
    return MergeResult::kError;
  }
  auto off = static_cast<uint32_t>(s);
  size_t i = page.index;
  MergeResult refuse;
  if (!PageAboutToMerge(r, i, &refuse)) return refuse;
  if (OverBudget(VmaDelta(r, i, off))) return MergeResult::kNoBudget;
  uint32_t slot;
  if (!ProtectCandidate(r, i, /*refuse_unpopulated=*/true, &refuse, &slot)) return refuse;
  if (!PksmProtectedEqual(CandidateData(r, i, slot), pool_.Page(off))) {
    // No wake: a writer that blocked meanwhile is served by the fault
    // thread (its fault message is queued; see ProtectCandidate).
    Unstage(r, i, slot);
    ++stats_.changed;
    return MergeResult::kChanged;
  }
  return CommitStableMerge(r, i, off, slot, t0);
}

MergeResult LinuxProcessMemory::MergeZero(PageRef page) {
  auto t0 = std::chrono::steady_clock::now();
  OwnerLock l(mu_, fault_waiting_);
  Region* r = Find(page);
  if (r == nullptr) return MergeResult::kError;
  size_t i = page.index;
  MergeResult refuse;
  if (!PageAboutToMerge(r, i, &refuse)) return refuse;
  int64_t delta = r->key[i] == kAnonKey ? 0 : VmaDelta(r, i, kAnonKey);
  if (OverBudget(delta)) return MergeResult::kNoBudget;
  uint32_t slot;
  if (!ProtectCandidate(r, i, /*refuse_unpopulated=*/true, &refuse, &slot)) return refuse;
  if (!PksmProtectedIsZero(CandidateData(r, i, slot))) {
    Unstage(r, i, slot);
    ++stats_.changed;  // no wake needed: see MergeInto
    return MergeResult::kChanged;
  }
  // In anonymous memory the page is dropped (MADV_DONTNEED); inside a pool
  // file VMA (an earlier merge broken by a write) that would expose the
  // pool page, so fresh anonymous memory is mapped over it instead. Both
  // read zero, which is the content.
  QueueRemap(r, i, kAnonKey, /*zero=*/true, slot);
  r->state[i] = PageState::kZero;
  ++stats_.zero_merges;
  return CountMerge(t0);
}

bool LinuxProcessMemory::Unmerge(PageRef page) {
  uint8_t* p;
  {
    OwnerLock l(mu_, fault_waiting_);
    FlushLocked();
    PageTablesChanged();
    Region* r = Find(page);
    if (r == nullptr) return false;
    if (r->state[page.index] == PageState::kPrivate) return true;
    p = r->Addr(page.index);
    // Lift the protection ourselves (dirty bit first: the invariant) so the
    // write below does not need a round trip through the fault thread.
    SetBit(r->dirty, page.index);
    if (!suspended_ && have_uffd_ && !async_) uffd_.Unprotect(p, kPageSize);
  }
  // Break copy-on-write the way a guest write would, without changing a
  // byte: the kernel copies the page under its page-table lock. Done without
  // mu_: if a harvest protected the page again meanwhile, the write faults
  // into the fault thread, which takes mu_.
  {
    ProtectedAccess hide;  // the kernel's COW copy races nothing; TSan cannot tell
    __atomic_fetch_add(reinterpret_cast<uint64_t*>(p), 0, __ATOMIC_SEQ_CST);
  }
  OwnerLock l(mu_, fault_waiting_);
  PageTablesChanged();
  Region* r = Find(page);
  if (r == nullptr) return false;
  PagemapEntry pe;
  if (pagemap_.Read(p, &pe) && !(pe.present && !pe.file && !ReadsZeroPage(pe))) {
    ++stats_.errors;
    Log("unmerge of region " + std::to_string(page.region) + " page " + std::to_string(page.index) +
        " did not yield a private page");
    return false;
  }
  LeaveStable(r, page.index);
  SetBit(r->dirty, page.index);
  ++stats_.unmerges;
  return true;
}

bool LinuxProcessMemory::IsMerged(PageRef page) {
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  Region* r = Find(page);
  return r != nullptr && IsMergedLocked(r, page.index);
}

void LinuxProcessMemory::ReleaseStable(StableHandle s) {
  OwnerLock l(mu_, fault_waiting_);
  FlushLocked();
  if (s >= refs_.size()) return;
  auto off = static_cast<uint32_t>(s);
  if (refs_[off] > 0) {
    // Pages still counted as mapping it: ask the page tables (a COW break
    // may not have been seen yet).
    for (auto& [id, r] : regions_) {
      for (size_t i = 0; i < r->pages && refs_[off] > 0; ++i) {
        if (r->state[i] == PageState::kStable && r->key[i] == off) IsMergedLocked(r.get(), i);
      }
    }
  }
  if (refs_[off] > 0) {
    ++stats_.errors;
    Log("stable page " + std::to_string(off) + " released while " + std::to_string(refs_[off]) +
        " pages still map it: kept (not freed)");
    return;
  }
  // The memory goes back at once; the offset is reused only when no VMA
  // maps it any more (see StablePool).
  if (key_refs_[off] > 0) pool_.Retire(off);
  else pool_.Free(off);
}

const uint8_t* LinuxGuestMemory::PageData(PageRef page) { return pm_->PageData(page); }
MergeResult LinuxMerger::CreateStable(PageRef page, StableHandle* out) {
  return pm_->CreateStable(page, out);
}
MergeResult LinuxMerger::MergeInto(StableHandle s, PageRef page) { return pm_->MergeInto(s, page); }
MergeResult LinuxMerger::MergeZero(PageRef page) { return pm_->MergeZero(page); }
bool LinuxMerger::Unmerge(PageRef page) { return pm_->Unmerge(page); }
bool LinuxMerger::IsMerged(PageRef page) { return pm_->IsMerged(page); }
const uint8_t* LinuxMerger::StableData(StableHandle s) { return pm_->StableData(s); }
void LinuxMerger::ReleaseStable(StableHandle s) { pm_->ReleaseStable(s); }
void LinuxMerger::Flush() { pm_->Flush(); }
std::string_view LinuxDirtyLog::Name() const { return pm_->async() ? "uffd-async" : "uffd-sync"; }
void LinuxDirtyLog::Harvest(RegionId region, size_t pages, uint64_t* dirty) {
  pm_->Harvest(region, pages, dirty);
}

}  // namespace

std::unique_ptr<ProcessMemory> ProcessMemory::Create(const ProcessMemoryOptions& options,
                                                     std::string* error) {
  auto pm = std::make_unique<LinuxProcessMemory>(options);
  if (!pm->Init(error)) return nullptr;
  return pm;
}

}  // namespace pksm
