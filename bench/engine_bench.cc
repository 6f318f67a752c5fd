// Google Benchmark for the engine: tree insert/search, steady-state Step()
// throughput on a settled 1 GiB simulated guest (dirty log and checksum
// fallback), the first merge pass of that guest, and memcmp calls per
// successful stable-tree lookup. Not run by the tests; targets are in
// docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <time.h>

#include <array>
#include <memory>
#include <vector>

#include "pksm/engine.h"
#include "pksm/hash.h"
#include "pksm/sim_memory.h"
#include "stable_tree.h"
#include "unstable_tree.h"

namespace pksm {
namespace {

// ------------------------------------------------------------------ trees

// Pages of distinct content for the tree benchmarks.
std::vector<std::array<uint8_t, kPageSize>>& TreePages(size_t n) {
  static std::vector<std::array<uint8_t, kPageSize>> pages;
  while (pages.size() < n) {
    pages.emplace_back();
    FillContent(pages.back().data(), 7, pages.size() - 1);
  }
  return pages;
}

void BM_StableTreeInsert(benchmark::State& state) {
  size_t n = static_cast<size_t>(state.range(0));
  auto& pages = TreePages(n);
  std::vector<uint64_t> hashes(n);
  for (size_t i = 0; i < n; ++i) hashes[i] = PartialHash(pages[i].data());
  for (auto _ : state) {
    TreeCounters c;
    StableTree tree(&c);
    for (size_t i = 0; i < n; ++i) tree.AddDup(i + 1, pages[i].data(), hashes[i]);
    benchmark::DoNotOptimize(tree.entries());
    state.PauseTiming();
    // (destruction is not timed)
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_StableTreeInsert)->Arg(1 << 10)->Arg(1 << 16);

void BM_StableTreeSearchHit(benchmark::State& state) {
  size_t n = static_cast<size_t>(state.range(0));
  auto& pages = TreePages(n);
  std::vector<uint64_t> hashes(n);
  for (size_t i = 0; i < n; ++i) hashes[i] = PartialHash(pages[i].data());
  TreeCounters c;
  StableTree tree(&c);
  for (size_t i = 0; i < n; ++i) tree.AddDup(i + 1, pages[i].data(), hashes[i]);
  c = TreeCounters();
  // Search with copies, so equality really needs the compare.
  std::vector<std::array<uint8_t, kPageSize>> copies(pages.begin(), pages.begin() + static_cast<long>(n));
  size_t i = 0, hits = 0;
  for (auto _ : state) {
    hits += tree.Find(hashes[i], copies[i].data()) != nullptr;
    if (++i == n) i = 0;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["memcmp_per_hit"] = static_cast<double>(c.pages_compared) / static_cast<double>(hits);
}
BENCHMARK(BM_StableTreeSearchHit)->Arg(1 << 10)->Arg(1 << 16);

void BM_UnstableTreeSearchInsert(benchmark::State& state) {
  size_t n = static_cast<size_t>(state.range(0));
  auto& pages = TreePages(n);
  std::vector<RmapItem> items(n);
  for (size_t i = 0; i < n; ++i) {
    items[i].index = static_cast<uint32_t>(i);
    items[i].partial_hash = PartialHash(pages[i].data());
  }
  TreeCounters c;
  UnstableTree tree(&c);
  auto data_of = [&](const RmapItem& it) { return pages[it.index].data(); };
  for (auto _ : state) {
    for (size_t i = 0; i < n; ++i) tree.SearchInsert(&items[i], items[i].partial_hash, pages[i].data(), data_of);
    tree.Reset();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_UnstableTreeSearchInsert)->Arg(1 << 10)->Arg(1 << 17);

// ------------------------------------------------------------ 1 GiB guest

constexpr size_t kGuestPages = 262144;  // 1 GiB

// A guest with 50% duplicates: the first half unique, the second half pairs
// of copies of each other (each content twice), as identical guests look.
void FillGuest(SimMemory* sim, Engine* engine) {
  sim->AddRegion(0, kGuestPages);
  engine->AddRegion(0, "ram", kGuestPages);
  std::array<uint8_t, kPageSize> buf;
  const size_t half = kGuestPages / 2;
  for (size_t i = 0; i < kGuestPages; ++i) {
    if (i < half)
      FillContent(buf.data(), 1, i);
    else
      FillContent(buf.data(), 2, (i - half) / 2);
    sim->Write(PageRef{0, i}, buf.data());
  }
  engine->Track(0, 0, kGuestPages);
}

struct Guest {
  explicit Guest(bool dirty_log, Params p = Params())
      : engine(sim.memory(), sim.merger(), dirty_log ? sim.dirty_log() : nullptr, p) {
    FillGuest(&sim, &engine);
  }
  SimMemory sim;
  Engine engine;
};

// Steady state: the guest is settled (everything mergeable is merged) and
// the scanner keeps visiting the unmerged half.
void BM_StepSettled(benchmark::State& state, bool dirty_log) {
  Params p;
  p.pages_to_scan = static_cast<uint32_t>(state.range(0));
  static std::unique_ptr<Guest> guests[2];
  auto& g = guests[dirty_log];
  if (!g) {
    g = std::make_unique<Guest>(dirty_log, p);
    g->engine.RunPasses(4);
  }
  Params q = g->engine.params();
  q.pages_to_scan = p.pages_to_scan;
  g->engine.SetParams(q);
  Stats before = g->engine.GetStats();
  size_t scanned = 0;
  for (auto _ : state) scanned += g->engine.Step(p.pages_to_scan);
  Stats after = g->engine.GetStats();
  state.SetItemsProcessed(static_cast<int64_t>(scanned));
  state.counters["pages_sharing"] = static_cast<double>(after.pages_sharing);
  state.counters["merges"] = static_cast<double>(after.merges - before.merges);
  state.counters["hashed_B_per_page"] =
      static_cast<double>(after.bytes_hashed - before.bytes_hashed) / static_cast<double>(scanned);
}
BENCHMARK_CAPTURE(BM_StepSettled, dirty_log, true)->Arg(100)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_StepSettled, checksum, false)->Arg(100)->Arg(4096)->Unit(benchmark::kMicrosecond);

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Churn: a quarter of the candidates' worth of pages of the unique half is
// rewritten before every Step (guest writes are not timed), so the unstable
// tree is rebuilt every pass, as in the kernel.
void BM_StepChurn(benchmark::State& state, bool dirty_log) {
  const size_t budget = 4096;
  Params p;
  p.pages_to_scan = budget;
  static std::unique_ptr<Guest> guests[2];
  auto& g = guests[dirty_log];
  if (!g) {
    g = std::make_unique<Guest>(dirty_log, p);
    g->engine.RunPasses(4);
  }
  std::array<uint8_t, kPageSize> buf;
  static uint64_t next = 0;
  size_t scanned = 0;
  Stats before = g->engine.GetStats();
  for (auto _ : state) {
    state.PauseTiming();
    for (size_t k = 0; k < budget / 4; ++k, ++next) {
      FillContent(buf.data(), 3, next);
      PageRef ref{0, (next * 7919) % (kGuestPages / 2)};
      g->sim.Write(ref, buf.data());
      if (!dirty_log) g->engine.Track(0, ref.index, 1);
    }
    state.ResumeTiming();
    scanned += g->engine.Step(budget);
  }
  Stats after = g->engine.GetStats();
  state.SetItemsProcessed(static_cast<int64_t>(scanned));
  state.counters["hashed_B_per_page"] =
      static_cast<double>(after.bytes_hashed - before.bytes_hashed) / static_cast<double>(scanned);
}
BENCHMARK_CAPTURE(BM_StepChurn, dirty_log, true)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_StepChurn, checksum, false)->Unit(benchmark::kMicrosecond);

// The first full merge pass: from the fresh guest's first visit (pass 1,
// probation) to the pass that merges it (pass 2). Building the guest is not
// timed.
void BM_FirstMergePass(benchmark::State& state, bool dirty_log) {
  uint64_t sharing = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Params p;
    p.pages_to_scan = 4096;
    auto g = std::make_unique<Guest>(dirty_log, p);
    state.ResumeTiming();
    double t0 = ThreadCpuSeconds();
    g->engine.RunPasses(1);
    double t1 = ThreadCpuSeconds();
    g->engine.RunPasses(1);
    double t2 = ThreadCpuSeconds();
    state.PauseTiming();
    state.counters["probation_pass_cpu_ms"] = (t1 - t0) * 1e3;
    state.counters["merge_pass_cpu_ms"] = (t2 - t1) * 1e3;
    sharing = g->engine.GetStats().pages_sharing;
    g.reset();
    state.ResumeTiming();
  }
  state.counters["pages_sharing"] = static_cast<double>(sharing);
}
BENCHMARK_CAPTURE(BM_FirstMergePass, dirty_log, true)->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FirstMergePass, checksum, false)->Iterations(2)->Unit(benchmark::kMillisecond);

// memcmp calls per successful stable lookup: on the settled guest, 16,384
// unique pages are rewritten with contents already in the stable tree and
// found there.
void BM_StableLookupCompares(benchmark::State& state) {
  double ratio = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Params p;
    p.pages_to_scan = 4096;
    auto g = std::make_unique<Guest>(true, p);
    g->engine.RunPasses(3);
    std::array<uint8_t, kPageSize> buf;
    for (size_t i = 0; i < 16384; ++i) {
      FillContent(buf.data(), 2, i * 3);
      g->sim.Write(PageRef{0, i}, buf.data());
    }
    Stats before = g->engine.GetStats();
    state.ResumeTiming();
    g->engine.RunPasses(2);
    state.PauseTiming();
    Stats after = g->engine.GetStats();
    ratio = static_cast<double>(after.pages_compared - before.pages_compared) /
            static_cast<double>(after.stable_hits - before.stable_hits);
    state.counters["stable_hits"] = static_cast<double>(after.stable_hits - before.stable_hits);
    g.reset();
    state.ResumeTiming();
  }
  state.counters["memcmp_per_hit"] = ratio;
}
BENCHMARK(BM_StableLookupCompares)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace pksm

BENCHMARK_MAIN();
