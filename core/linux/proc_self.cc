#include "pksm/linux/proc_self.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace pksm {

bool ReadMemoryTotals(MemoryTotals* out, const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/smaps_rollup");
  if (!in) return false;
  MemoryTotals t;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long v = 0;
    if (sscanf(line.c_str(), "Rss: %llu kB", &v) == 1) t.rss_kib = v;
    else if (sscanf(line.c_str(), "Pss: %llu kB", &v) == 1) t.pss_kib = v;
    else if (sscanf(line.c_str(), "Anonymous: %llu kB", &v) == 1) t.anon_kib = v;
    else if (sscanf(line.c_str(), "Pss_Shmem: %llu kB", &v) == 1) t.shmem_kib = v;
  }
  *out = t;
  return true;
}

int64_t ReadMapCount(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/maps");
  if (!in) return -1;
  int64_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

int64_t ReadMaxMapCount() {
  std::ifstream in("/proc/sys/vm/max_map_count");
  int64_t v = -1;
  if (!(in >> v)) return -1;
  return v;
}

Pagemap::Pagemap() { fd_ = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); }

Pagemap::~Pagemap() {
  if (fd_ >= 0) close(fd_);
}

bool Pagemap::Read(const void* addr, PagemapEntry* out) const {
  uint64_t v = 0;
  if (!ReadRaw(addr, 1, &v)) return false;
  *out = Decode(v);
  return true;
}

bool Pagemap::ReadRaw(const void* addr, size_t n, uint64_t* out) const {
  off_t off = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / 4096 * 8);
  return pread(fd_, out, n * sizeof(uint64_t), off) == static_cast<ssize_t>(n * sizeof(uint64_t));
}

PagemapEntry Pagemap::Decode(uint64_t v) {
  PagemapEntry e;
  e.present = v >> 63 & 1;
  e.swapped = v >> 62 & 1;
  e.file = v >> 61 & 1;
  e.uffd_wp = v >> 57 & 1;
  e.exclusive = v >> 56 & 1;
  e.pfn = e.present ? (v & ((1ULL << 55) - 1)) : 0;
  // A userfaultfd write-protect marker on an empty pte shows as a swap
  // entry of the marker type (31 on x86-64; the frame is hidden without
  // CAP_SYS_ADMIN, in which case any write-protected swap entry counts).
  const uint64_t frame = v & ((1ULL << 55) - 1);
  e.wp_marker = e.swapped && e.uffd_wp && (frame == 0 || (frame & 0x1f) == 0x1f);
  return e;
}

}  // namespace pksm
