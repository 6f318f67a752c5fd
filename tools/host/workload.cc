#include "workload.h"

#include <algorithm>
#include <cstring>
#include <random>

namespace pksm::host {

namespace {

inline uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr size_t kWords = kHostPageSize / sizeof(uint64_t);

// Word i of FillPage(key): the key, its complement, then a stream seeded by
// the key. Distinct keys give distinct first words, so distinct pages.
template <typename Fn>
inline void ForEachWord(uint64_t key, Fn fn) {
  uint64_t state = key * 0xD1B54A32D192ED03ull ^ 0x5851F42D4C957F2Dull;
  fn(0, key);
  fn(1, ~key);
  for (size_t i = 2; i < kWords; ++i) fn(i, SplitMix(&state));
}

}  // namespace

void FillPage(uint8_t* dst, uint64_t key) {
  if (key == 0) {
    std::memset(dst, 0, kHostPageSize);
    return;
  }
  uint64_t words[kWords];
  ForEachWord(key, [&](size_t i, uint64_t w) { words[i] = w; });
  std::memcpy(dst, words, kHostPageSize);
}

bool PageMatches(const uint8_t* page, uint64_t key) {
  uint64_t words[kWords];
  std::memcpy(words, page, kHostPageSize);
  if (key == 0) {
    uint64_t acc = 0;
    for (size_t i = 0; i < kWords; ++i) acc |= words[i];
    return acc == 0;
  }
  bool ok = true;
  ForEachWord(key, [&](size_t i, uint64_t w) { ok = ok && (words[i] == w); });
  return ok;
}

Workload BuildWorkload(const HostOptions& o, uint32_t max_page_sharing) {
  Workload w;
  const uint64_t pages = o.size_mib * (1024 * 1024 / kHostPageSize);
  w.pages_total = pages;
  // Floors of each share; the remainder goes to the largest share.
  uint64_t n[3] = {pages * o.mix_zero / 100, pages * o.mix_dup / 100, pages * o.mix_unique / 100};
  uint32_t pct[3] = {o.mix_zero, o.mix_dup, o.mix_unique};
  int largest = static_cast<int>(std::max_element(pct, pct + 3) - pct);
  n[largest] += pages - (n[0] + n[1] + n[2]);
  w.zero_pages = n[0];
  w.dup_pages = n[1];
  w.unique_pages = n[2];

  // Blocks: single zero pages, single unique pages, and duplicate runs of
  // run_length pages (the last one shorter). Run b uses content sequence
  // s = b mod nseq; its page j gets content (s * L + j) mod K, so every copy
  // of a sequence lines up page for page, like identical guests.
  const uint64_t L = o.run_length;
  const uint64_t K = o.dup_contents;
  const uint64_t nseq = std::max<uint64_t>(1, (K + L - 1) / L);
  struct Block {
    uint8_t kind;   // 0 zero, 1 dup run, 2 unique
    uint64_t arg;   // run index for dup runs
  };
  std::vector<Block> blocks;
  const uint64_t runs = (w.dup_pages + L - 1) / L;
  blocks.reserve(w.zero_pages + w.unique_pages + runs);
  for (uint64_t i = 0; i < w.zero_pages; ++i) blocks.push_back({0, 0});
  for (uint64_t i = 0; i < w.unique_pages; ++i) blocks.push_back({2, 0});
  for (uint64_t r = 0; r < runs; ++r) blocks.push_back({1, r});
  std::mt19937_64 rng(o.seed);
  for (size_t i = blocks.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng() % i);
    std::swap(blocks[i - 1], blocks[j]);
  }

  w.keys.resize(pages);
  // Content indexes stay below min(K, runs * L).
  std::vector<uint64_t> copies(std::min<uint64_t>(K, runs * L), 0);
  uint64_t p = 0;
  uint64_t dup_left = w.dup_pages;
  for (const Block& b : blocks) {
    if (b.kind == 0) {
      w.keys[p++] = 0;
    } else if (b.kind == 2) {
      w.keys[p] = kKeyUnique | p;
      ++p;
    } else {
      const uint64_t len = std::min(L, dup_left);
      dup_left -= len;
      const uint64_t s = b.arg % nseq;
      for (uint64_t j = 0; j < len; ++j) {
        const uint64_t c = (s * L + j) % K;
        ++copies[c];
        w.keys[p++] = kKeyDup | c;
      }
    }
  }
  w.expected_saved = w.zero_pages;
  w.expected_saved_capped = w.zero_pages;
  const uint64_t mps = std::max<uint32_t>(2, max_page_sharing);
  for (uint64_t k : copies) {
    if (k == 0) continue;
    ++w.dup_contents_used;
    w.expected_saved += k - 1;
    w.expected_saved_capped += k - (k + mps - 1) / mps;
  }
  return w;
}

bool Populate(const Workload& w, uint8_t* base, const volatile int* stop) {
  for (uint64_t i = 0; i < w.pages_total; ++i) {
    if ((i & 4095) == 0 && stop != nullptr && *stop) return false;
    FillPage(base + i * kHostPageSize, w.keys[i]);
  }
  return true;
}

VerifyResult VerifyPages(const std::vector<uint64_t>& keys, const uint8_t* base) {
  VerifyResult r;
  for (uint64_t i = 0; i < keys.size(); ++i) {
    const uint8_t* page = base + i * kHostPageSize;
    if (!PageMatches(page, keys[i])) {
      if (r.mismatches == 0) {
        r.first_page = i;
        r.first_expected = keys[i];
        std::memcpy(&r.first_found, page, sizeof(uint64_t));
      }
      ++r.mismatches;
    }
  }
  return r;
}

}  // namespace pksm::host
