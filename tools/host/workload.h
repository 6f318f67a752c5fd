// Workload: the pages pksm-host deduplicates, described by one 64-bit
// content key per page.
//
// A key names a whole 4 KiB content: key 0 is the all-zero page, every
// other key expands (FillPage) to a deterministic page that starts with the
// key itself and is different for every key. The workload is laid out once
// from the options (kinds, duplicate runs, a seeded shuffle) and the same
// layout is written into the pksm phase's memory and into the kernel phase's
// fresh mapping, so both deduplicate exactly the same content. Verification
// compares each page with FillPage(key it was last given).
#ifndef PKSM_TOOLS_HOST_WORKLOAD_H_
#define PKSM_TOOLS_HOST_WORKLOAD_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "options.h"

namespace pksm::host {

inline constexpr size_t kHostPageSize = 4096;

// Key spaces (top 4 bits). Zero is key 0.
inline constexpr uint64_t kKeyDup = uint64_t{1} << 60;     // | content index
inline constexpr uint64_t kKeyUnique = uint64_t{2} << 60;  // | page index
inline constexpr uint64_t kKeyWrite = uint64_t{3} << 60;   // | writer << 48 | sequence

// Writes the content named by `key` into the 4 KiB at `dst`.
void FillPage(uint8_t* dst, uint64_t key);
// True if the 4 KiB at `page` are exactly FillPage(key).
bool PageMatches(const uint8_t* page, uint64_t key);

struct Workload {
  uint64_t pages_total = 0;
  uint64_t zero_pages = 0;
  uint64_t dup_pages = 0;
  uint64_t unique_pages = 0;
  uint64_t dup_contents_used = 0;  // distinct duplicate contents present
  // Pages the content makes saveable: zero pages + sum over duplicate
  // contents with k copies of (k - 1).
  uint64_t expected_saved = 0;
  // The same, when one shared page carries at most max_page_sharing
  // mappings (k - ceil(k / max_page_sharing) per content): the most either
  // KSM or pksm can save with that limit.
  uint64_t expected_saved_capped = 0;
  // Content key of each page.
  std::vector<uint64_t> keys;
};

// Lays out the workload the options describe. Deterministic in the options.
Workload BuildWorkload(const HostOptions& o, uint32_t max_page_sharing = 256);

// Writes every page of `w` into `base` (pages_total * 4 KiB), touching every
// page (zero pages are written with zeros so they are backed by memory).
// `stop` is polled; returns false if it became true before the end.
bool Populate(const Workload& w, uint8_t* base, const volatile int* stop);

// Counts pages of `base` that differ from keys[i]. Reports the first few
// mismatches through `report` (page index, key expected, first word found).
struct VerifyResult {
  uint64_t mismatches = 0;
  uint64_t first_page = 0;
  uint64_t first_expected = 0;
  uint64_t first_found = 0;
};
VerifyResult VerifyPages(const std::vector<uint64_t>& keys, const uint8_t* base);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_WORKLOAD_H_
