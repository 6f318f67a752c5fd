// Tree ordering shared by the stable and the unstable tree.
//
// Both trees are ordered by (partial hash, full content). A descent compares
// the cached 64-bit partial hashes and calls memcmp only when they tie, so a
// lookup almost always costs one memcmp: the one that proves equality. The
// descent is three-way (Boost's insert_unique_check would compare twice per
// hit), and it leaves behind the insertion point so a miss inserts without a
// second descent (search-or-insert, like the kernel's unstable_tree_search_insert).
#ifndef PKSM_CORE_TREE_SEARCH_H_
#define PKSM_CORE_TREE_SEARCH_H_

#include <cstdint>
#include <cstring>

#include "pksm/page.h"

namespace pksm {

// Work counters of tree descents (exported as statistics).
struct TreeCounters {
  uint64_t pages_compared = 0;       // full memcmp calls
  uint64_t partial_hash_hits = 0;    // steps decided by the hash alone
  uint64_t partial_hash_misses = 0;  // steps where equal hashes needed memcmp
};

// Order by partial hash alone. The trees never use it to search (equal
// hashes need the content, which TreeDescend compares); Boost only
// consults it in debug checks of a commit position.
struct ByPartialHash {
  template <class T>
  bool operator()(const T& a, const T& b) const { return a.partial_hash < b.partial_hash; }
};

// Three-way compare of the key (ha, a) with a node's (hb, b).
inline int CompareKey(uint64_t ha, const uint8_t* a, uint64_t hb, const uint8_t* b, TreeCounters* c) {
  if (ha != hb) {
    ++c->partial_hash_hits;
    return ha < hb ? -1 : 1;
  }
  ++c->partial_hash_misses;
  ++c->pages_compared;
  return std::memcmp(a, b, kPageSize);
}

// Descends `tree` with `cmp(node_value) -> int` (key vs node). Returns the
// equal node, or nullptr with *commit set to the insertion point for
// tree.insert_unique_commit.
template <class Tree, class Cmp>
typename Tree::value_type* TreeDescend(Tree& tree, Cmp&& cmp, typename Tree::insert_commit_data* commit) {
  using NodeTraits = typename Tree::node_traits;
  using ValueTraits = typename Tree::value_traits;
  auto header = tree.end().pointed_node();
  auto parent = header;
  auto node = NodeTraits::get_parent(header);
  bool left = true;
  while (node) {
    parent = node;
    auto* value = ValueTraits::to_value_ptr(node);
    int c = cmp(*value);
    if (c == 0) return value;
    left = c < 0;
    node = left ? NodeTraits::get_left(node) : NodeTraits::get_right(node);
  }
  commit->link_left = left;
  commit->node = parent;
  return nullptr;
}

}  // namespace pksm

#endif  // PKSM_CORE_TREE_SEARCH_H_
