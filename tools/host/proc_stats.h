// ProcStats: what the kernel says about this process's memory and about
// ksmd, read from /proc. Savings are measured here, from the page tables,
// the same way for pksm and for the kernel's KSM (KSM's own counters are
// global and do not see pksm's merges at all).
#ifndef PKSM_TOOLS_HOST_PROC_STATS_H_
#define PKSM_TOOLS_HOST_PROC_STATS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pksm::host {

// /proc/self/smaps_rollup: resident and proportional set size of the whole
// process (every mapping, so pksm's pool pages are included).
struct MemRollup {
  uint64_t rss_kib = 0;
  uint64_t pss_kib = 0;
  uint64_t anonymous_kib = 0;
};
// Empty on failure (message in *err).
std::optional<MemRollup> ReadMemRollup(std::string* err);

// CPU time of the calling thread, in seconds.
double ThreadCpuSeconds();

// utime + stime of a process or thread, in seconds (/proc/<pid>/stat).
std::optional<double> TaskCpuSeconds(pid_t pid);

// The pid of the kernel's ksmd thread, if there is one.
std::optional<pid_t> FindKsmd();

// Nice value of a task (field 19 of /proc/<pid>/stat).
std::optional<int> TaskNice(pid_t pid);

// Sets the nice value of the calling thread (not the whole process).
// Lowering it needs CAP_SYS_NICE. Returns false on error.
bool SetThreadNice(int nice);
int ThreadNice();
// The nice value the process started with (first call records it; main()
// calls it before changing anything). Helper threads (monitor, writers)
// run at it in both phases.
int BaseNice();

// Number of mappings (VMAs) of this process, and of those overlapping
// [begin, end) (/proc/self/maps).
struct VmaCount {
  uint64_t total = 0;
  uint64_t in_range = 0;
};
std::optional<VmaCount> CountVmas(uintptr_t begin, uintptr_t end, std::string* err);

// What backs each page of [base, base + pages * 4 KiB), from
// /proc/self/pagemap. Needs CAP_SYS_ADMIN for frame numbers (root here).
//   zero_frame:       pages mapping the kernel's shared zero page;
//   not_present:      pages with no frame mapped (dropped, never touched,
//                     or mapping a file page not faulted in yet);
//   distinct_anon:    distinct anonymous frames (private pages and KSM
//                     pages) — memory the range itself pins;
//   file_present:     pages mapping a file/shmem frame (pksm's pool pages,
//                     once read through the range), distinct_file of them.
// pksm's pool pages are shmem: they are not in the range until read, so
// callers add the pool's allocated pages (MemfdPages) instead of
// distinct_file. The saving is then pages - distinct_anon - pool pages.
struct PagemapSummary {
  uint64_t pages = 0;
  uint64_t present = 0;
  uint64_t not_present = 0;
  uint64_t zero_frame = 0;
  uint64_t distinct_anon = 0;
  uint64_t file_present = 0;
  uint64_t distinct_file = 0;
  // Frames (anonymous or file) mapped by more than one page of the range,
  // and the mappings of such frames beyond the first: KSM's pages_shared /
  // pages_sharing, as the page tables show them.
  uint64_t shared_frames = 0;
  uint64_t sharing_pages = 0;
};
std::optional<PagemapSummary> ScanPagemap(const void* base, uint64_t pages, std::string* err);

// Other processes with MADV_MERGEABLE memory: ksmd scans them too while a
// kernel comparison runs (their time and counters pollute the measurement,
// and their pages get merged). From /proc/<pid>/smaps, VmFlags "mg".
struct MergeableProcess {
  pid_t pid = 0;
  std::string comm;
  uint64_t kib = 0;
};
std::vector<MergeableProcess> FindOtherMergeable();

// /proc/self/ksm_stat as key -> value (numbers only); empty if absent.
std::vector<std::pair<std::string, uint64_t>> ReadKsmStat();

// Pages allocated to this process's memfds named `name` (fstat st_blocks of
// every /proc/self/fd entry "/memfd:<name> (deleted)").
uint64_t MemfdPages(const std::string& name);

// Reads a whole small file (sysfs, procfs); empty optional on error.
std::optional<std::string> ReadSmallFile(const std::string& path);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_PROC_STATS_H_
