#include "proc_stats.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace pksm::host {

namespace {

constexpr uint64_t kPmPresent = uint64_t{1} << 63;
constexpr uint64_t kPmFile = uint64_t{1} << 61;
constexpr uint64_t kPmPfnMask = (uint64_t{1} << 55) - 1;

// Closes an fd on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// The frame number of the kernel's shared zero page, learnt by reading a
// fresh anonymous page (a read fault maps the zero page) and looking it up.
std::optional<uint64_t> ZeroPageFrame(int pagemap_fd) {
  void* p = mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return std::nullopt;
  volatile const uint8_t* v = static_cast<const uint8_t*>(p);
  (void)v[0];
  uint64_t entry = 0;
  off_t off = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / 4096 * 8);
  ssize_t n = pread(pagemap_fd, &entry, sizeof(entry), off);
  munmap(p, 4096);
  if (n != sizeof(entry) || !(entry & kPmPresent)) return std::nullopt;
  return entry & kPmPfnMask;
}

}  // namespace

std::optional<std::string> ReadSmallFile(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::optional<MemRollup> ReadMemRollup(std::string* err) {
  auto text = ReadSmallFile("/proc/self/smaps_rollup");
  if (!text) {
    *err = Errno("reading /proc/self/smaps_rollup");
    return std::nullopt;
  }
  MemRollup r;
  bool rss = false, pss = false;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    std::string line = text->substr(pos, nl - pos);
    pos = nl + 1;
    auto value = [&](const char* key, uint64_t* out) {
      size_t klen = std::strlen(key);
      if (line.compare(0, klen, key) != 0) return false;
      *out = std::strtoull(line.c_str() + klen, nullptr, 10);
      return true;
    };
    rss = value("Rss:", &r.rss_kib) || rss;
    pss = value("Pss:", &r.pss_kib) || pss;
    value("Anonymous:", &r.anonymous_kib);
  }
  if (!rss || !pss) {
    *err = "no Rss/Pss lines in /proc/self/smaps_rollup";
    return std::nullopt;
  }
  return r;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

namespace {

// Fields 3.. of /proc/<pid>/stat (field k, 1-based, is at [k - 3]). The
// command name is in parentheses and may hold spaces: fields start after
// the last ')'.
std::optional<std::vector<std::string>> StatFields(pid_t pid) {
  auto text = ReadSmallFile("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return std::nullopt;
  size_t rp = text->rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::vector<std::string> fields;
  std::istringstream in(text->substr(rp + 1));
  for (std::string f; in >> f;) fields.push_back(f);
  return fields;
}

}  // namespace

std::optional<double> TaskCpuSeconds(pid_t pid) {
  auto f = StatFields(pid);
  if (!f || f->size() < 15 - 2) return std::nullopt;
  const uint64_t utime = std::strtoull((*f)[14 - 3].c_str(), nullptr, 10);
  const uint64_t stime = std::strtoull((*f)[15 - 3].c_str(), nullptr, 10);
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(utime + stime) / hz;
}

std::optional<int> TaskNice(pid_t pid) {
  auto f = StatFields(pid);
  if (!f || f->size() < 19 - 2) return std::nullopt;
  return static_cast<int>(std::strtol((*f)[19 - 3].c_str(), nullptr, 10));
}

bool SetThreadNice(int nice) {
  return setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice) == 0;
}

int ThreadNice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
}

int BaseNice() {
  static const int base = ThreadNice();
  return base;
}

std::optional<pid_t> FindKsmd() {
  DIR* d = opendir("/proc");
  if (d == nullptr) return std::nullopt;
  std::optional<pid_t> found;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    auto comm = ReadSmallFile(std::string("/proc/") + e->d_name + "/comm");
    if (comm && (*comm == "ksmd\n" || *comm == "ksmd")) {
      found = static_cast<pid_t>(pid);
      break;
    }
  }
  closedir(d);
  return found;
}

std::optional<VmaCount> CountVmas(uintptr_t begin, uintptr_t end, std::string* err) {
  FILE* f = std::fopen("/proc/self/maps", "re");
  if (f == nullptr) {
    *err = Errno("opening /proc/self/maps");
    return std::nullopt;
  }
  VmaCount c;
  char line[4096];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    size_t len = std::strlen(line);
    bool whole = len > 0 && line[len - 1] == '\n';
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
      ++c.total;
      if (lo < end && hi > begin) ++c.in_range;
    }
    // Skip the rest of an overlong line (a long path).
    while (!whole && std::fgets(line, sizeof(line), f) != nullptr) {
      len = std::strlen(line);
      whole = len > 0 && line[len - 1] == '\n';
    }
  }
  std::fclose(f);
  return c;
}

