#include "stable_pool.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace pksm {

StablePool::~StablePool() {
  if (view_ != nullptr) munmap(view_, bytes_);
  if (fd_ >= 0) close(fd_);
}

bool StablePool::Open(uint64_t max_pages, std::string* error) {
  if (max_pages == 0 || max_pages >= kNone) {
    *error = "invalid pool size " + std::to_string(max_pages) + " pages";
    return false;
  }
  fd_ = memfd_create("pksm-pool", MFD_CLOEXEC);
  if (fd_ < 0) {
    *error = std::string("memfd_create for the stable pool failed: ") + strerror(errno);
    return false;
  }
  max_pages_ = max_pages;
  bytes_ = static_cast<size_t>(max_pages) * 4096;
  // The view covers the whole reservation; only offsets below the file size
  // are ever touched.
  void* v = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
  if (v == MAP_FAILED) {
    *error = std::string("mmap of the stable pool (") + std::to_string(bytes_ >> 20) +
             " MiB of address space) failed: " + strerror(errno);
    return false;
  }
  view_ = static_cast<uint8_t*>(v);
  if (!Grow()) {
    *error = std::string("ftruncate of the stable pool failed: ") + strerror(errno);
    return false;
  }
  return true;
}

// Doubles the file (at least 64 Ki pages, at most max_pages_).
bool StablePool::Grow() {
  uint64_t cap = used_.size();
  if (cap >= max_pages_) return false;
  uint64_t next = std::min<uint64_t>(max_pages_, std::max<uint64_t>(cap * 2, 65536));
  if (ftruncate(fd_, static_cast<off_t>(next * 4096)) != 0) return false;
  used_.resize(next, kFree);
  return true;
}

uint32_t StablePool::Allocate(uint32_t preferred) {
  if (preferred != kNone && preferred >= used_.size() && preferred < max_pages_) Grow();
  if (live_ + retired_ >= used_.size() && !Grow()) return kNone;  // every offset taken
  const uint32_t n = static_cast<uint32_t>(used_.size());
  uint32_t off = kNone;
  if (preferred < n && used_[preferred] == kFree) {
    off = preferred;
  } else {
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t c = (cursor_ + i) % n;
      if (used_[c] == kFree) {
        off = c;
        break;
      }
    }
  }
  if (off == kNone) return kNone;
  used_[off] = kLive;
  ++live_;
  cursor_ = (off + 1) % n;
  return off;
}

void StablePool::Free(uint32_t off) {
  if (!IsAllocated(off)) return;
  fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off) * 4096, 4096);
  used_[off] = kFree;
  --live_;
}

void StablePool::Retire(uint32_t off) {
  if (!IsAllocated(off)) return;
  fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off) * 4096, 4096);
  used_[off] = kRetired;
  --live_;
  ++retired_;
}

void StablePool::Reuse(uint32_t off) {
  if (off < used_.size() && used_[off] == kRetired) {
    // A read fault on the hole may have put a zero page back: punch again.
    fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off) * 4096, 4096);
    used_[off] = kFree;
    --retired_;
  }
}

}  // namespace pksm
