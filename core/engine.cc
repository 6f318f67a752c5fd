// The PKSM scanner.
//
// One Step() is one wake-up of the scanner (ksm_do_scan in mm/ksm.c):
//   1. sync and harvest the dirty log: track pages written for the first
//      time, confirm and account copy-on-write breaks of merged pages, and
//      drop written pages from the unstable tree;
//   2. free the records on the del list;
//   3. examine up to `budget` candidates, taken from the new and the rescan
//      list by new_ratio, each either kept on probation, merged (zero page,
//      stable tree, or with an unstable-tree partner), or moved on to the
//      rescan list.
// A full pass ends when both lists have nothing left "todo" for this pass;
// the lists' todo/done roles then swap (O(1)) and the unstable tree is
// dropped by a generation bump -- unless no node of it changed during the
// pass, in which case it is still exact and kept (see EndPass).
//
// Cost rules: no allocation, std::function or virtual call per page beyond
// the seams (PageData, and the Merger only when merging); with a dirty log
// an unchanged page costs a bit test and two list operations.
#include "pksm/engine.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "pksm/hash.h"
#include "rmap_item.h"
#include "stable_tree.h"
#include "unstable_tree.h"

namespace pksm {
namespace {

// Records are allocated per chunk of a region so that they never move (the
// intrusive hooks point at them) and untouched parts of a large region cost
// nothing.
constexpr size_t kChunkShift = 12;
constexpr size_t kChunkItems = size_t{1} << kChunkShift;

// One region of guest pages as the engine sees it.
struct Region {
  RegionId id = 0;
  std::string name;
  size_t pages = 0;
  uint16_t slot = 0;
  bool removed = false;                        // RemoveRegion'd, draining
  std::vector<std::unique_ptr<RmapItem[]>> chunks;
  std::vector<uint64_t> written;               // written since the record's last visit
  std::vector<uint64_t> harvest;               // scratch for DirtyLog::Harvest, kept zero
  uint64_t records = 0;                        // records that exist (incl. del list)
  uint64_t tracked = 0;                        // records not on the del list
  uint64_t merged = 0;                         // records mapping a stable page
  uint64_t zero = 0;                           // records mapping the zero page

  size_t Words() const { return (pages + 63) / 64; }
  RmapItem* ItemAt(size_t i) const {
    size_t c = i >> kChunkShift;
    if (c >= chunks.size() || !chunks[c]) return nullptr;
    return &chunks[c][i & (kChunkItems - 1)];
  }
  RmapItem* EnsureItem(size_t i) {
    size_t c = i >> kChunkShift;
    if (c >= chunks.size()) chunks.resize(c + 1);
    if (!chunks[c]) {
      chunks[c] = std::make_unique<RmapItem[]>(kChunkItems);
      for (size_t k = 0; k < kChunkItems; ++k) {
        chunks[c][k].index = static_cast<uint32_t>((c << kChunkShift) + k);
        chunks[c][k].region_slot = slot;
      }
    }
    return &chunks[c][i & (kChunkItems - 1)];
  }
  bool TestAndClearWritten(size_t i) {
    uint64_t& w = written[i / 64];
    uint64_t bit = uint64_t{1} << (i % 64);
    bool was = (w & bit) != 0;
    w &= ~bit;
    return was;
  }
  void SetWritten(size_t i) { written[i / 64] |= uint64_t{1} << (i % 64); }
  void ClearWritten(size_t i) { written[i / 64] &= ~(uint64_t{1} << (i % 64)); }
  void Resize(size_t n) {
    pages = n;
    written.resize(Words(), 0);
    harvest.resize(Words(), 0);
    if (n % 64 && !written.empty()) {
      uint64_t mask = (uint64_t{1} << (n % 64)) - 1;
      written.back() &= mask;
    }
  }
};

size_t Bucket(uint16_t cnt) { return std::min<size_t>(cnt, kProbationBuckets - 1); }

// The record is the engine's per-page overhead: keep it small.
static_assert(sizeof(RmapItem) <= 80, "RmapItem grew");

bool IsNewList(ListId l) { return l == ListId::kNew0 || l == ListId::kNew1; }

}  // namespace

class Engine::Impl {
 public:
  Impl(GuestMemory* memory, Merger* merger, DirtyLog* dirty_log, const Params& params)
      : memory_(memory), merger_(merger), dirty_(dirty_log), params_(params), stable_(&tree_), unstable_(&tree_) {}

  ~Impl() {
    for (ItemList& l : lists_) l.clear();  // O(1) each: normal_link hooks
  }

