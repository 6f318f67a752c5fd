// Engine: the PKSM scanner. Deterministic and single-threaded: one thread
// (the simulator's main loop, the plugin's scanner thread) owns it and makes
// every call; other threads talk to that thread, never to the engine.
//
// The engine keeps one record (RmapItem) per tracked guest page and moves
// records between the work lists, the trees and the stable pages:
//
//   new list --probation--> cmp_and_merge --> merged (stable page / zero)
//       ^                        |   \--> unstable tree (this pass) --> rescan list
//       |                        v
//   Track()                  rescan list <-- COW break of a merged page
//   Discard()/RemoveRegion() --> del list --> freed by the scanner
//
// Equality is always decided by a full byte compare (and once more by the
// Merger under protection); partial hashes only order the trees.
#ifndef PKSM_ENGINE_H_
#define PKSM_ENGINE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "pksm/dirty_log.h"
#include "pksm/guest_memory.h"
#include "pksm/merger.h"
#include "pksm/page.h"
#include "pksm/params.h"
#include "pksm/stats.h"

namespace pksm {

class Engine {
 public:
  // `dirty_log` may be null: volatility is then judged by an xxh3 checksum
  // of the whole page, like the kernel's KSM, and copy-on-write breaks by
  // asking the Merger once per pass. The engine does not own the seams;
  // they must outlive it. `params` must be valid (Params::Validate()).
  Engine(GuestMemory* memory, Merger* merger, DirtyLog* dirty_log, const Params& params);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // --- regions and pages (owner's thread) ---

  // Declares region `id` of `pages` pages. No page is tracked yet.
  void AddRegion(RegionId id, std::string name, size_t pages);
  // Forgets the region: merged pages are not unmerged (the memory is going
  // away); every record goes to the del list and is freed by the scanner.
  void RemoveRegion(RegionId id);
  // Grows or shrinks a region; records past a new end go to the del list.
  void ResizeRegion(RegionId id, size_t pages);
  // Pages first..first+count-1 have content now: each untracked one gets a
  // record on the new list with cnt = 0. Idempotent. With a dirty log, a
  // harvested write to an untracked page tracks it too.
  void Track(RegionId id, size_t first, size_t count);
  // The pages were discarded (read as zero, no memory behind them): their
  // records go to the del list; they are untracked until tracked again.
  void Discard(RegionId id, size_t first, size_t count);

  // --- scanning ---

  // Examines up to `budget` candidates (one wake-up of the scanner). Starts
  // by syncing and harvesting the dirty log and freeing the del list. With
  // run == 0 it does nothing; with run == 2 it unmerges every page, sets
  // run to 0 and returns. Returns the number of candidates examined.
  size_t Step(size_t budget);

  // Runs Step(params().pages_to_scan) until `passes` more full passes have
  // completed (returns at once when run != 1).
  void RunPasses(uint64_t passes);

  // --- parameters and statistics ---

  const Params& params() const;
  // Validates and applies `p`; "" or the error (nothing changes on error).
  // Changing mode or max_page_sharing takes effect for new merges.
  std::string SetParams(const Params& p);

  Stats GetStats() const;
  std::vector<RegionStats> GetRegionStats() const;

  // Size of one page record, for general_profit and docs.
  static size_t RecordBytes();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pksm

#endif  // PKSM_ENGINE_H_
