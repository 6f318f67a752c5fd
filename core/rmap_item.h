// RmapItem: the engine's record of one tracked guest page.
//
// Like the kernel's struct ksm_rmap_item, one record exists per page the
// engine tracks, so its size is the engine's memory overhead (general_profit
// subtracts it). Records live in a region's chunked array (they never move,
// which the intrusive hooks need) and are threaded onto exactly one of:
//   - a work list (new/rescan, "todo" or "done" for the current pass),
//   - the del list (discarded, freed by the scanner),
//   - the mapping list of the stable page (dup) it is merged onto,
//   - the zero list (merged onto the zero page),
// through the single list hook; the tree hook threads the record into the
// unstable tree while unstable_gen names the tree's current generation.
#ifndef PKSM_CORE_RMAP_ITEM_H_
#define PKSM_CORE_RMAP_ITEM_H_

#include <cstdint>

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/rbtree.hpp>

namespace pksm {

struct StableDup;

// What a record stands for. (While the scanner examines a record it keeps
// its state but sits on no list.)
enum class ItemState : uint8_t {
  kUntracked,  // no record (slot unused)
  kNew,        // on the new list (probation)
  kRescan,     // on the rescan list
  kStable,     // merged onto a stable page (on its dup's mapping list)
  kZero,       // merged onto the zero page (on the zero list)
  kDel,        // on the del list
};

// Which list the record's list hook is on.
// The new and rescan lists are each two physical lists whose roles ("todo
// this pass", "done this pass") swap at the end of every full pass, so a
// pass ends in O(1) and a record's ListId stays true across the swap.
enum class ListId : uint8_t { kNew0, kNew1, kRescan0, kRescan1, kDel, kZero, kMapping, kNone };

// Flags of RmapItem::flags.
inline constexpr uint8_t kHashValid = 1;      // partial_hash matches the content
inline constexpr uint8_t kChecksumValid = 2;  // checksum was recorded at a visit
inline constexpr uint8_t kNonZeroKnown = 4;   // seen non-zero, unwritten since
// Tracked by Engine::Track with a dirty log: its first visit judges it by
// the dirty log (written since tracking?) instead of assuming it written.
inline constexpr uint8_t kFreshTrack = 8;
inline constexpr uint8_t kRequeued = 16;      // a fresh record sent back once (see ScanItem)

using ListHook = boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>>;
using TreeHook = boost::intrusive::set_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>,
                                                   boost::intrusive::optimize_size<true>>;

struct RmapItem {
  ListHook list_hook;
  TreeHook tree_hook;        // unstable tree (valid while unstable_gen is current)
  uint64_t partial_hash = 0; // cached PartialHash (kHashValid)
  union {
    uint64_t checksum;       // full-page xxh3 (checksum volatility), unmerged pages
    StableDup* dup;          // the stable page a kStable record maps
    uint64_t seen_at;        // new list, with a dirty log: the engine's dirty-log
                             // observation count at Track() or at the last
                             // visit that counted (see Engine's ScanItem)
  };
  uint32_t index = 0;        // page index in its region
  uint32_t last_pass = 0;    // pass number of the last visit
  uint32_t unstable_gen = 0; // unstable tree generation it was inserted in
  uint32_t stable_version = 0;  // stable-tree version of its last fruitless search
  uint16_t region_slot = 0;  // engine's slot of its region
  uint16_t cnt = 0;          // probation counter (delay is at most 1000)
  ItemState state = ItemState::kUntracked;
  ListId list = ListId::kNone;
  uint8_t flags = 0;

  RmapItem() : checksum(0) {}
};

using ItemList = boost::intrusive::list<
    RmapItem, boost::intrusive::member_hook<RmapItem, ListHook, &RmapItem::list_hook>,
    boost::intrusive::constant_time_size<true>>;

}  // namespace pksm

#endif  // PKSM_CORE_RMAP_ITEM_H_
