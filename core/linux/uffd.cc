#include "uffd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

// Debian 12's kernel headers are older than the kernels we run on.
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

namespace pksm {
namespace {

int OpenRaw() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) return fd;
  int saved = errno;
  // unprivileged_userfaultfd=0 without CAP_SYS_PTRACE: try the device.
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    saved = errno;
    close(dev);
    if (fd >= 0) return fd;
  }
  errno = saved;
  return -1;
}

}  // namespace

Userfaultfd::~Userfaultfd() {
  if (fd_ >= 0) close(fd_);
}

bool Userfaultfd::Open(std::string* error) {
  // UFFDIO_API may be called once per context: ask a probe context what the
  // kernel offers, then enable what we use on the real one.
  int probe = OpenRaw();
  if (probe < 0) {
    *error = std::string("userfaultfd unavailable: ") + strerror(errno);
    return false;
  }
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = 0;
  if (ioctl(probe, UFFDIO_API, &api) != 0) {
    *error = std::string("UFFDIO_API failed: ") + strerror(errno);
    close(probe);
    return false;
  }
  close(probe);
  kernel_features_ = api.features;
  if (!(kernel_features_ & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
    *error = "userfaultfd has no write-protect support (UFFD_FEATURE_PAGEFAULT_FLAG_WP)";
    return false;
  }
  const uint64_t wanted = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                          UFFD_FEATURE_WP_UNPOPULATED;
  fd_ = OpenRaw();
  if (fd_ < 0) {
    *error = std::string("userfaultfd unavailable: ") + strerror(errno);
    return false;
  }
  api = {};
  api.api = UFFD_API;
  api.features = wanted & kernel_features_;
  if (ioctl(fd_, UFFDIO_API, &api) != 0) {
    *error = std::string("UFFDIO_API (enable features) failed: ") + strerror(errno);
    close(fd_);
    fd_ = -1;
    return false;
  }
  return true;
}

bool Userfaultfd::has_wp_shmem() const {
  return kernel_features_ & UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
}
bool Userfaultfd::has_wp_unpopulated() const {
  return kernel_features_ & UFFD_FEATURE_WP_UNPOPULATED;
}
bool Userfaultfd::has_wp_async() const { return kernel_features_ & UFFD_FEATURE_WP_ASYNC; }
bool Userfaultfd::has_move() const { return kernel_features_ & UFFD_FEATURE_MOVE; }

int Userfaultfd::Register(void* addr, size_t len) {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uintptr_t>(addr);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  return ioctl(fd_, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

int Userfaultfd::Unregister(void* addr, size_t len) {
  uffdio_range range{};
  range.start = reinterpret_cast<uintptr_t>(addr);
  range.len = len;
  return ioctl(fd_, UFFDIO_UNREGISTER, &range) == 0 ? 0 : errno;
}

int Userfaultfd::Protect(void* addr, size_t len) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uintptr_t>(addr);
  wp.range.len = len;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  return ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : errno;
}

int Userfaultfd::Unprotect(void* addr, size_t len) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uintptr_t>(addr);
  wp.range.len = len;
  wp.mode = 0;  // clear protection and wake the range
  return ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : errno;
}

int Userfaultfd::Wake(void* addr, size_t len) {
  uffdio_range range{};
  range.start = reinterpret_cast<uintptr_t>(addr);
  range.len = len;
  return ioctl(fd_, UFFDIO_WAKE, &range) == 0 ? 0 : errno;
}

std::string Userfaultfd::FeatureNames(uint64_t f) {
  static const struct { uint64_t bit; const char* name; } kNames[] = {
      {UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"},
      {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
      {UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"},
      {UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"},
      {UFFD_FEATURE_MOVE, "MOVE"},
  };
  std::string out;
  for (const auto& n : kNames) {
    if (f & n.bit) {
      if (!out.empty()) out += ' ';
      out += n.name;
    }
  }
  return out;
}

}  // namespace pksm