  // ---------------------------------------------------------------- regions

  Region* Live(RegionId id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : regions_[it->second].get();
  }

  // Limits: a record names its region by a 16-bit slot and its page by a
  // 32-bit index, so up to 65,535 regions (live or draining) of up to 2^32
  // pages (16 TiB) each; a QEMU guest has a few dozen RAM blocks.
  void AddRegion(RegionId id, std::string name, size_t pages) {
    if (Live(id)) RemoveRegion(id);
    uint16_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      slot = static_cast<uint16_t>(regions_.size());
      regions_.emplace_back();
    }
    auto r = std::make_unique<Region>();
    r->id = id;
    r->name = std::move(name);
    r->slot = slot;
    r->Resize(pages);
    regions_[slot] = std::move(r);
    by_id_[id] = slot;
  }

  void RemoveRegion(RegionId id) {
    Region* r = Live(id);
    if (!r) return;
    DiscardRange(r, 0, r->pages);
    r->removed = true;
    by_id_.erase(id);
    MaybeFreeRegion(r);
  }

  void ResizeRegion(RegionId id, size_t pages) {
    Region* r = Live(id);
    if (!r) return;
    if (pages < r->pages) DiscardRange(r, pages, r->pages - pages);
    r->Resize(pages);
  }

  void MaybeFreeRegion(Region* r) {
    if (!r->removed || r->records != 0) return;
    uint16_t slot = r->slot;
    regions_[slot].reset();
    free_slots_.push_back(slot);
  }

  // ------------------------------------------------------------------ lists

  ListId NewTodo() const { return (pass_ & 1) ? ListId::kNew1 : ListId::kNew0; }
  ListId NewDone() const { return (pass_ & 1) ? ListId::kNew0 : ListId::kNew1; }
  ListId RescanTodo() const { return (pass_ & 1) ? ListId::kRescan1 : ListId::kRescan0; }
  ListId RescanDone() const { return (pass_ & 1) ? ListId::kRescan0 : ListId::kRescan1; }
  ItemList& List(ListId l) { return lists_[static_cast<size_t>(l)]; }

  void Push(RmapItem* it, ListId l) {
    it->list = l;
    List(l).push_back(*it);
    if (IsNewList(l)) ++probation_[Bucket(it->cnt)];
  }

  // Takes the record off the list it is on (work, del or zero list).
  void Unlink(RmapItem* it) {
    ListId l = it->list;
    if (l == ListId::kNone) return;
    if (l == ListId::kMapping) {
      it->dup->mappings.erase(it->dup->mappings.iterator_to(*it));
    } else {
      List(l).erase(List(l).iterator_to(*it));
      if (IsNewList(l)) --probation_[Bucket(it->cnt)];
    }
    it->list = ListId::kNone;
  }

  Region* RegionOf(const RmapItem* it) const { return regions_[it->region_slot].get(); }
  PageRef RefOf(const RmapItem* it) const { return PageRef{RegionOf(it)->id, it->index}; }

  // ---------------------------------------------------------------- records

  void Track(RegionId id, size_t first, size_t count) {
    Region* r = Live(id);
    if (!r || first >= r->pages) return;
    size_t end = first + std::min(count, r->pages - first);
    for (size_t i = first; i < end; ++i) TrackPage(r, i, /*by_track=*/true);
  }

  // Gives page i a record on the new list (the rescan list in ksm mode).
  //
  // A page tracked because the dirty log reported a write counts as written
  // on its first visit. A page handed over by Track() (content that exists
  // now) is judged at its first visit by the dirty log itself when there is
  // one: the log reports every write since the region was added, so the
  // time between Track() and the visit is a real observation, the one the
  // kernel spends a whole checksum pass on. This is what lets a settled
  // page merge in the first pass with delay 1. See ScanItem for the guard
  // that keeps that observation from being empty.
  void TrackPage(Region* r, size_t i, bool by_track = false) {
    RmapItem* it = r->EnsureItem(i);
    if (it->state == ItemState::kDel) {
      Unlink(it);  // revived before the scanner freed it
    } else if (it->state != ItemState::kUntracked) {
      return;
    } else {
      ++rmap_items_;
      ++r->records;
    }
    ++r->tracked;
    it->cnt = 0;
    it->flags = 0;
    it->checksum = 0;
    it->unstable_gen = 0;
    it->stable_version = 0;
    if (by_track && !UseChecksum()) {
      it->flags = kFreshTrack;
      it->seen_at = observations_;
    } else {
      r->SetWritten(i);  // a fresh page counts as written on its first visit
    }
    if (params_.mode == Mode::kKsm) {
      it->state = ItemState::kRescan;
      Push(it, RescanTodo());
    } else {
      it->state = ItemState::kNew;
      Push(it, NewTodo());
    }
  }

