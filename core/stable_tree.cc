#include "stable_tree.h"

namespace pksm {

StableTree::~StableTree() {
  tree_.clear_and_dispose([](StableEntry* e) {
    e->dups.clear_and_dispose([](StableDup* d) {
      d->mappings.clear();
      delete d;
    });
    delete e;
  });
}

StableEntry* StableTree::Find(uint64_t hash, const uint8_t* data) {
  Tree::insert_commit_data commit;
  return TreeDescend(
      tree_, [&](const StableEntry& e) { return CompareKey(hash, data, e.partial_hash, e.data, counters_); },
      &commit);
}

StableDup* StableTree::AddDup(StableHandle handle, const uint8_t* data, uint64_t hash) {
  Tree::insert_commit_data commit;
  StableEntry* e = TreeDescend(
      tree_, [&](const StableEntry& n) { return CompareKey(hash, data, n.partial_hash, n.data, counters_); },
      &commit);
  if (!e) {
    e = new StableEntry;
    e->partial_hash = hash;
    e->data = data;
    tree_.insert_unique_commit(*e, commit);
    ++entries_;
  }
  auto* d = new StableDup;
  d->entry = e;
  d->handle = handle;
  size_t before = e->dups.size();
  e->dups.push_back(*d);
  ++dups_;
  if (before == 1) {
    ++chains_;
    chain_dups_ += 2;
  } else if (before > 1) {
    ++chain_dups_;
  }
  return d;
}

}  // namespace pksm
