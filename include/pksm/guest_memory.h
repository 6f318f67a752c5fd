// GuestMemory: the pages the engine may read.
//
// Like LevelDB's Env, this is one of the three seams that keep every OS and
// QEMU call out of the engine (the others are DirtyLog and Merger). The
// engine only ever reads guest memory; every change to the mapping of a page
// goes through the Merger.
#ifndef PKSM_GUEST_MEMORY_H_
#define PKSM_GUEST_MEMORY_H_

#include <cstdint>

#include "pksm/page.h"

namespace pksm {

class GuestMemory {
 public:
  virtual ~GuestMemory() = default;

  // Returns a pointer to the kPageSize bytes of `page` as the guest sees them
  // now, or nullptr if the region or page no longer exists. The pointer is
  // valid until the engine's caller next changes the region set (AddRegion,
  // RemoveRegion, ResizeRegion). The content may change under the reader at
  // any time (the guest keeps running): the engine treats what it reads as a
  // hint and every merge re-compares under protection inside the Merger.
  virtual const uint8_t* PageData(PageRef page) = 0;
};

}  // namespace pksm

#endif  // PKSM_GUEST_MEMORY_H_
