// SimMemory: guest memory simulated in process memory, with all three seams
// (GuestMemory, DirtyLog, Merger) over it. Used by unit tests and by the
// pksm-sim trace simulator.
//
// It behaves like guest RAM under a host that merges pages: a page is
// untouched (reads as zero, no memory), private (its own 4 KiB), mapped onto
// a stable page of the simulated store, or mapped onto the zero page. A
// write to a stable- or zero-mapped page breaks only that page's sharing,
// exactly like copy-on-write, and every write is recorded in the dirty log.
#ifndef PKSM_SIM_MEMORY_H_
#define PKSM_SIM_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "pksm/dirty_log.h"
#include "pksm/guest_memory.h"
#include "pksm/merger.h"
#include "pksm/page.h"

namespace pksm {

class SimMemory {
 public:
  SimMemory();
  ~SimMemory();
  SimMemory(const SimMemory&) = delete;
  SimMemory& operator=(const SimMemory&) = delete;

  // The seams over this memory (owned by it).
  GuestMemory* memory();
  Merger* merger();
  DirtyLog* dirty_log();

  void AddRegion(RegionId id, size_t pages);
  void RemoveRegion(RegionId id);
  size_t RegionPages(RegionId id) const;  // 0 if absent

  // A guest write of the whole page (kPageSize bytes). Breaks sharing of a
  // merged page and marks the page dirty.
  void Write(PageRef page, const uint8_t* data);
  // Writes one byte at `offset` (a partial guest write).
  void WriteByte(PageRef page, size_t offset, uint8_t value);
  // The page's memory is released: it reads as zero and is untouched again.
  void Discard(PageRef page);
  // What the guest reads (kPageSize bytes; untouched and zero pages read as zero).
  const uint8_t* Read(PageRef page) const;

  enum class PageState { kUntouched, kPrivate, kStable, kZero };
  PageState State(PageRef page) const;

  // Host memory actually used, in pages: private pages plus live stable pages.
  uint64_t HostPages() const;
  uint64_t StablePagesLive() const;

  // Test hooks for the Merger (simulate an OS refusing work).
  void SetMergeBudget(uint64_t max_stable_mappings);  // kNoBudget past it
  // Count of Merger calls that compared content (for tests).
  uint64_t merger_compares() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Deterministic trace content: 4 KiB, equal for equal arguments, distinct
// otherwise, never all-zero. content(seed) and content(seed, index).
void FillContent(uint8_t* out, uint64_t seed);
void FillContent(uint8_t* out, uint64_t seed, uint64_t index);

}  // namespace pksm

#endif  // PKSM_SIM_MEMORY_H_
