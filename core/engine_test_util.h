// Shared fixture of the engine tests: a SimMemory guest, an engine over it
// (with the sim dirty log or the checksum fallback) and content helpers.
#ifndef PKSM_CORE_ENGINE_TEST_UTIL_H_
#define PKSM_CORE_ENGINE_TEST_UTIL_H_

#include <array>
#include <cstring>
#include <memory>

#include <gtest/gtest.h>

#include "pksm/engine.h"
#include "pksm/sim_memory.h"

namespace pksm {

using Page = std::array<uint8_t, kPageSize>;

inline Page Content(uint64_t seed) {
  Page p;
  FillContent(p.data(), seed);
  return p;
}
inline Page Content(uint64_t seed, uint64_t index) {
  Page p;
  FillContent(p.data(), seed, index);
  return p;
}
inline Page Zero() { return Page{}; }

struct TestGuest {
  explicit TestGuest(Params p = Params(), bool with_dirty_log = true, size_t pages = 64)
      : engine(sim.memory(), sim.merger(), with_dirty_log ? sim.dirty_log() : nullptr, p) {
    AddRegion(0, pages);
  }
  void AddRegion(RegionId id, size_t pages) {
    sim.AddRegion(id, pages);
    engine.AddRegion(id, "r" + std::to_string(id), pages);
  }
  // A guest write of a whole page; the engine learns about it by Track()
  // (as the simulator does) and, with a dirty log, by harvesting.
  void Write(RegionId r, size_t i, const Page& p) {
    sim.Write(PageRef{r, i}, p.data());
    engine.Track(r, i, 1);
  }
  void Discard(RegionId r, size_t first, size_t count) {
    for (size_t i = first; i < first + count; ++i) sim.Discard(PageRef{r, i});
    engine.Discard(r, first, count);
  }
  bool Reads(RegionId r, size_t i, const Page& p) const {
    return std::memcmp(sim.Read(PageRef{r, i}), p.data(), kPageSize) == 0;
  }
  SimMemory::PageState State(RegionId r, size_t i) const { return sim.State(PageRef{r, i}); }
  Stats S() const { return engine.GetStats(); }
  void Set(const char* key, const char* value) {
    Params p = engine.params();
    ASSERT_EQ(p.Set(key, value), "");
    ASSERT_EQ(engine.SetParams(p), "");
  }

  SimMemory sim;
  Engine engine;
};

}  // namespace pksm

#endif  // PKSM_CORE_ENGINE_TEST_UTIL_H_
