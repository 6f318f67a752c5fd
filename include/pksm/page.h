// Basic vocabulary shared by every layer: page size, region ids, page refs.
#ifndef PKSM_PAGE_H_
#define PKSM_PAGE_H_

#include <cstddef>
#include <cstdint>

namespace pksm {

// pksm works on 4 KiB pages only. Regions backed by larger pages (hugetlbfs)
// are not handed to the engine.
inline constexpr size_t kPageSize = 4096;

// A region is one contiguous run of guest pages: a QEMU RAM block, a range of
// process memory, or a simulated region. Ids are chosen by the owner of the
// engine and are never reused while the engine still holds records of the
// region (a removed region's records drain through the del list first).
using RegionId = uint32_t;

// One guest page: page `index` (0-based, in pages) of region `region`.
struct PageRef {
  RegionId region = 0;
  size_t index = 0;
  friend bool operator==(const PageRef&, const PageRef&) = default;
};

// Opaque handle of one stable (shared, read-only) page, chosen by the Merger.
using StableHandle = uint64_t;

}  // namespace pksm

#endif  // PKSM_PAGE_H_
