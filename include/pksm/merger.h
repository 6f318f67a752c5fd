// Merger: the only way the engine changes what backs a guest page.
//
// The engine decides *which* pages are identical (from its trees); the
// Merger makes them share memory and guarantees that nothing is lost while
// it does: every operation re-checks the content while writers are held off
// (userfaultfd write protection on Linux) and fails with kChanged if the
// page no longer has the content the merge was decided on. A write that
// races with a merge therefore always lands: either before the check (the
// merge is refused) or after the remap (the writer gets a private copy, a
// normal copy-on-write break).
//
// Stable pages (the shared, read-only copies) belong to the Merger's store
// and are named by opaque StableHandles. The engine never learns where they
// live, so a store shared between several VMs plugs in without touching it.
#ifndef PKSM_MERGER_H_
#define PKSM_MERGER_H_

#include <cstdint>
#include <string_view>

#include "pksm/page.h"

namespace pksm {

enum class MergeResult {
  kMerged,        // the page now maps the stable (or zero) page
  kChanged,       // the content differed under protection; nothing changed
  kNotPopulated,  // the page was never populated (no memory behind it): no saving
  kNoBudget,      // a resource limit (e.g. the VMA budget) refuses new mappings
  kError,         // an OS error; nothing changed, the page keeps its content
};

const char* ToString(MergeResult r);

class Merger {
 public:
  virtual ~Merger() = default;

  virtual std::string_view Name() const = 0;

  // Copies `page`'s current content into a new stable page of the store and
  // maps `page` onto it. On kMerged, *out names the new stable page, which
  // has exactly one mapping (`page`). kNotPopulated (nothing changed, no
  // stable page made) when `page` has no memory behind it: untouched guest
  // RAM reads zero without costing anything, so giving it a stable page
  // would save nothing and spend a mapping. The engine treats it as it
  // treats kNotPopulated from MergeZero.
  virtual MergeResult CreateStable(PageRef page, StableHandle* out) = 0;

  // Maps `page` onto stable page `s` if, under protection, its content
  // equals the stable page's. kNotPopulated as for CreateStable.
  virtual MergeResult MergeInto(StableHandle s, PageRef page) = 0;

  // If, under protection, `page` is all zero, drops its private memory so it
  // reads from the shared zero page. kNotPopulated when the page had no
  // memory behind it at all (untouched guest RAM).
  virtual MergeResult MergeZero(PageRef page) = 0;

  // Gives a merged (stable or zero) page back a private copy holding the
  // same content. Returns false only on an OS error; the page then still
  // reads the right content through the shared mapping.
  virtual bool Unmerge(PageRef page) = 0;

  // True while `page` still maps the stable or zero page it was merged onto,
  // i.e. no write has broken the sharing (copy-on-write) since the merge.
  virtual bool IsMerged(PageRef page) = 0;

  // The content of stable page `s` (kPageSize bytes, read-only, stable for
  // as long as the handle lives).
  virtual const uint8_t* StableData(StableHandle s) = 0;

  // The engine holds no mapping of `s` any more: free it. Pages that broke
  // sharing by copy-on-write no longer reference it.
  virtual void ReleaseStable(StableHandle s) = 0;

  // Completes the merges whose page-table changes the Merger deferred so it
  // can make them for a whole run of pages at once (one remap instead of
  // one per page). The engine calls it at the end of every Step.
  //
  // Contract for a Merger that defers: a merge returns kMerged only after
  // the content was verified under protection, and the page stays
  // protected (writers wait) until its remap is made; every other Merger
  // or DirtyLog call behaves as if the remap were made already. A remap
  // that then fails leaves the page its own memory with the same content
  // and reports it as a broken merge (IsMerged() false, page dirty).
  virtual void Flush() {}
};

}  // namespace pksm

#endif  // PKSM_MERGER_H_
