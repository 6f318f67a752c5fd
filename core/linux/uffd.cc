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

// UFFDIO_MOVE (Linux 6.8), absent from older uapi headers.
struct UffdioMove {
  uint64_t dst, src, len, mode;
  int64_t move;
};
constexpr unsigned long kUffdioMove = _IOWR(UFFDIO, 0x05, UffdioMove);

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

bool Userfaultfd::Open(std::string* error, bool async) {
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
  uint64_t wanted = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                    UFFD_FEATURE_WP_UNPOPULATED;
  if (async) {
    const uint64_t need = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MOVE | UFFD_FEATURE_WP_UNPOPULATED |
                          UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
    if ((kernel_features_ & need) != need) {
      *error = "the asynchronous dirty log needs userfaultfd features " + FeatureNames(need) +
               "; the kernel offers " + FeatureNames(kernel_features_);
      return false;
    }
    wanted |= UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MOVE;
  }
  async_ = async;
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
  reg.mode = UFFDIO_REGISTER_MODE_WP | (async_ ? UFFDIO_REGISTER_MODE_MISSING : 0);
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

int Userfaultfd::Move(void* dst, void* src, size_t len) {
  // EAGAIN: the source pte changed under the kernel (a write fault on it
  // resolved just then); nothing moved, so it is safe to try again.
  constexpr int kTries = 16;
  int err = EAGAIN;
  for (int t = 0; t < kTries && err == EAGAIN; ++t) {
    UffdioMove m{};
    m.dst = reinterpret_cast<uintptr_t>(dst);
    m.src = reinterpret_cast<uintptr_t>(src);
    m.len = len;
    m.mode = 0;  // wake whoever waits on dst
    if (ioctl(fd_, kUffdioMove, &m) == 0) return m.move == static_cast<int64_t>(len) ? 0 : EAGAIN;
    err = errno;
    if (err == EAGAIN && m.move > 0) return EAGAIN;  // partly moved: the caller must not retry blindly
  }
  return err;
}

int Userfaultfd::Copy(void* dst, const void* src, size_t len) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<uintptr_t>(dst);
  c.src = reinterpret_cast<uintptr_t>(src);
  c.len = len;
  c.mode = 0;
  if (ioctl(fd_, UFFDIO_COPY, &c) != 0) return errno;
  return c.copy == static_cast<int64_t>(len) ? 0 : EAGAIN;
}

int Userfaultfd::ZeroPage(void* addr, size_t len, bool dontwake) {
  uffdio_zeropage z{};
  z.range.start = reinterpret_cast<uintptr_t>(addr);
  z.range.len = len;
  z.mode = dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0;
  if (ioctl(fd_, UFFDIO_ZEROPAGE, &z) != 0) return errno;
  return z.zeropage == static_cast<int64_t>(len) ? 0 : EAGAIN;
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