  // Forgets a record at once (a never-populated zero page): a later write
  // tracks it again through the dirty log.
  void Untrack(RmapItem* it) {
    Region* r = RegionOf(it);
    Unlink(it);
    it->state = ItemState::kUntracked;
    r->ClearWritten(it->index);
    --rmap_items_;
    --r->records;
    --r->tracked;
  }

  void Discard(RegionId id, size_t first, size_t count) {
    Region* r = Live(id);
    if (!r || first >= r->pages) return;
    DiscardRange(r, first, std::min(count, r->pages - first));
  }

  void DiscardRange(Region* r, size_t first, size_t count) {
    for (size_t i = first; i < first + count; ++i) {
      RmapItem* it = r->ItemAt(i);
      if (it) DiscardItem(it);
    }
  }

  // Takes the record out of every list, tree and stable page and queues it on
  // the del list. The page's memory is gone, so nothing is unmerged.
  void DiscardItem(RmapItem* it) {
    Region* r = RegionOf(it);
    switch (it->state) {
      case ItemState::kUntracked:
      case ItemState::kDel:
        return;
      case ItemState::kNew:
      case ItemState::kRescan:
        Unlink(it);
        if (unstable_.Contains(it)) tree_stale_ = true;  // its node may read zero already
        unstable_.Leave(it);
        break;
      case ItemState::kStable:
      case ItemState::kZero:
        LeaveShared(it);
        break;
    }
    it->checksum = 0;
    it->state = ItemState::kDel;
    r->ClearWritten(it->index);
    --r->tracked;
    Push(it, ListId::kDel);
  }

  void FreeDelList() {
    ItemList& del = List(ListId::kDel);
    while (!del.empty()) {
      RmapItem* it = &del.front();
      del.pop_front();
      it->list = ListId::kNone;
      it->state = ItemState::kUntracked;
      Region* r = RegionOf(it);
      --rmap_items_;
      --r->records;
      MaybeFreeRegion(r);
    }
  }

  // ------------------------------------------------------------ stable side

  // Unhooks a kStable record from its stable page; releases the page when
  // that was its last mapping.
  void RemoveMapping(RmapItem* it) {
    StableDup* dup = it->dup;
    Unlink(it);
    it->checksum = 0;
    it->flags &= static_cast<uint8_t>(~kChecksumValid);
    --stable_mappings_;
    --RegionOf(it)->merged;
    ++stable_version_;  // the dup has room again
    if (dup->mappings.empty()) {
      merger_->ReleaseStable(dup->handle);
      stable_.RemoveDup(dup, [this](StableHandle h) { return merger_->StableData(h); });
    }
  }

  void MapStable(RmapItem* it, StableDup* dup) {
    Region* r = RegionOf(it);
    it->state = ItemState::kStable;
    it->dup = dup;
    it->list = ListId::kMapping;
    dup->mappings.push_back(*it);
    ++stable_mappings_;
    ++r->merged;
    r->ClearWritten(it->index);
  }

  void MapZero(RmapItem* it) {
    Region* r = RegionOf(it);
    it->state = ItemState::kZero;
    Push(it, ListId::kZero);
    ++zero_pages_;
    ++r->zero;
    r->ClearWritten(it->index);
  }

  // Takes a merged record off its stable page (releasing the page with its
  // last mapping) or off the zero page.
  void LeaveShared(RmapItem* it) {
    if (it->state == ItemState::kStable) {
      RemoveMapping(it);
      return;
    }
    Unlink(it);
    --zero_pages_;
    --RegionOf(it)->zero;
  }

  // A merged record whose page is private again (a write broke the sharing,
  // or it was unmerged) restarts on `list` in `state`, as just written.
  void RestartShared(RmapItem* it, ItemState state, ListId list) {
    LeaveShared(it);
    it->state = state;
    it->cnt = 0;
    it->flags = 0;
    it->checksum = 0;
    RegionOf(it)->SetWritten(it->index);
    Push(it, list);
  }

  // A write broke the sharing of a merged page: account it and give the
  // record back to the rescan list.
  void BreakCow(RmapItem* it) {
    ++cow_breaks_;
    RestartShared(it, ItemState::kRescan, it->last_pass == pass_ ? RescanDone() : RescanTodo());
  }

