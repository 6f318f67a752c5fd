// Small readers of /proc for the calling process (or another pid): memory
// totals, map count, and the pagemap entry of one page. Used by the merger
// (VMA budget, COW checks), by pksm-host and by tests.
#ifndef PKSM_LINUX_PROC_SELF_H_
#define PKSM_LINUX_PROC_SELF_H_

#include <cstdint>
#include <string>

namespace pksm {

// From /proc/<pid>/smaps_rollup ("self" by default): Rss, Pss in KiB.
// Returns false (and leaves the outputs alone) if the file cannot be read.
struct MemoryTotals {
  uint64_t rss_kib = 0;
  uint64_t pss_kib = 0;
  uint64_t anon_kib = 0;     // Anonymous:
  uint64_t shmem_kib = 0;    // Pss_Shmem: (pool pages, proportional share)
};
bool ReadMemoryTotals(MemoryTotals* out, const std::string& pid = "self");

// Lines of /proc/<pid>/maps (= VMAs), or -1.
int64_t ReadMapCount(const std::string& pid = "self");
// /proc/sys/vm/max_map_count, or -1.
int64_t ReadMaxMapCount();

// One /proc/self/pagemap entry, decoded.
struct PagemapEntry {
  bool present = false;
  bool swapped = false;
  bool file = false;       // file page or shared anon (bit 61)
  bool exclusive = false;  // mapped exactly once (bit 56)
  bool uffd_wp = false;    // bit 57: userfaultfd write-protected
  bool wp_marker = false;  // no page, only a uffd-wp marker (not swap)
  uint64_t pfn = 0;        // 0 unless CAP_SYS_ADMIN
};

// /proc/self/pagemap, opened once (RAII).
class Pagemap {
 public:
  Pagemap();
  ~Pagemap();
  Pagemap(const Pagemap&) = delete;
  Pagemap& operator=(const Pagemap&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // The entry of the page containing `addr`; false on a read error.
  bool Read(const void* addr, PagemapEntry* out) const;
  // The raw entries of `n` consecutive pages from the one containing
  // `addr`, in one pread; false on a read error. Decode with Decode().
  bool ReadRaw(const void* addr, size_t n, uint64_t* out) const;
  static PagemapEntry Decode(uint64_t raw);

 private:
  int fd_ = -1;
};

}  // namespace pksm

#endif  // PKSM_LINUX_PROC_SELF_H_
