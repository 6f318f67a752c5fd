// SimMemory: simulated guest RAM under a merging host.
//
// Each page is untouched (no memory, reads zero), private (its own 4 KiB in
// the region's arena), mapped onto a stable page of the simulated store, or
// mapped onto the zero page. Stable pages are refcounted: one reference for
// the engine's handle (dropped by ReleaseStable) and one per mapping, so a
// stable page lives exactly as long as someone can still read it. A write to
// a shared page gives that page alone a private copy (copy-on-write) and, like
// every write, sets its bit in the simulated dirty log.
#include "pksm/sim_memory.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "pksm/hash.h"

namespace pksm {
namespace {

alignas(64) const uint8_t kZeroPage[kPageSize] = {};

struct StablePage {
  uint8_t data[kPageSize];
  uint32_t refs = 0;
  StableHandle handle = 0;
};

// One simulated region: page states, the private-page arena, stable
// mappings and the dirty bitmap.
struct SimRegion {
  size_t pages = 0;
  uint8_t* arena = nullptr;              // pages * kPageSize, calloc'd lazily by the OS
  std::vector<uint8_t> state;            // SimMemory::PageState
  std::vector<StablePage*> stable;       // for kStable pages
  std::vector<uint64_t> dirty;           // written since the last Harvest
  bool any_dirty = false;                // some bit of `dirty` may be set

  explicit SimRegion(size_t n)
      : pages(n),
        arena(static_cast<uint8_t*>(std::calloc(n ? n : 1, kPageSize))),
        state(n, 0),
        stable(n, nullptr),
        dirty((n + 63) / 64, 0) {}
  ~SimRegion() { std::free(arena); }
  SimRegion(const SimRegion&) = delete;
  SimRegion& operator=(const SimRegion&) = delete;

  uint8_t* Private(size_t i) { return arena + i * kPageSize; }
  void MarkDirty(size_t i) {
    dirty[i / 64] |= uint64_t{1} << (i % 64);
    any_dirty = true;
  }
};

using PS = SimMemory::PageState;

}  // namespace

class SimMemory::Impl : public GuestMemory, public DirtyLog, public Merger {
 public:
  Impl() = default;
  ~Impl() override {
    for (StablePage* s : stable_slots_) delete s;
  }

  // --- regions ---
  SimRegion* Find(RegionId id) const {
    if (id < flat_.size()) return flat_[id].get();
    auto it = sparse_.find(id);
    return it == sparse_.end() ? nullptr : it->second.get();
  }
  std::unique_ptr<SimRegion>& Slot(RegionId id) {
    if (id < 65536) {
      if (id >= flat_.size()) flat_.resize(id + 1);
      return flat_[id];
    }
    return sparse_[id];
  }
  SimRegion* Page(PageRef p) const {
    SimRegion* r = Find(p.region);
    return (r && p.index < r->pages) ? r : nullptr;
  }

  void AddRegion(RegionId id, size_t pages) {
    auto& slot = Slot(id);
    if (slot) RemoveRegion(id);
    slot = std::make_unique<SimRegion>(pages);
  }
  void RemoveRegion(RegionId id) {
    auto& slot = Slot(id);
    if (!slot) return;
    for (size_t i = 0; i < slot->pages; ++i) {
      if (slot->state[i] == static_cast<uint8_t>(PS::kPrivate)) --private_pages_;
      DropMapping(slot.get(), i);
    }
    slot.reset();
  }

  // Drops page i's reference to a stable page, if any, leaving its state.
  void DropMapping(SimRegion* r, size_t i) {
    if (r->state[i] == static_cast<uint8_t>(PS::kStable)) {
      Unref(r->stable[i]);
      r->stable[i] = nullptr;
      --stable_mappings_;
    }
  }

  // --- stable store ---
  StableHandle NewStable(const uint8_t* data) {
    auto* s = new StablePage;
    std::memcpy(s->data, data, kPageSize);
    s->refs = 1;  // the engine's handle
    StableHandle h;
    if (!free_slots_.empty()) {
      h = free_slots_.back();
      free_slots_.pop_back();
      stable_slots_[h - 1] = s;
    } else {
      stable_slots_.push_back(s);
      h = stable_slots_.size();
    }
    s->handle = h;
    ++live_stable_;
    return h;
  }
  StablePage* Get(StableHandle h) const {
    return (h >= 1 && h <= stable_slots_.size()) ? stable_slots_[h - 1] : nullptr;
  }
  void Unref(StablePage* s) {
    if (--s->refs > 0) return;
    StableHandle h = s->handle;
    stable_slots_[h - 1] = nullptr;
    free_slots_.push_back(h);
    delete s;
    --live_stable_;
  }