  // Accounts a refused merge.
  void Refused(MergeResult r) {
    ++merge_failures_;
    if (r == MergeResult::kNoBudget) ++budget_refusals_;
  }

  // ------------------------------------------------------------- dirty log

  // Harvests every live region and handles the newly reported writes.
  void HarvestDirtyLog() {
    if (dirty_->Sync()) ++observations_;
    for (auto& rp : regions_) {
      Region* r = rp.get();
      if (!r || r->removed || r->pages == 0) continue;
      uint64_t* h = r->harvest.data();
      dirty_->Harvest(r->id, r->pages, h);
      size_t words = r->Words();
      for (size_t w = 0; w < words; ++w) {
        uint64_t bits = h[w];
        if (!bits) continue;
        h[w] = 0;
        r->written[w] |= bits;
        while (bits) {
          size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
          bits &= bits - 1;
          if (i >= r->pages) break;
          OnWritten(r, i);
        }
      }
      if (r->pages % 64) r->written[words - 1] &= (uint64_t{1} << (r->pages % 64)) - 1;
    }
  }

  void OnWritten(Region* r, size_t i) {
    RmapItem* it = r->ItemAt(i);
    ItemState st = it ? it->state : ItemState::kUntracked;
    switch (st) {
      case ItemState::kUntracked:
        TrackPage(r, i);
        break;
      case ItemState::kStable:
      case ItemState::kZero:
        // The bit may predate the merge: only a page that no longer maps
        // the shared page broke its sharing.
        if (merger_->IsMerged(PageRef{r->id, i})) {
          r->ClearWritten(i);
        } else {
          BreakCow(it);
        }
        break;
      case ItemState::kNew:
      case ItemState::kRescan:
        // Its content is no longer what the unstable tree was ordered by.
        if (unstable_.Contains(it)) tree_stale_ = true;
        unstable_.Leave(it);
        it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
        break;
      case ItemState::kDel:
        r->ClearWritten(i);
        break;
    }
  }

  // Without a dirty log (and in ksm mode, like the kernel) sharing breaks
  // are found by asking the Merger about every merged page once per pass.
  void SweepMerged() {
    sweep_.clear();
    stable_.ForEachDup([&](StableDup* d) {
      for (RmapItem& it : d->mappings)
        if (!merger_->IsMerged(RefOf(&it))) sweep_.push_back(&it);
    });
    for (RmapItem& it : List(ListId::kZero))
      if (!merger_->IsMerged(RefOf(&it))) sweep_.push_back(&it);
    for (RmapItem* it : sweep_) BreakCow(it);
    sweep_.clear();
  }

  // ------------------------------------------------------------------- scan

  bool UseChecksum() const { return dirty_ == nullptr || params_.mode == Mode::kKsm; }

  // The kernel drops its unstable tree every pass because a page may have
  // changed under its node without notice, leaving the tree misordered.
  // PKSM learns of every change (dirty log, or the checksum at the page's
  // visit) and takes the node out then; a tree in which no node changed
  // this pass is still exact, so it is kept and its unchanged pages are not
  // reinserted next pass (that reinsertion is most of the cost of scanning
  // a settled guest). Any change in the tree during the pass may have
  // misdirected insertions past the stale node: then the tree is dropped,
  // exactly like the kernel. ksm mode always drops it.
  void EndPass() {
    ++full_scans_;
    ++pass_;
    if (params_.mode == Mode::kKsm || tree_stale_) unstable_.Reset();
    tree_stale_ = false;
    if (UseChecksum()) SweepMerged();
  }

  RmapItem* PopCandidate() {
    ItemList& nl = List(NewTodo());
    ItemList& rl = List(RescanTodo());
    bool has_new = !nl.empty(), has_rescan = !rl.empty();
    if (!has_new && !has_rescan) return nullptr;
    bool take_new = has_new;
    if (has_new && has_rescan) {
      ratio_acc_ += params_.new_ratio;
      take_new = ratio_acc_ >= 100;
      if (take_new) ratio_acc_ -= 100;
    }
    RmapItem* it = take_new ? &nl.front() : &rl.front();
    Unlink(it);
    return it;
  }

