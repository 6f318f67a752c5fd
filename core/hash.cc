// Page hashing: the partial hash orders the trees, the checksum judges
// volatility when no dirty log is available (as the kernel's KSM does).
#include "pksm/hash.h"

#include <cstring>

#include <xxhash.h>

#include "pksm/page.h"

namespace pksm {

static_assert(kPartialHashChunks * kPartialHashChunkBytes <= kPageSize);

uint64_t PartialHash(const uint8_t* page) {
  // Gather the sampled chunks and hash them in one call: xxh3 is fastest on
  // one contiguous input, and 256 bytes fit in four cache lines of stack.
  alignas(64) uint8_t sample[kPartialHashBytes];
  constexpr size_t kStride = kPageSize / kPartialHashChunks;
  for (size_t i = 0; i < kPartialHashChunks; ++i)
    std::memcpy(sample + i * kPartialHashChunkBytes, page + i * kStride, kPartialHashChunkBytes);
  return XXH3_64bits(sample, sizeof(sample));
}

uint64_t PageChecksum(const uint8_t* page) { return XXH3_64bits(page, kPageSize); }

bool IsZeroPage(const uint8_t* page) {
  // Most non-zero pages differ in their first words, so check those alone
  // before the whole page.
  uint64_t w[8];
  std::memcpy(w, page, sizeof(w));
  if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  for (size_t off = 64; off < kPageSize; off += 64) {
    std::memcpy(w, page + off, sizeof(w));
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  return true;
}

}  // namespace pksm