  // --- guest side ---
  void Write(PageRef p, const uint8_t* data) {
    SimRegion* r = Page(p);
    if (!r) return;
    MakePrivate(r, p.index, /*keep_content=*/false);
    std::memcpy(r->Private(p.index), data, kPageSize);
    r->MarkDirty(p.index);
  }
  void WriteByte(PageRef p, size_t offset, uint8_t value) {
    SimRegion* r = Page(p);
    if (!r || offset >= kPageSize) return;
    MakePrivate(r, p.index, /*keep_content=*/true);
    r->Private(p.index)[offset] = value;
    r->MarkDirty(p.index);
  }
  // Gives page i a private copy of what it reads now (copy-on-write).
  void MakePrivate(SimRegion* r, size_t i, bool keep_content) {
    uint8_t* priv = r->Private(i);
    switch (static_cast<PS>(r->state[i])) {
      case PS::kPrivate:
        return;
      case PS::kStable:
        if (keep_content) std::memcpy(priv, r->stable[i]->data, kPageSize);
        DropMapping(r, i);
        break;
      case PS::kUntouched:
      case PS::kZero:
        if (keep_content) std::memset(priv, 0, kPageSize);
        break;
    }
    r->state[i] = static_cast<uint8_t>(PS::kPrivate);
    ++private_pages_;
  }
  void Discard(PageRef p) {
    SimRegion* r = Page(p);
    if (!r) return;
    size_t i = p.index;
    if (r->state[i] == static_cast<uint8_t>(PS::kPrivate)) --private_pages_;
    DropMapping(r, i);
    r->state[i] = static_cast<uint8_t>(PS::kUntouched);
    // The memory is gone: a write reported before the discard is moot.
    r->dirty[i / 64] &= ~(uint64_t{1} << (i % 64));
  }
  const uint8_t* Read(PageRef p) const {
    SimRegion* r = Page(p);
    if (!r) return nullptr;
    switch (static_cast<PS>(r->state[p.index])) {
      case PS::kPrivate: return r->Private(p.index);
      case PS::kStable: return r->stable[p.index]->data;
      default: return kZeroPage;
    }
  }
  PS State(PageRef p) const {
    SimRegion* r = Page(p);
    return r ? static_cast<PS>(r->state[p.index]) : PS::kUntouched;
  }

  // --- GuestMemory ---
  const uint8_t* PageData(PageRef page) override { return Read(page); }

  // --- DirtyLog ---
  std::string_view Name() const override { return "sim"; }
  void Harvest(RegionId region, size_t pages, uint64_t* out) override {
    SimRegion* r = Find(region);
    if (!r || !r->any_dirty) return;
    r->any_dirty = false;
    size_t words = (std::min(pages, r->pages) + 63) / 64;
    uint64_t* d = r->dirty.data();
    for (size_t w = 0; w < words; ++w) {
      if (d[w]) {
        out[w] |= d[w];
        d[w] = 0;
      }
    }
  }

  // --- Merger ---
  bool OverBudget() const { return stable_mappings_ >= budget_; }