  size_t StepInternal(size_t budget, bool stop_at_pass_end) {
    if (params_.run == 0) return 0;
    if (params_.run == 2) {
      if (dirty_) HarvestDirtyLog();  // account breaks that already happened
      FreeDelList();
      UnmergeAll();
      params_.run = 0;
      return 0;
    }
    if (dirty_) HarvestDirtyLog();
    FreeDelList();
    size_t examined = 0;
    while (examined < budget) {
      RmapItem* it = PopCandidate();
      if (!it) {
        EndPass();
        if (stop_at_pass_end) break;
        if (List(NewTodo()).empty() && List(RescanTodo()).empty()) break;
        continue;
      }
      ScanItem(it);
      ++examined;
    }
    merger_->Flush();
    return examined;
  }

  // True if the page was written since the record's last visit.
  // (checksum volatility; the dirty log's bit is read in ScanItem)
  bool ConsumeWritten(RmapItem* it, Region* r, const uint8_t* data) {
    uint64_t sum = PageChecksum(data);
    bytes_hashed_ += kPageSize;
    bool written = !(it->flags & kChecksumValid) || sum != it->checksum;
    it->checksum = sum;
    it->flags |= kChecksumValid;
    if (dirty_) r->ClearWritten(it->index);
    return written;
  }

  void EnsureHash(RmapItem* it, const uint8_t* data) {
    if (it->flags & kHashValid) return;
    it->partial_hash = PartialHash(data);
    bytes_hashed_ += kPartialHashBytes;
    it->flags |= kHashValid;
  }

  // The page went away under the scanner (a region change the engine has
  // not been told about yet, which will discard the record).
  void PageGone(RmapItem* it, bool from_new) {
    unstable_.Leave(it);
    Push(it, from_new ? NewDone() : RescanDone());
  }

  // Examines one candidate just taken off a todo list.
  void ScanItem(RmapItem* it) {
    Region* r = RegionOf(it);
    bool from_new = it->state == ItemState::kNew;
    ++pages_scanned_;
    it->last_pass = pass_;
    // With a dirty log the page is read only when it is worth a look.
    const uint8_t* data = nullptr;
    bool written;
    if (UseChecksum()) {
      data = memory_->PageData(PageRef{r->id, it->index});
      if (!data) {
        PageGone(it, from_new);
        return;
      }
      written = ConsumeWritten(it, r, data);
    } else {
      written = r->TestAndClearWritten(it->index);
      if (it->flags & kFreshTrack) {
        // A fresh record's first visit covers Track() .. this step's
        // harvest. Unless two observations of the dirty log lie in between
        // (so a whole interval was watched), that proves nothing: send it
        // to the back of this pass's todo list once, so it is judged later
        // in the same pass.
        if (!written && observations_ < it->seen_at + 2 && !(it->flags & kRequeued)) {
          it->flags |= kRequeued;
          Push(it, NewTodo());
          return;
        }
        if (observations_ < it->seen_at + 2) written = true;  // still unobserved
        it->flags &= static_cast<uint8_t>(~(kFreshTrack | kRequeued));
      }
    }
    if (written) it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
    if (unstable_.Contains(it)) {
      // Kept from an earlier pass (see EndPass): an unchanged page is still
      // where it belongs, and unless the stable tree changed there is
      // nothing new for it to find.
      if (!written && (it->flags & kHashValid) && it->stable_version == stable_version_) {
        Push(it, RescanDone());
        return;
      }
      if (written) tree_stale_ = true;
    }
    unstable_.Leave(it);
    if (!data) {
      data = memory_->PageData(PageRef{r->id, it->index});
      if (!data) {
        PageGone(it, from_new);
        return;
      }
    }
    if (params_.mode == Mode::kKsm) {
      KsmCmpAndMerge(it, data, written);
      return;
    }
    if (from_new && params_.delay > 0) {
      // Probation: only a page left unwritten on `delay` consecutive
      // visits is worth the cost of a merge attempt.
      if (written) {
        it->cnt = 0;
        if (!UseChecksum()) it->seen_at = observations_;
        Push(it, NewDone());
        return;
      }
      // With a dirty log, a visit is evidence only if the log observed the
      // guest since the last one that counted: a provider that samples
      // less often than the scanner passes (QEMU's log, at most every
      // 250 ms) must not let two visits count for one interval.
      if (!UseChecksum()) {
        if (observations_ <= it->seen_at) {
          Push(it, NewDone());
          return;
        }
        it->seen_at = observations_;
      }
      if (it->cnt < 0xffff) ++it->cnt;
      if (it->cnt < params_.delay) {
        Push(it, NewDone());
        return;
      }
    }
    CmpAndMerge(it, data, written);
  }

