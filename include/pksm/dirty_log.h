// DirtyLog: "which pages were written since I last asked".
//
// PKSM judges whether a page has settled from a dirty log instead of from a
// checksum of the whole page (what the kernel's KSM does): reading a bit is
// far cheaper than hashing 4 KiB, and it also reveals copy-on-write breaks
// of merged pages without touching them. When no dirty log is available the
// engine is built with a null DirtyLog and falls back to checksums.
#ifndef PKSM_DIRTY_LOG_H_
#define PKSM_DIRTY_LOG_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pksm/page.h"

namespace pksm {

class DirtyLog {
 public:
  virtual ~DirtyLog() = default;

  // Short provider name reported in statistics ("sim", "qemu", "uffd-async",
  // "uffd-sync", ...).
  virtual std::string_view Name() const = 0;

  // Called once before a round of Harvest calls. Providers that need a
  // global synchronisation (QEMU's memory_global_dirty_log_sync) do it here.
  // Returns true when the provider observed the guest anew, i.e. the coming
  // harvests cover every write up to now; a provider that samples less
  // often than the engine steps (QEMU's log: at most every 250 ms) returns
  // false in between. The engine counts observations, not steps, when it
  // decides whether a page has been watched long enough (see Engine::Track).
  virtual bool Sync() { return true; }

  // For every page of `region` written since the previous Harvest of that
  // region (or since the region was added), sets the page's bit in `dirty`
  // (bit i of word i/64 is page i; `pages` bits, words sized by the engine).
  // Bits are only ever set, never cleared, and the provider then forgets the
  // writes it reported. A provider may report a page that was not written
  // (false positives cost a delay, never data); it must never miss a write.
  virtual void Harvest(RegionId region, size_t pages, uint64_t* dirty) = 0;
};

}  // namespace pksm

#endif  // PKSM_DIRTY_LOG_H_
