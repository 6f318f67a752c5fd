#include "writers.h"

#include <time.h>

#include <chrono>
#include <random>

#include "proc_stats.h"
#include "stop_signals.h"
#include "workload.h"

namespace pksm::host {

WriterPool::WriterPool(uint8_t* base, std::vector<uint64_t>* keys, std::vector<uint8_t>* written,
                       uint32_t threads, double seconds, uint32_t interval_us, uint64_t dup_contents,
                       uint64_t seed)
    : base_(base),
      keys_(keys),
      written_(written),
      threads_(threads),
      seconds_(seconds),
      interval_us_(interval_us),
      dup_contents_(dup_contents),
      seed_(seed),
      running_(threads) {}

WriterPool::~WriterPool() {
  Stop();
  Join();
}

void WriterPool::Start() {
  for (uint32_t t = 0; t < threads_; ++t) workers_.emplace_back([this, t] { Run(t); });
}

void WriterPool::Join() {
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  workers_.clear();
}

void WriterPool::Run(uint32_t t) {
  SetThreadNice(BaseNice());  // the same in both phases
  const uint64_t pages = keys_->size();
  const uint64_t mine = t < pages ? (pages - t + threads_ - 1) / threads_ : 0;
  std::mt19937_64 rng(seed_ * 1000003 + t);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds_);
  uint64_t seq = 0;
  uint64_t local_writes = 0;
  while (mine > 0 && !stop_.load(std::memory_order_relaxed) && !StopRequested()) {
    if ((local_writes & 63) == 0 && std::chrono::steady_clock::now() >= deadline) break;
    const uint64_t p = t + threads_ * (rng() % mine);
    uint8_t* page = base_ + p * kHostPageSize;
    uint64_t& key = (*keys_)[p];
    if (!PageMatches(page, key)) {
      uint64_t expected_none = ~uint64_t{0};
      first_lost_page_.compare_exchange_strong(expected_none, p);
      lost_.fetch_add(1);
    }
    const uint64_t r = rng() % 16;
    uint64_t next;
    if (r == 0) {
      next = 0;  // zeros: mergeable onto the zero page again
    } else if (r < 5) {
      next = kKeyDup | (rng() % dup_contents_);  // a duplicate content again
    } else {
      next = kKeyWrite | (uint64_t{t} << 48) | (++seq & ((uint64_t{1} << 48) - 1));
    }
    FillPage(page, next);
    key = next;
    (*written_)[p] = 1;
    ++local_writes;
    writes_.fetch_add(1, std::memory_order_relaxed);
    if (interval_us_ > 0) {
      timespec ts{static_cast<time_t>(interval_us_ / 1000000), static_cast<long>(interval_us_ % 1000000) * 1000};
      nanosleep(&ts, nullptr);
    }
  }
  running_.fetch_sub(1);
}

}  // namespace pksm::host