  void ToRescan(RmapItem* it) {
    it->state = ItemState::kRescan;
    Push(it, RescanDone());
  }

  // A merge found the page never populated (no memory behind it: untouched
  // guest RAM). Merging it would save nothing (and a stable page would
  // spend a mapping), so it leaves the trees: with a dirty log the record is
  // forgotten (a write tracks it again), without one it waits on the new
  // list like a fresh page. Any Merger call may report it (MergeZero,
  // CreateStable, MergeInto); it is no refusal.
  void NotPopulated(RmapItem* it) {
    it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
    if (dirty_) {
      Untrack(it);  // nothing to save; a write will track it again
    } else {
      it->cnt = 0;
      it->state = ItemState::kNew;
      Push(it, NewDone());
    }
  }

  // Zero-page path; returns true if the record was disposed of.
  bool TryZero(RmapItem* it) {
    MergeResult res = merger_->MergeZero(RefOf(it));
    switch (res) {
      case MergeResult::kMerged:
        MapZero(it);
        return true;
      case MergeResult::kNotPopulated:
        NotPopulated(it);
        return true;
      default:
        Refused(res);
        it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
        ToRescan(it);
        return true;
    }
  }

  // Stable-tree search; returns true if the record was merged or disposed
  // of. Identical content whose dups are all full counts as not found: the
  // page then looks for a partner in the unstable tree, and the pair starts
  // a new dup of that content (max_page_sharing).
  bool TryStable(RmapItem* it, const uint8_t* data) {
    ++stable_lookups_;
    StableEntry* e = stable_.Find(it->partial_hash, data);
    if (!e) {
      it->stable_version = stable_version_;
      return false;
    }
    ++stable_hits_;
    StableDup* dup = StableTree::DupWithRoom(e, params_.max_page_sharing);
    if (!dup) return false;
    MergeResult res = merger_->MergeInto(dup->handle, RefOf(it));
    if (res == MergeResult::kMerged) {
      ++merges_;
      MapStable(it, dup);
      return true;
    }
    if (res == MergeResult::kNotPopulated) {
      NotPopulated(it);
      return true;
    }
    Refused(res);
    it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
    ToRescan(it);
    return true;
  }

  // Unstable-tree search-or-insert and the two-page merge.
  void TryUnstable(RmapItem* it, const uint8_t* data) {
    RmapItem* match = unstable_.SearchInsert(it, it->partial_hash, data, [this](const RmapItem& n) {
      return memory_->PageData(RefOf(&n));
    });
    if (!match) {
      ToRescan(it);  // inserted; waits on the rescan list for next pass
      return;
    }
    unstable_.Erase(match);
    Unlink(match);  // it sat on a rescan list
    PageRef mref = RefOf(match);
    StableHandle h = 0;
    MergeResult res = merger_->CreateStable(mref, &h);
    if (res == MergeResult::kNotPopulated) {
      // The tree node was an untouched page: it leaves; `it` waits for a
      // partner next pass (it was not inserted).
      NotPopulated(match);
      ToRescan(it);
      return;
    }
    if (res != MergeResult::kMerged) {
      Refused(res);
      if (res == MergeResult::kChanged) tree_stale_ = true;  // the node had changed under the tree
      match->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
      ToRescan(match);
      ToRescan(it);
      return;
    }
    res = merger_->MergeInto(h, RefOf(it));
    if (res != MergeResult::kMerged) {
      // Like the kernel breaking COW on the half-made pair.
      if (res != MergeResult::kNotPopulated) Refused(res);
      if (merger_->Unmerge(mref)) {
        ++unmerges_;
        merger_->ReleaseStable(h);
        ToRescan(match);
      } else {
        ++merges_;
        MapStable(match, AddStablePage(h));
      }
      if (res == MergeResult::kNotPopulated) {
        NotPopulated(it);
      } else {
        it->flags &= static_cast<uint8_t>(~(kHashValid | kNonZeroKnown));
        ToRescan(it);
      }
      return;
    }
    merges_ += 2;
    StableDup* dup = AddStablePage(h);
    MapStable(match, dup);
    MapStable(it, dup);
  }

  StableDup* AddStablePage(StableHandle h) {
    const uint8_t* sd = merger_->StableData(h);
    uint64_t hash = PartialHash(sd);
    bytes_hashed_ += kPartialHashBytes;
    ++stable_version_;
    return stable_.AddDup(h, sd, hash);
  }

