// UnstableTree: pages seen unchanged but not merged yet, for this pass only.
//
// Its nodes are the records themselves and its keys are the live contents
// of guest pages, which may change under it (the kernel accepts the same:
// a stale node only costs a missed or refused merge, since the Merger
// re-compares under protection). Instead of being walked to be emptied, the
// whole tree is dropped at the end of each full pass: the generation number
// advances (records of older generations are no longer in the tree) and the
// header is reset in O(1) (normal_link hooks need no unlinking).
#ifndef PKSM_CORE_UNSTABLE_TREE_H_
#define PKSM_CORE_UNSTABLE_TREE_H_

#include <cstdint>

#include <boost/intrusive/rbtree.hpp>

#include "rmap_item.h"
#include "tree_search.h"

namespace pksm {

class UnstableTree {
 public:
  using Tree = boost::intrusive::rbtree<
      RmapItem, boost::intrusive::member_hook<RmapItem, TreeHook, &RmapItem::tree_hook>,
      boost::intrusive::constant_time_size<false>, boost::intrusive::compare<ByPartialHash>>;

  explicit UnstableTree(TreeCounters* counters) : counters_(counters) {}

  // Current generation: a record is in the tree iff unstable_gen == gen().
  uint32_t gen() const { return gen_; }
  uint64_t size() const { return size_; }

  // Pages the kernel would report as pages_unshared: in this pass's tree,
  // or in the previous pass's tree and neither revisited nor changed since
  // (the kernel, too, only forgets them as it meets them again).
  uint64_t unshared() const { return size_ + prev_; }

  bool Contains(const RmapItem* it) const { return it->unstable_gen == gen_; }

  // Searches for a record with content `data` (partial hash `hash`); if
  // none, inserts `it` and returns nullptr. `data_of(RmapItem&)` reads a
  // node's current content.
  template <class DataOf>
  RmapItem* SearchInsert(RmapItem* it, uint64_t hash, const uint8_t* data, DataOf&& data_of) {
    Tree::insert_commit_data commit;
    RmapItem* match = TreeDescend(
        tree_,
        [&](RmapItem& n) {
          const uint8_t* nd = data_of(n);
          if (!nd) return hash < n.partial_hash ? -1 : 1;  // page gone: order by hash only
          return CompareKey(hash, data, n.partial_hash, nd, counters_);
        },
        &commit);
    if (match) return match;
    tree_.insert_unique_commit(*it, commit);
    it->unstable_gen = gen_;
    ++size_;
    return nullptr;
  }

  void Erase(RmapItem* it) {
    tree_.erase(tree_.iterator_to(*it));
    it->unstable_gen = 0;
    --size_;
  }

  // The record is revisited, changed or gone: out of this pass's tree, and
  // no longer counted as unshared from the previous one.
  void Leave(RmapItem* it) {
    if (it->unstable_gen == gen_) {
      Erase(it);
    } else if (it->unstable_gen != 0 && it->unstable_gen == gen_ - 1) {
      --prev_;
      it->unstable_gen = 0;
    }
  }

  // Drops the whole tree (end of a full pass).
  void Reset() {
    prev_ = size_;
    tree_.clear();
    ++gen_;
    if (gen_ == 0) gen_ = 1;  // 0 means "in no tree"
    size_ = 0;
  }

 private:
  Tree tree_;
  TreeCounters* counters_;
  uint32_t gen_ = 1;
  uint64_t size_ = 0;
  uint64_t prev_ = 0;  // previous pass's nodes not left since
};

}  // namespace pksm

#endif  // PKSM_CORE_UNSTABLE_TREE_H_
