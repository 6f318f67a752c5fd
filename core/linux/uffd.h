// Userfaultfd: one userfaultfd context (RAII) with the few operations the
// merger needs. Features are probed at open time, never assumed: the
// kernel's UFFDIO_API answer is recorded and callers check has_*().
#ifndef PKSM_CORE_LINUX_UFFD_H_
#define PKSM_CORE_LINUX_UFFD_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace pksm {

class Userfaultfd {
 public:
  Userfaultfd() = default;
  ~Userfaultfd();
  Userfaultfd(const Userfaultfd&) = delete;
  Userfaultfd& operator=(const Userfaultfd&) = delete;

  // Opens a non-blocking context (syscall, else /dev/userfaultfd) and
  // enables every wanted feature the kernel offers. False + *error if the
  // kernel refuses userfaultfd or lacks synchronous write protection.
  // With `async`, also WP_ASYNC and MOVE (false + *error naming what is
  // missing): write faults on protected pages are then resolved by the
  // kernel, and ranges are registered in MISSING mode too, so a page moved
  // out (Move) blocks whoever touches it until it is put back.
  bool Open(std::string* error, bool async = false);

  int fd() const { return fd_; }
  uint64_t kernel_features() const { return kernel_features_; }
  bool has_wp_shmem() const;        // WP on shmem (the pool mapping)
  bool has_wp_unpopulated() const;  // WP markers on never-populated ptes
  bool has_wp_async() const;
  bool has_move() const;

  bool async() const { return async_; }

  // Each returns 0 or an errno value.
  int Register(void* addr, size_t len);  // mode WP (and MISSING when async)
  int Unregister(void* addr, size_t len);
  int Protect(void* addr, size_t len);    // set WP, no wake
  int Unprotect(void* addr, size_t len);  // clear WP and wake
  int Wake(void* addr, size_t len);
  // UFFDIO_MOVE of one anonymous range to another (async contexts); tries
  // again while the source pte changes under it (EAGAIN, nothing moved).
  int Move(void* dst, void* src, size_t len);
  // UFFDIO_COPY of `len` bytes from src into missing ptes at dst, waking.
  int Copy(void* dst, const void* src, size_t len);
  // UFFDIO_ZEROPAGE: maps the zero page over missing ptes; wakes unless
  // `dontwake`.
  int ZeroPage(void* addr, size_t len, bool dontwake);

  // A feature mask's names, for reports ("WP_ASYNC MOVE ...").
  static std::string FeatureNames(uint64_t features);

 private:
  int fd_ = -1;
  uint64_t kernel_features_ = 0;
  bool async_ = false;
};

}  // namespace pksm

#endif  // PKSM_CORE_LINUX_UFFD_H_
