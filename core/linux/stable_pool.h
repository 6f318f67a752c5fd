// StablePool: the memfd that holds stable pages, and the allocation of its
// page offsets.
//
// Guest pages are merged by mapping a pool page MAP_PRIVATE over them.
// Neighbouring mappings of one file coalesce into one VMA only when their
// file offsets are consecutive, so allocation takes a preferred offset (the
// one after the offset the previous guest page maps) and otherwise goes on
// from where the last allocation ended (next fit): a run of guest pages
// merged in order gets a run of offsets. Freed offsets are punched out of
// the memfd (their memory is returned at once) and reused -- but only once
// no guest VMA maps the offset any more: a page that broke away from a
// stable page by copy-on-write still sits in a VMA of that offset, and if
// its private copy is ever discarded (MADV_DONTNEED by a balloon) it reads
// the file again. A retired offset reads zero (a hole), like a discarded
// page should; a reused one would show another page's content.
#ifndef PKSM_CORE_LINUX_STABLE_POOL_H_
#define PKSM_CORE_LINUX_STABLE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pksm {

class StablePool {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  StablePool() = default;
  ~StablePool();
  StablePool(const StablePool&) = delete;
  StablePool& operator=(const StablePool&) = delete;

  // Reserves address space for `max_pages` pages; the memfd itself grows in
  // steps as pages are allocated (it is sparse either way).
  bool Open(uint64_t max_pages, std::string* error);

  int fd() const { return fd_; }
  // The pool's own shared, writable view of offset `off`.
  uint8_t* Page(uint32_t off) const { return view_ + static_cast<size_t>(off) * 4096; }

  // A free offset (`preferred` if free), or kNone when the pool is full.
  // Offsets are below capacity(), which may grow with each call.
  uint32_t Allocate(uint32_t preferred);
  uint64_t capacity() const { return used_.size(); }
  // Punches the page out of the memfd and makes the offset reusable.
  void Free(uint32_t off);
  // Punches the page out but keeps the offset reserved (still mapped by some
  // VMA) until Reuse(off).
  void Retire(uint32_t off);
  void Reuse(uint32_t off);
  bool IsAllocated(uint32_t off) const { return off < used_.size() && used_[off] == kLive; }
  uint64_t live() const { return live_; }

 private:
  int fd_ = -1;
  uint8_t* view_ = nullptr;
  size_t bytes_ = 0;  // reserved view
  uint64_t max_pages_ = 0;
  enum : uint8_t { kFree = 0, kLive = 1, kRetired = 2 };
  std::vector<uint8_t> used_;  // per offset: kFree, kLive, kRetired
  uint32_t cursor_ = 0;
  uint64_t live_ = 0;
  uint64_t retired_ = 0;

  bool Grow();
};

}  // namespace pksm

#endif  // PKSM_CORE_LINUX_STABLE_POOL_H_
