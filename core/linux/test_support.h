// Helpers for the core/linux tests: an anonymous mapping (RAII), page
// contents, a ProcessMemory factory, dirty-log reads, and threads that stamp
// pages while a test merges them.
#ifndef PKSM_CORE_LINUX_TEST_SUPPORT_H_
#define PKSM_CORE_LINUX_TEST_SUPPORT_H_

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pksm/linux/proc_self.h"
#include "pksm/linux/process_memory.h"
#include "pksm/sim_memory.h"
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

// Deterministic, never all-zero content for (seed): the simulator's.
inline void FillSeed(uint8_t* p, uint64_t seed) { FillContent(p, seed); }

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

// A ProcessMemory for a test (a quiet log unless the options set one).
inline std::unique_ptr<ProcessMemory> MakePm(ProcessMemoryOptions o = {}) {
  std::string err;
  if (!o.log) o.log = [](const std::string&) {};
  auto pm = ProcessMemory::Create(o, &err);
  EXPECT_NE(pm, nullptr) << err;
  return pm;
}

// One harvest of region `id`'s dirty log, as a bitmap.
inline std::vector<uint64_t> Harvest(ProcessMemory* pm, RegionId id, size_t pages) {
  std::vector<uint64_t> bits((pages + 63) / 64, 0);
  pm->dirty_log()->Harvest(id, pages, bits.data());
  return bits;
}
inline bool Bit(const std::vector<uint64_t>& b, size_t i) { return b[i / 64] >> (i % 64) & 1; }

// Threads that each stamp a word of their own (word `word_base + w` of the
// page) on random pages of `m`, `writes` times, while the test merges the
// pages. Each remembers the last stamp it left on every page, so that
// PagesNotAsWritten() can tell whether every write landed.
class PageStampers {
 public:
  PageStampers(const AnonMapping& m, size_t threads, size_t writes, size_t word_base, uint64_t seed)
      : m_(m), word_base_(word_base), last_(threads, std::vector<uint64_t>(m.pages(), 0)) {
    for (size_t w = 0; w < threads; ++w) {
      threads_.emplace_back([this, w, writes, seed] {
        std::mt19937_64 rng(w * 7 + seed);
        uint64_t seq = 0;
        for (size_t n = 0; n < writes; ++n) {
          size_t pg = rng() % m_.pages();
          auto* word = reinterpret_cast<uint64_t*>(m_.page(pg)) + word_base_ + w;
          uint64_t v = (uint64_t{w + 1} << 48) | ++seq;
          __atomic_store_n(word, v, __ATOMIC_RELAXED);
          if (__atomic_load_n(word, __ATOMIC_RELAXED) != v) lost_.fetch_add(1);
          last_[w][pg] = v;
          if (n % 16 == 0) std::this_thread::yield();
        }
        done_.fetch_add(1);
      });
    }
  }
  ~PageStampers() { Join(); }
  bool Done() const { return done_.load() == threads_.size(); }
  void Join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  uint64_t lost() const { return lost_.load(); }
  // Pages whose content is not their original content (seed_of(i); 0 =
  // all zero) with every stamp last written to them.
  template <typename SeedOf>
  size_t PagesNotAsWritten(SeedOf seed_of) const {
    size_t bad = 0;
    for (size_t i = 0; i < m_.pages(); ++i) {
      alignas(8) uint8_t want[kPageSize];
      if (seed_of(i) == 0) memset(want, 0, kPageSize);
      else FillSeed(want, seed_of(i));
      for (size_t w = 0; w < last_.size(); ++w)
        if (last_[w][i]) memcpy(want + (word_base_ + w) * 8, &last_[w][i], 8);
      bad += memcmp(want, m_.page(i), kPageSize) != 0;
    }
    return bad;
  }

 private:
  const AnonMapping& m_;
  size_t word_base_;
  std::vector<std::vector<uint64_t>> last_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> lost_{0};
  std::atomic<size_t> done_{0};
};

// Steps `engine` while `stampers` write (at least `min_steps` steps; a step
// is quick once everything merged, so it then also sleeps 1 ms a step).
template <typename EngineT>
void StepWhileStamping(EngineT& engine, const PageStampers& stampers, size_t budget, int min_steps = 200) {
  for (int i = 0; i < min_steps || !stampers.Done(); ++i) {
    engine.Step(budget);
    if (i > min_steps) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace pksm

#endif  // PKSM_CORE_LINUX_TEST_SUPPORT_H_