  // cmp_and_merge_page, PKSM order: zero page, stable tree, volatility,
  // unstable tree.
  void CmpAndMerge(RmapItem* it, const uint8_t* data, bool written) {
    if (params_.use_zero_pages && !(it->flags & kNonZeroKnown)) {
      if (IsZeroPage(data)) {
        TryZero(it);
        return;
      }
      it->flags |= kNonZeroKnown;
    }
    bool fresh_hash = !(it->flags & kHashValid);
    EnsureHash(it, data);
    // An unwritten page that found nothing in the stable tree will find
    // nothing again until the tree gains a page or a dup gains room.
    if (written || fresh_hash || it->stable_version != stable_version_) {
      if (TryStable(it, data)) return;
    }
    if (written) {
      ToRescan(it);
      return;
    }
    TryUnstable(it, data);
  }

  // The kernel's order (ksm mode): stable tree, checksum volatility, zero
  // page, unstable tree.
  void KsmCmpAndMerge(RmapItem* it, const uint8_t* data, bool written) {
    EnsureHash(it, data);
    if (TryStable(it, data)) return;
    if (written) {
      ToRescan(it);
      return;
    }
    if (params_.use_zero_pages && IsZeroPage(data)) {
      TryZero(it);
      return;
    }
    TryUnstable(it, data);
  }

  // run = 2: every merged page gets a private copy back, every stable page
  // is released, and every record restarts on the new list.
  void UnmergeAll() {
    sweep_.clear();
    stable_.ForEachDup([&](StableDup* d) {
      for (RmapItem& it : d->mappings) sweep_.push_back(&it);
    });
    for (RmapItem& it : List(ListId::kZero)) sweep_.push_back(&it);
    ListId back = params_.mode == Mode::kKsm ? RescanTodo() : NewTodo();
    ItemState back_state = params_.mode == Mode::kKsm ? ItemState::kRescan : ItemState::kNew;
    for (RmapItem* it : sweep_) {
      if (!merger_->Unmerge(RefOf(it))) continue;  // still reads right through the shared page
      ++unmerges_;
      RestartShared(it, back_state, back);
    }
    sweep_.clear();
    unstable_.Reset();
    unstable_.Reset();  // forget the previous pass's nodes too
    for (ListId l : {ListId::kNew0, ListId::kNew1, ListId::kRescan0, ListId::kRescan1}) {
      if (l == back) continue;
      ItemList& list = List(l);
      while (!list.empty()) {
        RmapItem* it = &list.front();
        Unlink(it);
        it->state = back_state;
        it->cnt = 0;
        Push(it, back);
      }
    }
    // Records already on `back` restart probation too.
    ItemList& b = List(back);
    if (back_state == ItemState::kNew) {
      for (RmapItem& it : b) {
        --probation_[Bucket(it.cnt)];
        it.cnt = 0;
        ++probation_[0];
      }
    }
  }

  // ------------------------------------------------------------ parameters

  std::string SetParams(const Params& p) {
    std::string err = p.Validate();
    if (!err.empty()) return err;
    if (p.max_page_sharing != params_.max_page_sharing || p.mode != params_.mode) ++stable_version_;
    if (p.mode != params_.mode) unstable_.Reset();
    params_ = p;
    return "";
  }

  Stats GetStats() const {
    Stats s;
    s.pages_shared = stable_.dups();
    s.pages_sharing = stable_mappings_ - stable_.dups();
    s.pages_unshared = unstable_.unshared();
    s.ksm_zero_pages = zero_pages_;
    s.full_scans = full_scans_;
    s.stable_node_chains = stable_.chains();
    s.stable_node_dups = stable_.chain_dups();
    s.rmap_items = rmap_items_;
    s.new_list = lists_[0].size() + lists_[1].size();
    s.rescan_list = lists_[2].size() + lists_[3].size();
    s.del_list = lists_[static_cast<size_t>(ListId::kDel)].size();
    int64_t vol = static_cast<int64_t>(rmap_items_) - static_cast<int64_t>(s.del_list) -
                  static_cast<int64_t>(stable_mappings_) - static_cast<int64_t>(s.pages_unshared) -
                  static_cast<int64_t>(zero_pages_);
    s.pages_volatile = vol > 0 ? static_cast<uint64_t>(vol) : 0;
    s.general_profit = static_cast<int64_t>((s.pages_sharing + zero_pages_) * kPageSize) -
                       static_cast<int64_t>(rmap_items_ * RecordBytes());
    s.cow_breaks = cow_breaks_;
    s.pages_scanned = pages_scanned_;
    s.merges = merges_;
    s.merge_failures = merge_failures_;
    s.budget_refusals = budget_refusals_;
    s.unmerges = unmerges_;
    s.pages_compared = tree_.pages_compared;
    s.partial_hash_hits = tree_.partial_hash_hits;
    s.partial_hash_misses = tree_.partial_hash_misses;
    s.stable_lookups = stable_lookups_;
    s.stable_hits = stable_hits_;
    s.bytes_hashed = bytes_hashed_;
    s.probation = probation_;
    s.dirty_log = dirty_ ? std::string(dirty_->Name()) : "checksum";
    s.mode = ToString(params_.mode);
    return s;
  }

