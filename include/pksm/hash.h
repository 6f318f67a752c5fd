// Page hashing and comparison helpers shared by the engine and the mergers.
#ifndef PKSM_HASH_H_
#define PKSM_HASH_H_

#include <cstddef>
#include <cstdint>

namespace pksm {

// Bytes of a page the partial hash reads: kPartialHashChunks chunks of
// kPartialHashChunkBytes spread evenly over the page. Pages that differ only
// outside these bytes have equal partial hashes (a collision the trees
// resolve with memcmp).
inline constexpr size_t kPartialHashChunks = 4;
inline constexpr size_t kPartialHashChunkBytes = 64;
inline constexpr size_t kPartialHashBytes = kPartialHashChunks * kPartialHashChunkBytes;
// Offset of chunk i: i * (kPageSize / kPartialHashChunks).

// xxh3-64 of the sampled bytes of a page (kPartialHashBytes bytes read).
uint64_t PartialHash(const uint8_t* page);

// xxh3-64 of the whole page (the kernel-style checksum).
uint64_t PageChecksum(const uint8_t* page);

// True if all kPageSize bytes are zero (stops at the first non-zero word).
bool IsZeroPage(const uint8_t* page);

}  // namespace pksm

#endif  // PKSM_HASH_H_
