// Helpers for the core/linux tests: an anonymous mapping (RAII) and page
// contents.
#ifndef PKSM_CORE_LINUX_TEST_SUPPORT_H_
#define PKSM_CORE_LINUX_TEST_SUPPORT_H_

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "pksm/linux/proc_self.h"
#include "pksm/page.h"

namespace pksm {

class AnonMapping {
 public:
  explicit AnonMapping(size_t pages) : pages_(pages) {
    void* p = mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    // Keep the test about 4 KiB pages: no THP surprises in counts.
    if (base_ != nullptr) madvise(base_, pages * kPageSize, MADV_NOHUGEPAGE);
  }
  ~AnonMapping() {
    if (base_ != nullptr) munmap(base_, pages_ * kPageSize);
  }
  AnonMapping(const AnonMapping&) = delete;
  AnonMapping& operator=(const AnonMapping&) = delete;
  uint8_t* data() const { return base_; }
  uint8_t* page(size_t i) const { return base_ + i * kPageSize; }
  size_t pages() const { return pages_; }

 private:
  uint8_t* base_;
  size_t pages_;
};

// Deterministic, never all-zero content for (seed).
inline void FillSeed(uint8_t* p, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < kPageSize; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t v = x | 1;
    memcpy(p + i, &v, 8);
  }
}

inline bool HasSeed(const uint8_t* p, uint64_t seed) {
  alignas(8) uint8_t buf[kPageSize];
  FillSeed(buf, seed);
  return memcmp(p, buf, kPageSize) == 0;
}

// Sum of "Anonymous:" (KiB) over the VMAs inside [start, start + len): the
// private memory of just that range, from /proc/self/smaps.
inline uint64_t RangeAnonKib(const void* start, size_t len) {
  const auto lo = reinterpret_cast<uintptr_t>(start), hi = lo + len;
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uint64_t total = 0;
  while (std::getline(in, line)) {
    unsigned long a = 0, b = 0;
    unsigned long long kib = 0;
    if (sscanf(line.c_str(), "%lx-%lx ", &a, &b) == 2 && line.find(" kB") == std::string::npos) {
      inside = a >= lo && b <= hi;
    } else if (inside && sscanf(line.c_str(), "Anonymous: %llu kB", &kib) == 1) {
      total += kib;
    }
  }
  return total;
}

inline PagemapEntry EntryOf(const void* addr) {
  static Pagemap pm;
  PagemapEntry e;
  pm.Read(addr, &e);
  return e;
}

}  // namespace pksm

#endif  // PKSM_CORE_LINUX_TEST_SUPPORT_H_
