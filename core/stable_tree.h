// StableTree: the pages already merged, keyed by (partial hash, content).
//
// Stable pages are read-only, so unlike the unstable tree this tree never
// goes stale. Following the kernel's "chains and dups", one entry (a tree
// node) stands for one content and holds one or more stable pages (dups) of
// that content: max_page_sharing bounds the mappings of each dup so that a
// reverse walk of one stable page stays short. A new dup is started only
// when every dup of the entry is full and two more pages of that content
// meet in the unstable tree.
#ifndef PKSM_CORE_STABLE_TREE_H_
#define PKSM_CORE_STABLE_TREE_H_

#include <cstdint>

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/rbtree.hpp>

#include "rmap_item.h"
#include "tree_search.h"
#include "pksm/page.h"

namespace pksm {

struct StableEntry;

// One stable page of the Merger's store and the records mapping it.
struct StableDup {
  ListHook dup_hook;      // on its entry's dup list
  ItemList mappings;      // records merged onto this page
  StableEntry* entry = nullptr;
  StableHandle handle = 0;
};

using DupList = boost::intrusive::list<
    StableDup, boost::intrusive::member_hook<StableDup, ListHook, &StableDup::dup_hook>,
    boost::intrusive::constant_time_size<true>>;

// One content of the stable tree.
struct StableEntry {
  TreeHook tree_hook;
  uint64_t partial_hash = 0;
  const uint8_t* data = nullptr;  // content: StableData of dups.front()
  DupList dups;
};

class StableTree {
 public:
  using Tree = boost::intrusive::rbtree<
      StableEntry, boost::intrusive::member_hook<StableEntry, TreeHook, &StableEntry::tree_hook>,
      boost::intrusive::constant_time_size<false>, boost::intrusive::compare<ByPartialHash>>;

  explicit StableTree(TreeCounters* counters) : counters_(counters) {}
  ~StableTree();
  StableTree(const StableTree&) = delete;
  StableTree& operator=(const StableTree&) = delete;

  // The entry holding `data` (whose partial hash is `hash`), or nullptr.
  StableEntry* Find(uint64_t hash, const uint8_t* data);

  // Adds stable page `handle` (content `data`, partial hash `hash`) as a dup
  // of the entry with that content, creating the entry if there is none.
  StableDup* AddDup(StableHandle handle, const uint8_t* data, uint64_t hash);

  // Removes and frees `dup` (its mapping list must be empty); the entry
  // goes too when it was its last dup. `data_of` gives the content of
  // another dup when the entry's front dup leaves.
  template <class DataOf>
  void RemoveDup(StableDup* dup, DataOf&& data_of) {
    StableEntry* e = dup->entry;
    bool was_chain = e->dups.size() > 1;
    bool was_front = &e->dups.front() == dup;
    e->dups.erase(e->dups.iterator_to(*dup));
    --dups_;
    if (was_chain) {
      --chain_dups_;
      if (e->dups.size() == 1) {
        --chains_;
        --chain_dups_;
      }
    }
    delete dup;
    if (e->dups.empty()) {
      tree_.erase(tree_.iterator_to(*e));
      delete e;
      --entries_;
    } else if (was_front) {
      e->data = data_of(e->dups.front().handle);
    }
  }

  // A dup of `e` with fewer than `max_sharing` mappings, or nullptr.
  static StableDup* DupWithRoom(StableEntry* e, uint32_t max_sharing) {
    for (StableDup& d : e->dups)
      if (d.mappings.size() < max_sharing) return &d;
    return nullptr;
  }

  // Calls fn(StableDup*) for every dup; fn may not change the tree.
  template <class Fn>
  void ForEachDup(Fn&& fn) {
    for (StableEntry& e : tree_)
      for (StableDup& d : e.dups) fn(&d);
  }

  uint64_t entries() const { return entries_; }
  uint64_t dups() const { return dups_; }
  uint64_t chains() const { return chains_; }          // entries with > 1 dup
  uint64_t chain_dups() const { return chain_dups_; }  // dups in such entries

 private:
  Tree tree_;
  TreeCounters* counters_;
  uint64_t entries_ = 0;
  uint64_t dups_ = 0;
  uint64_t chains_ = 0;
  uint64_t chain_dups_ = 0;
};

}  // namespace pksm

#endif  // PKSM_CORE_STABLE_TREE_H_