  std::vector<RegionStats> GetRegionStats() const {
    std::vector<RegionStats> out;
    for (const auto& rp : regions_) {
      if (!rp || rp->removed) continue;
      RegionStats rs;
      rs.id = rp->id;
      rs.name = rp->name;
      rs.pages = rp->pages;
      rs.pages_tracked = rp->tracked;
      rs.pages_merged = rp->merged;
      rs.zero_pages = rp->zero;
      out.push_back(std::move(rs));
    }
    std::sort(out.begin(), out.end(), [](const RegionStats& a, const RegionStats& b) { return a.id < b.id; });
    return out;
  }

  GuestMemory* memory_;
  Merger* merger_;
  DirtyLog* dirty_;
  Params params_;

  std::vector<std::unique_ptr<Region>> regions_;  // by slot
  std::vector<uint16_t> free_slots_;
  std::unordered_map<RegionId, uint16_t> by_id_;  // live regions only

  // Indexed by ListId: new0, new1, rescan0, rescan1, del, zero.
  ItemList lists_[6];
  TreeCounters tree_;
  StableTree stable_;
  UnstableTree unstable_;
  std::vector<RmapItem*> sweep_;  // scratch

  uint32_t pass_ = 1;
  uint64_t observations_ = 0;  // dirty-log Syncs that observed the guest (DirtyLog::Sync)
  bool tree_stale_ = false;  // a node of the unstable tree changed this pass
  uint32_t stable_version_ = 1;
  uint32_t ratio_acc_ = 0;
  uint64_t full_scans_ = 0;
  uint64_t rmap_items_ = 0;
  uint64_t zero_pages_ = 0;
  uint64_t stable_mappings_ = 0;
  uint64_t cow_breaks_ = 0;
  uint64_t pages_scanned_ = 0;
  uint64_t merges_ = 0;
  uint64_t merge_failures_ = 0;
  uint64_t budget_refusals_ = 0;
  uint64_t unmerges_ = 0;
  uint64_t stable_lookups_ = 0;
  uint64_t stable_hits_ = 0;
  uint64_t bytes_hashed_ = 0;
  std::array<uint64_t, kProbationBuckets> probation_{};
};

Engine::Engine(GuestMemory* memory, Merger* merger, DirtyLog* dirty_log, const Params& params)
    : impl_(std::make_unique<Impl>(memory, merger, dirty_log, params)) {}
Engine::~Engine() = default;

void Engine::AddRegion(RegionId id, std::string name, size_t pages) { impl_->AddRegion(id, std::move(name), pages); }
void Engine::RemoveRegion(RegionId id) { impl_->RemoveRegion(id); }
void Engine::ResizeRegion(RegionId id, size_t pages) { impl_->ResizeRegion(id, pages); }
void Engine::Track(RegionId id, size_t first, size_t count) { impl_->Track(id, first, count); }
void Engine::Discard(RegionId id, size_t first, size_t count) { impl_->Discard(id, first, count); }

size_t Engine::Step(size_t budget) { return impl_->StepInternal(budget, /*stop_at_pass_end=*/false); }

void Engine::RunPasses(uint64_t passes) {
  if (impl_->params_.run == 2) {
    impl_->StepInternal(0, false);
    return;
  }
  uint64_t target = impl_->full_scans_ + passes;
  while (impl_->params_.run == 1 && impl_->full_scans_ < target)
    impl_->StepInternal(impl_->params_.pages_to_scan, /*stop_at_pass_end=*/true);
}

const Params& Engine::params() const { return impl_->params_; }
std::string Engine::SetParams(const Params& p) { return impl_->SetParams(p); }
Stats Engine::GetStats() const { return impl_->GetStats(); }
std::vector<RegionStats> Engine::GetRegionStats() const { return impl_->GetRegionStats(); }
size_t Engine::RecordBytes() { return sizeof(RmapItem); }

}  // namespace pksm
