// ProcessMemory: the three engine seams (GuestMemory, Merger, DirtyLog) over
// real memory of the calling process, on Linux.
//
// It owns one userfaultfd context, the pool memfd that holds stable pages,
// the table of regions (host virtual-address ranges) and the thread that
// serves write-protect faults. It contains nothing QEMU specific: the QEMU
// plugin and pksm-host both drive it.
//
// Race safety (why a write racing a merge always lands): every region is
// registered with ONE synchronous userfaultfd write-protect context. That
// single context serves both users of write protection:
//   * the Merger protects a candidate page (or finds it protected), compares
//     it, remaps a pool page (or drops it for zero) and protects the new
//     mapping; writers that hit the page were blocked in the kernel all along
//     and are woken by the fault thread once the merge is over, then get a
//     normal copy-on-write;
//   * the dirty log: a clean page is write-protected; its first write faults
//     once, the fault thread marks the page dirty, un-protects it and wakes
//     the writer; Harvest re-protects the pages it reports. Fault handling
//     and Harvest/merges are serialised by one mutex, so "page writable =>
//     dirty bit set" holds at every unlock: no write is ever missed.
// An asynchronous (WP_ASYNC) context cannot block a writer, and a range can
// belong to only one context, so the asynchronous provider is not used for
// merging memory; see core/linux/README.md.
//
// Thread model: one owner thread (the engine's) calls every method except
// that the accessors (stats, names) may be called from any thread.
#ifndef PKSM_LINUX_PROCESS_MEMORY_H_
#define PKSM_LINUX_PROCESS_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "pksm/dirty_log.h"
#include "pksm/guest_memory.h"
#include "pksm/merger.h"
#include "pksm/page.h"

namespace pksm {

// Which dirty-log provider ProcessMemory offers the engine.
enum class DirtyLogKind {
  kAuto,       // uffd-sync where the kernel supports it, else checksum
  kUffdAsync,  // WP_ASYNC + PAGEMAP_SCAN; merges block writers by moving
               // the candidate out (UFFDIO_MOVE + MISSING mode). Opt-in;
               // Create fails naming what the kernel lacks.
  kUffdSync,   // synchronous userfaultfd write protection (fails if absent)
  kChecksum,   // no dirty log: dirty_log() returns nullptr, the engine
               // falls back to checksums (merging still uses userfaultfd)
};

const char* ToString(DirtyLogKind k);

struct ProcessMemoryOptions {
  DirtyLogKind dirty_log = DirtyLogKind::kAuto;

  // VMA budget. 0 = derived: vm.max_map_count minus the process's current
  // map count minus vma_reserve (never below 0). Non-zero = use this value
  // (tests, operators who know better).
  uint64_t max_vmas = 0;
  // VMAs left for the host program (QEMU needs thousands; running out of
  // map count makes malloc fail).
  uint64_t vma_reserve = 16384;

  // Most pool offsets (address space reserved up front; the memfd grows as
  // stable pages are created). 0 = 16 Mi pages (64 GiB of address space).
  // An offset released while a COW-broken page's VMA still maps it is not
  // reused until that VMA goes (so a discarded page reads zero, never
  // another page), so allow up to twice the pages of all regions.
  uint64_t pool_max_pages = 0;

  // How often Harvest audits a region's protection with PAGEMAP_SCAN (pages
  // someone else's MADV_DONTNEED left writable without a fault, see
  // AuditProtection). The audit walks the whole region, so it is not done at
  // every harvest: at most once per interval (0 = every harvest).
  uint32_t audit_interval_ms = 1000;

  // Test hooks: pretend userfaultfd cannot be opened, or make the n-th
  // (1-based) remapping mmap fail with ENOMEM. 0 = off.
  bool simulate_no_uffd = false;
  uint64_t fail_mmap_after = 0;
  // Test hook: called (owner thread, lock held) with the page's address
  // right after a merge remapped or dropped it and before the new mapping
  // is protected: a write from here is a write in the remap window.
  std::function<void(uint8_t*)> in_remap_window;

