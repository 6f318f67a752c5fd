// pksm-stress: writers race merging and unmerging on a large area of real
// memory for a given time (scripts/stress.sh runs it).
//
// The area holds zero pages, duplicate pages (in runs) and unique pages.
// The engine (over ProcessMemory) cycles: merge for --cycle-seconds
// (run = 1), then unmerge everything (run = 2), and again. Writer threads
// meanwhile stamp sequence numbers into random pages (each writer owns one
// word of every page), read each write back at once (a lost write shows
// immediately) and often put the original word back, so pages keep
// becoming mergeable again. At the end every page must hold exactly its
// original content with each writer's last word: otherwise that page is an
// integrity error. Exit status 0 only with zero lost writes, zero integrity
// errors and real merging done.
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pksm/engine.h"
#include "pksm/linux/proc_self.h"
#include "pksm/linux/process_memory.h"
#include "pksm/sim_memory.h"

namespace pksm {
namespace {

constexpr size_t kWordBase = 256;  // writer w owns word kWordBase + 8*w

uint64_t SeedOf(size_t i, size_t pages) {
  size_t q = pages / 4;
  if (i < q) return 0;                                  // zero
  if (i < 3 * q) return 100 + (i - q) / 64 % 16;        // duplicates: runs of 64, 16 contents
  return 1'000'000 + i;                                 // unique
}

// Zero for seed 0, else the simulator's content for the seed.
void Fill(uint8_t* p, uint64_t seed) {
  if (seed == 0) memset(p, 0, kPageSize);
  else FillContent(p, seed);
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Usage(const char* msg) {
  fprintf(stderr, "pksm-stress: %s\nusage: pksm-stress [--seconds S] [--size-mib M] [--writers T] [--cycle-seconds C]\n       pksm-stress --measure PAGES\n",
          msg);
  return 2;
}

// --measure: the cost of one merge on this machine, without writers.
// Scattered duplicates (every page onto one stable page: each merge splits
// a VMA), runs (two areas of distinct pages, page i of the second onto
// page i of the first: consecutive pool offsets coalesce), zero pages, and
// unmerges.
int Measure(size_t pages) {
  std::string err;
  ProcessMemoryOptions o;
  o.pool_max_pages = 2 * pages + 1024;
  auto pm = ProcessMemory::Create(o, &err);
  if (!pm || !pm->merging_enabled()) {
    fprintf(stderr, "pksm-stress: %s\n", pm ? pm->unavailable_reason().c_str() : err.c_str());
    return 1;
  }
  auto map = [&](size_t n) {
    return static_cast<uint8_t*>(
        mmap(nullptr, n * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  };
  uint8_t* a = map(pages);
  uint8_t* b = map(pages);
  uint8_t* z = map(pages);
  if (a == MAP_FAILED || b == MAP_FAILED || z == MAP_FAILED) return 1;
  for (size_t i = 0; i < pages; ++i) {
    Fill(a + i * kPageSize, 7);  // all one content: scattered merges
    Fill(b + i * kPageSize, 100 + i);
    memset(z + i * kPageSize, 0, kPageSize);
  }
  uint8_t* c = map(pages);
  for (size_t i = 0; i < pages; ++i) Fill(c + i * kPageSize, 100 + i);
  pm->AddRegion(1, a, pages, &err);
  pm->AddRegion(2, b, pages, &err);
  pm->AddRegion(3, c, pages, &err);
  pm->AddRegion(4, z, pages, &err);
  Merger* mg = pm->merger();
  auto cpu = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  };
  auto timed = [&](const char* what, auto&& fn) {
    double t = Now(), c0 = cpu();
    size_t ok = fn();
    mg->Flush();  // the queued remaps are part of the cost
    double us = (Now() - t) * 1e6 / static_cast<double>(pages);
    double cus = (cpu() - c0) * 1e6 / static_cast<double>(pages);
    printf("measure: %-40s %6.2f us/page wall, %6.2f us/page cpu (%zu of %zu ok), vmas_used %llu\n", what, us,
           cus, ok, pages, (unsigned long long)pm->vmas_used());
  };
  StableHandle s = 0;
  mg->CreateStable({1, 0}, &s);
  timed("MergeInto, scattered (one stable page)", [&] {
    size_t ok = 0;
    for (size_t i = 1; i < pages; ++i) ok += mg->MergeInto(s, {1, i}) == MergeResult::kMerged;
    return ok;
  });
  std::vector<StableHandle> hs(pages);
  timed("CreateStable, a run of distinct pages", [&] {
    size_t ok = 0;
    for (size_t i = 0; i < pages; ++i) ok += mg->CreateStable({2, i}, &hs[i]) == MergeResult::kMerged;
    return ok;
  });
  timed("MergeInto, a run (consecutive offsets)", [&] {
    size_t ok = 0;
    for (size_t i = 0; i < pages; ++i) ok += mg->MergeInto(hs[i], {3, i}) == MergeResult::kMerged;
    return ok;
  });
  timed("MergeZero", [&] {
    size_t ok = 0;
    for (size_t i = 0; i < pages; ++i) ok += mg->MergeZero({4, i}) == MergeResult::kMerged;
    return ok;
  });
  timed("Unmerge (run pages)", [&] {
    size_t ok = 0;
    for (size_t i = 0; i < pages; ++i) ok += mg->Unmerge({3, i});
    return ok;
  });
  if (DirtyLog* dl = pm->dirty_log()) {
    std::vector<uint64_t> bits((pages + 63) / 64);
    for (RegionId r = 1; r <= 4; ++r) dl->Harvest(r, pages, bits.data());
    double t = Now(), c0 = cpu();
    for (int k = 0; k < 20; ++k) dl->Harvest(2, pages, bits.data());
    printf("measure: Harvest of %zu clean pages: %.1f us wall, %.1f us cpu\n", pages, (Now() - t) * 1e6 / 20,
           (cpu() - c0) * 1e6 / 20);
  }
  for (RegionId r = 1; r <= 4; ++r) pm->RemoveRegion(r);
  return 0;
}

int Main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--measure") return Measure(strtoul(argv[2], nullptr, 10));
  double seconds = 300, cycle = 5;
  size_t size_mib = 256, nwriters = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage(("missing value for " + a).c_str());
    char* end = nullptr;
    double v = strtod(argv[++i], &end);
    if (*end != 0 || v <= 0) return Usage(("invalid value '" + std::string(argv[i]) + "' for " + a).c_str());
    if (a == "--seconds") seconds = v;
    else if (a == "--size-mib") size_mib = static_cast<size_t>(v);
    else if (a == "--writers") nwriters = static_cast<size_t>(v);
    else if (a == "--cycle-seconds") cycle = v;
    else return Usage(("unknown option " + a).c_str());
  }
  if (nwriters < 1 || nwriters > 64) return Usage("--writers must be 1..64");
  const size_t pages = size_mib * 256;
  if (pages < 1024) return Usage("--size-mib must be at least 4");

  auto* area = static_cast<uint8_t*>(
      mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (area == MAP_FAILED) {
    perror("pksm-stress: mmap");
    return 1;
  }
  madvise(area, pages * kPageSize, MADV_HUGEPAGE);  // like QEMU's guest RAM
  for (size_t i = 0; i < pages; ++i) Fill(area + i * kPageSize, SeedOf(i, pages));

  std::string err;
  ProcessMemoryOptions o;
  o.pool_max_pages = 2 * pages + 1024;
  auto pm = ProcessMemory::Create(o, &err);
  if (!pm) {
    fprintf(stderr, "pksm-stress: %s\n", err.c_str());
    return 1;
  }
  if (!pm->merging_enabled()) {
    fprintf(stderr, "pksm-stress: merging unavailable: %s\n", pm->unavailable_reason().c_str());
    return 1;
  }
  if (!pm->AddRegion(0, area, pages, &err)) {
    fprintf(stderr, "pksm-stress: %s\n", err.c_str());
    return 1;
  }
  Params p;
  p.pages_to_scan = 4096;
  p.delay = 1;
  p.sleep_millisecs = 5;
  auto engine = std::make_unique<Engine>(pm->memory(), pm->merger(), pm->dirty_log(), p);
  engine->AddRegion(0, "stress", pages);
  engine->Track(0, 0, pages);

  // expected[w][page]: the value writer w last left in its word of the page.
  std::vector<std::vector<uint64_t>> expected(nwriters, std::vector<uint64_t>(pages));
  for (size_t w = 0; w < nwriters; ++w)
    for (size_t i = 0; i < pages; ++i)
      memcpy(&expected[w][i], area + i * kPageSize + (kWordBase + 8 * w) * 8, 8);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> lost{0}, writes{0};
  std::vector<std::thread> writers;
  for (size_t w = 0; w < nwriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(w + 17);
      const size_t off = (kWordBase + 8 * w) * 8;
      uint64_t seq = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        size_t pg = rng() % pages;
        auto* word = reinterpret_cast<uint64_t*>(area + pg * kPageSize + off);
        uint64_t& e = expected[w][pg];
        uint64_t orig;
        {
          alignas(8) uint8_t page[kPageSize];
          Fill(page, SeedOf(pg, pages));
          memcpy(&orig, page + off, 8);
        }
        uint64_t v = (uint64_t{w + 1} << 56) | ++seq;
        __atomic_store_n(word, v, __ATOMIC_RELAXED);
        if (__atomic_load_n(word, __ATOMIC_RELAXED) != v) lost.fetch_add(1);
        e = v;
        if (rng() % 4 != 0) {  // mostly put the original back: mergeable again
          __atomic_store_n(word, orig, __ATOMIC_RELAXED);
          if (__atomic_load_n(word, __ATOMIC_RELAXED) != orig) lost.fetch_add(1);
          e = orig;
        }
        writes.fetch_add(1, std::memory_order_relaxed);
        if (seq % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }

  const double t0 = Now();
  uint64_t cycles = 0, max_saved = 0, cow_total = 0;
  double next_print = t0 + 5;
  while (Now() - t0 < seconds) {
    // run = 1 for one cycle, then run = 2 (unmerge everything).
    Params q = engine->params();
    q.run = 1;
    engine->SetParams(q);
    const double until = std::min(Now() + cycle, t0 + seconds);
    while (Now() < until) {
      engine->Step(p.pages_to_scan);
      Stats s = engine->GetStats();
      max_saved = std::max<uint64_t>(max_saved, s.pages_sharing + s.ksm_zero_pages);
      if (Now() >= next_print) {
        next_print += 5;
        ProcessMemoryStats ls = pm->stats();
        printf("stress: %5.0fs cycle %llu sharing %llu zero %llu cow_breaks %llu writes %llu wp_faults %llu vmas %llu\n",
               Now() - t0, (unsigned long long)cycles, (unsigned long long)s.pages_sharing,
               (unsigned long long)s.ksm_zero_pages, (unsigned long long)s.cow_breaks,
               (unsigned long long)writes.load(), (unsigned long long)ls.wp_faults,
               (unsigned long long)ls.vmas_used);
        fflush(stdout);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(p.sleep_millisecs));
    }
    q.run = 2;
    engine->SetParams(q);
    engine->Step(1);
    ++cycles;
  }
  stop = true;
  for (auto& t : writers) t.join();
  Stats s = engine->GetStats();
  cow_total = s.cow_breaks;
  ProcessMemoryStats ls = pm->stats();

  uint64_t integrity = 0;
  alignas(8) uint8_t want[kPageSize];
  for (size_t i = 0; i < pages; ++i) {
    Fill(want, SeedOf(i, pages));
    for (size_t w = 0; w < nwriters; ++w) memcpy(want + (kWordBase + 8 * w) * 8, &expected[w][i], 8);
    if (memcmp(want, area + i * kPageSize, kPageSize) != 0) {
      if (integrity < 10) fprintf(stderr, "stress: page %zu does not hold what was last written\n", i);
      ++integrity;
    }
  }
  engine.reset();
  pm->RemoveRegion(0);
  printf("stress: seconds %.0f, size %zu MiB, writers %zu, cycles %llu, writes %llu, max_saved_pages %llu, "
         "merges %llu, unmerges %llu, cow_breaks %llu, wp_faults %llu, racing_writes %llu, errors %llu, "
         "us_per_merge %.2f\n",
         Now() - t0, size_mib, nwriters, (unsigned long long)cycles, (unsigned long long)writes.load(),
         (unsigned long long)max_saved, (unsigned long long)ls.merges, (unsigned long long)ls.unmerges,
         (unsigned long long)cow_total, (unsigned long long)ls.wp_faults, (unsigned long long)ls.racing_writes,
         (unsigned long long)ls.errors,
         ls.merges ? static_cast<double>(ls.merge_ns) / 1e3 / static_cast<double>(ls.merges) : 0.0);
  printf("stress: lost_writes %llu integrity_errors %llu\n", (unsigned long long)lost.load(),
         (unsigned long long)integrity);
  munmap(area, pages * kPageSize);
  bool ok = lost.load() == 0 && integrity == 0 && ls.merges > 0 && ls.unmerges > 0 && writes.load() > 0;
  printf("stress: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace pksm

int main(int argc, char** argv) { return pksm::Main(argc, argv); }