  MergeResult CreateStable(PageRef p, StableHandle* out) override {
    SimRegion* r = Page(p);
    if (r && r->state[p.index] == static_cast<uint8_t>(PS::kUntouched)) return MergeResult::kNotPopulated;
    if (!r || r->state[p.index] != static_cast<uint8_t>(PS::kPrivate)) return MergeResult::kChanged;
    if (OverBudget()) return MergeResult::kNoBudget;
    StableHandle h = NewStable(r->Private(p.index));
    StablePage* s = Get(h);
    ++s->refs;
    r->stable[p.index] = s;
    r->state[p.index] = static_cast<uint8_t>(PS::kStable);
    --private_pages_;
    ++stable_mappings_;
    *out = h;
    return MergeResult::kMerged;
  }
  MergeResult MergeInto(StableHandle h, PageRef p) override {
    SimRegion* r = Page(p);
    StablePage* s = Get(h);
    if (r && s && r->state[p.index] == static_cast<uint8_t>(PS::kUntouched)) return MergeResult::kNotPopulated;
    if (!r || !s || r->state[p.index] != static_cast<uint8_t>(PS::kPrivate)) return MergeResult::kChanged;
    if (OverBudget()) return MergeResult::kNoBudget;
    ++compares_;
    if (std::memcmp(r->Private(p.index), s->data, kPageSize) != 0) return MergeResult::kChanged;
    ++s->refs;
    r->stable[p.index] = s;
    r->state[p.index] = static_cast<uint8_t>(PS::kStable);
    --private_pages_;
    ++stable_mappings_;
    return MergeResult::kMerged;
  }
  MergeResult MergeZero(PageRef p) override {
    SimRegion* r = Page(p);
    if (!r) return MergeResult::kChanged;
    PS st = static_cast<PS>(r->state[p.index]);
    if (st == PS::kUntouched) return MergeResult::kNotPopulated;
    if (st != PS::kPrivate) return MergeResult::kChanged;
    ++compares_;
    if (!IsZeroPage(r->Private(p.index))) return MergeResult::kChanged;
    r->state[p.index] = static_cast<uint8_t>(PS::kZero);
    --private_pages_;
    return MergeResult::kMerged;
  }
  bool Unmerge(PageRef p) override {
    SimRegion* r = Page(p);
    if (!r) return true;
    PS st = static_cast<PS>(r->state[p.index]);
    if (st == PS::kStable || st == PS::kZero) MakePrivate(r, p.index, /*keep_content=*/true);
    return true;
  }
  bool IsMerged(PageRef p) override {
    SimRegion* r = Page(p);
    if (!r) return false;
    PS st = static_cast<PS>(r->state[p.index]);
    return st == PS::kStable || st == PS::kZero;
  }
  const uint8_t* StableData(StableHandle h) override {
    StablePage* s = Get(h);
    return s ? s->data : nullptr;
  }
  void ReleaseStable(StableHandle h) override {
    if (StablePage* s = Get(h)) Unref(s);
  }

  std::vector<std::unique_ptr<SimRegion>> flat_;
  std::map<RegionId, std::unique_ptr<SimRegion>> sparse_;
  std::vector<StablePage*> stable_slots_;
  std::vector<StableHandle> free_slots_;
  uint64_t live_stable_ = 0;
  uint64_t private_pages_ = 0;
  uint64_t stable_mappings_ = 0;
  uint64_t budget_ = UINT64_MAX;
  uint64_t compares_ = 0;
};

SimMemory::SimMemory() : impl_(std::make_unique<Impl>()) {}
SimMemory::~SimMemory() = default;

GuestMemory* SimMemory::memory() { return impl_.get(); }
Merger* SimMemory::merger() { return impl_.get(); }
DirtyLog* SimMemory::dirty_log() { return impl_.get(); }

void SimMemory::AddRegion(RegionId id, size_t pages) { impl_->AddRegion(id, pages); }
void SimMemory::RemoveRegion(RegionId id) { impl_->RemoveRegion(id); }
size_t SimMemory::RegionPages(RegionId id) const {
  SimRegion* r = impl_->Find(id);
  return r ? r->pages : 0;
}
void SimMemory::Write(PageRef page, const uint8_t* data) { impl_->Write(page, data); }
void SimMemory::WriteByte(PageRef page, size_t offset, uint8_t value) { impl_->WriteByte(page, offset, value); }
void SimMemory::Discard(PageRef page) { impl_->Discard(page); }
const uint8_t* SimMemory::Read(PageRef page) const { return impl_->Read(page); }
SimMemory::PageState SimMemory::State(PageRef page) const { return impl_->State(page); }
uint64_t SimMemory::HostPages() const { return impl_->private_pages_ + impl_->live_stable_; }
uint64_t SimMemory::StablePagesLive() const { return impl_->live_stable_; }
void SimMemory::SetMergeBudget(uint64_t max_stable_mappings) { impl_->budget_ = max_stable_mappings; }
uint64_t SimMemory::merger_compares() const { return impl_->compares_; }

// --- trace content ---

namespace {

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void FillStream(uint8_t* out, uint64_t state) {
  uint64_t words[kPageSize / 8];
  for (uint64_t& w : words) w = SplitMix(&state);
  words[0] |= 1;  // never all-zero
  std::memcpy(out, words, kPageSize);
}

// Domain tags keep content(seed) and content(seed, index) apart.
constexpr uint64_t kTagSame = 0x5eed5a3e00000001ULL;
constexpr uint64_t kTagUnique = 0x5eed0a1e00000002ULL;

}  // namespace

void FillContent(uint8_t* out, uint64_t seed) {
  uint64_t s = seed ^ kTagSame;
  FillStream(out, SplitMix(&s));
}

void FillContent(uint8_t* out, uint64_t seed, uint64_t index) {
  uint64_t s = seed ^ kTagUnique;
  uint64_t base = SplitMix(&s);
  uint64_t t = base ^ (index * 0xd1b54a32d192ed03ULL);
  FillStream(out, SplitMix(&t) ^ index);
}

}  // namespace pksm