  // Log sink for rare events (budget reached, OS errors). Default: stderr
  // with a "pksm: " prefix.
  std::function<void(const std::string&)> log;
};

// Counters of the Linux layer (monotonic unless said otherwise).
struct ProcessMemoryStats {
  uint64_t vmas_used = 0;        // current extra VMAs our remaps created
  uint64_t vma_budget = 0;       // limit for vmas_used
  uint64_t pool_pages = 0;       // live stable pages in the pool (current)
  uint64_t merges = 0;           // CreateStable/MergeInto/MergeZero -> kMerged
  uint64_t zero_merges = 0;      // of which MergeZero
  uint64_t changed = 0;          // refused: content differed under protection
  uint64_t no_budget = 0;        // refused: VMA budget
  uint64_t errors = 0;           // OS errors (page kept its content)
  uint64_t unmerges = 0;
  uint64_t wp_faults = 0;        // write-protect faults served (uffd-sync)
  uint64_t missing_faults = 0;   // missing-page faults served (uffd-async:
                                 // a queued page touched, or first touch)
  uint64_t racing_writes = 0;    // writes that landed inside a merge window
                                 // (detected, reported dirty)
  uint64_t remap_calls = 0;      // mmap/madvise calls that made queued remaps
                                 // (one per run of consecutive pages)
  uint64_t merge_ns = 0;         // wall time spent inside kMerged merges and
                                 // in making their remaps
  uint64_t audit_found = 0;      // writable pages without a dirty bit found by
                                 // the PAGEMAP_SCAN audit (external discards)
};

class ProcessMemory {
 public:
  // Opens userfaultfd (probing its features) and the pool. On failure
  // returns nullptr and sets *error. When userfaultfd is unavailable and
  // options.dirty_log is kAuto or kChecksum, it still succeeds in a
  // degraded mode: dirty_log() is nullptr and every merge returns kError
  // (merging without write protection could lose a racing write);
  // merging_enabled() is false and unavailable_reason() says why.
  static std::unique_ptr<ProcessMemory> Create(const ProcessMemoryOptions& options,
                                               std::string* error);
  virtual ~ProcessMemory() = default;

  // Declares `pages` pages at `host` (page aligned, private anonymous
  // memory, readable and writable) as region `id`, registers them with
  // userfaultfd and write-protects them (so every page reads as clean).
  virtual bool AddRegion(RegionId id, void* host, size_t pages, std::string* error) = 0;
  // Unregisters the region; call BEFORE the memory is unmapped. Merged pages
  // stay mapped as they are (the memory is going away).
  virtual void RemoveRegion(RegionId id) = 0;

  virtual GuestMemory* memory() = 0;
  virtual Merger* merger() = 0;
  virtual DirtyLog* dirty_log() = 0;  // nullptr => engine uses checksums
  virtual std::string dirty_log_name() const = 0;  // "uffd-sync", "checksum"

  // What the kernel offers, as probed: userfaultfd feature names plus
  // "PAGEMAP_SCAN" (e.g. "PAGEFAULT_FLAG_WP WP_HUGETLBFS_SHMEM WP_UNPOPULATED
  // WP_ASYNC MOVE PAGEMAP_SCAN"); "" without userfaultfd.
  virtual std::string kernel_features() const = 0;

  virtual bool merging_enabled() const = 0;
  virtual std::string unavailable_reason() const = 0;  // "" if enabled

  // Drops every userfaultfd registration (before a migration or snapshot
  // that needs its own uffd), and retakes them. While suspended, merges
  // return kError. Resume reports every page dirty (writes were not seen).
  virtual void Suspend() = 0;
  virtual bool Resume(std::string* error) = 0;

  virtual ProcessMemoryStats stats() const = 0;
  uint64_t vmas_used() const { return stats().vmas_used; }
  uint64_t vma_budget() const { return stats().vma_budget; }
  uint64_t pool_pages() const { return stats().pool_pages; }
};

}  // namespace pksm

#endif  // PKSM_LINUX_PROCESS_MEMORY_H_
