// Stats: what the engine reports. The first group keeps the names of the
// kernel's /sys/kernel/mm/ksm files so operators read them the same way;
// the second is PKSM's own.
#ifndef PKSM_STATS_H_
#define PKSM_STATS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace pksm {

// Probation histogram buckets: cnt 0, 1, ..., kProbationBuckets-2, and
// ">= kProbationBuckets-1".
inline constexpr size_t kProbationBuckets = 8;

struct Stats {
  // --- kernel KSM names ---
  uint64_t pages_shared = 0;     // stable pages in use (each has >= 1 mapping)
  uint64_t pages_sharing = 0;    // mappings of stable pages beyond the first: pages saved
  uint64_t pages_unshared = 0;   // pages in the current unstable tree
  uint64_t pages_volatile = 0;   // tracked pages in none of the above (changing, on probation)
  uint64_t ksm_zero_pages = 0;   // pages merged onto the zero page
  uint64_t full_scans = 0;       // completed full passes
  uint64_t stable_node_chains = 0;  // stable-tree entries holding more than one dup
  uint64_t stable_node_dups = 0;    // stable pages that belong to such chains
  int64_t general_profit = 0;    // bytes saved minus the engine's record overhead

  // --- PKSM ---
  uint64_t rmap_items = 0;       // tracked pages (records)
  uint64_t new_list = 0;
  uint64_t rescan_list = 0;
  uint64_t del_list = 0;
  uint64_t cow_breaks = 0;       // merged pages whose sharing a write broke
  uint64_t pages_scanned = 0;    // candidates examined (all passes)
  uint64_t merges = 0;           // successful merges onto stable pages
  uint64_t merge_failures = 0;   // merges refused (content changed, budget, error)
  uint64_t budget_refusals = 0;  // of which: refused for lack of budget (kNoBudget)
  uint64_t unmerges = 0;         // pages given back a private copy
  uint64_t pages_compared = 0;   // full memcmp calls made by the trees
  uint64_t partial_hash_hits = 0;    // tree steps decided by the partial hash alone
  uint64_t partial_hash_misses = 0;  // tree steps where equal hashes needed memcmp
  uint64_t stable_lookups = 0;       // stable-tree searches
  uint64_t stable_hits = 0;          // ... that found identical content
  uint64_t bytes_hashed = 0;     // bytes fed to xxh3 (partial hashes and checksums)
  std::array<uint64_t, kProbationBuckets> probation{};  // new-list pages by cnt
  std::string dirty_log;         // provider name, or "checksum"
  std::string mode;              // "pksm" or "ksm"

  // One JSON object on one line, every field above.
  std::string ToJson() const;
};

// Per-region figures (QMP's ram-blocks list).
struct RegionStats {
  uint32_t id = 0;
  std::string name;
  uint64_t pages = 0;          // size in pages
  uint64_t pages_tracked = 0;  // pages with a record
  uint64_t pages_merged = 0;   // pages mapping a stable page
  uint64_t zero_pages = 0;     // pages merged onto the zero page
};

}  // namespace pksm

#endif  // PKSM_STATS_H_