std::optional<PagemapSummary> ScanPagemap(const void* base, uint64_t pages, std::string* err) {
  Fd fd(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    *err = Errno("opening /proc/self/pagemap");
    return std::nullopt;
  }
  auto zero_pfn = ZeroPageFrame(fd.get());
  PagemapSummary s;
  s.pages = pages;
  // Frame numbers, with bit 63 marking file frames (pfns use 55 bits).
  constexpr uint64_t kFileTag = uint64_t{1} << 63;
  std::vector<uint64_t> frames;
  frames.reserve(pages);
  constexpr uint64_t kChunk = 4096;
  std::vector<uint64_t> buf(kChunk);
  const uint64_t first = reinterpret_cast<uintptr_t>(base) / 4096;
  bool any_pfn = false;
  for (uint64_t done = 0; done < pages;) {
    uint64_t n = std::min(kChunk, pages - done);
    off_t off = static_cast<off_t>((first + done) * 8);
    ssize_t got = pread(fd.get(), buf.data(), n * 8, off);
    if (got != static_cast<ssize_t>(n * 8)) {
      *err = Errno("reading /proc/self/pagemap");
      return std::nullopt;
    }
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t e = buf[i];
      // Not present: no frame. (Bit 62 may be set for userfaultfd
      // write-protect markers; there is no swap in these runs.)
      if (!(e & kPmPresent)) {
        ++s.not_present;
        continue;
      }
      ++s.present;
      const uint64_t pfn = e & kPmPfnMask;
      any_pfn = any_pfn || pfn != 0;
      if (zero_pfn && pfn == *zero_pfn) {
        ++s.zero_frame;
        continue;
      }
      if (e & kPmFile) {
        ++s.file_present;
        frames.push_back(pfn | kFileTag);
      } else {
        frames.push_back(pfn);
      }
    }
    done += n;
  }
  if (s.present > 0 && !any_pfn) {
    *err = "/proc/self/pagemap hides frame numbers (needs CAP_SYS_ADMIN)";
    return std::nullopt;
  }
  std::sort(frames.begin(), frames.end());
  for (size_t i = 0; i < frames.size();) {
    size_t j = i + 1;
    while (j < frames.size() && frames[j] == frames[i]) ++j;
    if (frames[i] & kFileTag) {
      ++s.distinct_file;
    } else {
      ++s.distinct_anon;
    }
    if (j - i > 1) {
      ++s.shared_frames;
      s.sharing_pages += j - i - 1;
    }
    i = j;
  }
  return s;
}

uint64_t MemfdPages(const std::string& name) {
  const std::string want = "/memfd:" + name + " (deleted)";
  uint64_t pages = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256];
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (want != target) continue;
    struct stat st {};
    if (fstat(std::atoi(e->d_name), &st) == 0) pages += static_cast<uint64_t>(st.st_blocks) * 512 / 4096;
  }
  closedir(d);
  return pages;
}

std::vector<MergeableProcess> FindOtherMergeable() {
  std::vector<MergeableProcess> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  const pid_t self = getpid();
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    FILE* f = std::fopen((std::string("/proc/") + e->d_name + "/smaps").c_str(), "re");
    if (f == nullptr) continue;
    uint64_t size_kib = 0, total = 0;
    char line[512];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::strncmp(line, "Size:", 5) == 0) {
        size_kib = std::strtoull(line + 5, nullptr, 10);
      } else if (std::strncmp(line, "VmFlags:", 8) == 0) {
        if (std::strstr(line, " mg") != nullptr) total += size_kib;
      }
      // Long lines (paths) are read in pieces; only line starts matter.
    }
    std::fclose(f);
    if (total > 0) {
      auto comm = ReadSmallFile(std::string("/proc/") + e->d_name + "/comm").value_or("?");
      while (!comm.empty() && comm.back() == '\n') comm.pop_back();
      out.push_back({static_cast<pid_t>(pid), comm, total});
    }
  }
  closedir(d);
  return out;
}

std::vector<std::pair<std::string, uint64_t>> ReadKsmStat() {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto text = ReadSmallFile("/proc/self/ksm_stat");
  if (!text) return out;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    if (nl == std::string::npos) nl = text->size();
    std::string line = text->substr(pos, nl - pos);
    pos = nl + 1;
    size_t sp = line.find(' ');
    if (sp == std::string::npos) continue;
    const char* v = line.c_str() + sp + 1;
    if (*v < '0' || *v > '9') continue;
    out.emplace_back(line.substr(0, sp), std::strtoull(v, nullptr, 10));
  }
  return out;
}

}  // namespace pksm::host
