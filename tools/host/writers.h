// Writers: threads that keep writing to the workload while it is being
// merged, and check that every write landed.
//
// Writer t owns the pages p with p % T == t, so each page has exactly one
// writer and one well-defined last write. A write replaces the whole page
// with a new content key: mostly a sequence-stamped page (kKeyWrite | t |
// seq, unique), sometimes a duplicate content or zeros so written pages can
// merge again. Before overwriting a page the writer checks that it still
// holds the content of that page's previous write; a page that lost a write
// (a merge remapped it over a write, say) shows up there or in the final
// verification. Both count as lost_writes.
#ifndef PKSM_TOOLS_HOST_WRITERS_H_
#define PKSM_TOOLS_HOST_WRITERS_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace pksm::host {

class WriterPool {
 public:
  // `keys` (one per page) is the expected content and is updated by the
  // writers; nobody else may touch it until Join(). `written` (one byte per
  // page) is set for every page a writer wrote.
  WriterPool(uint8_t* base, std::vector<uint64_t>* keys, std::vector<uint8_t>* written,
             uint32_t threads, double seconds, uint32_t interval_us, uint64_t dup_contents,
             uint64_t seed);
  ~WriterPool();  // joins
  WriterPool(const WriterPool&) = delete;
  WriterPool& operator=(const WriterPool&) = delete;

  void Start();
  // True once every writer has finished (its time is up or Stop()); false
  // before Start().
  bool Done() const { return running_.load() == 0; }
  void Stop() { stop_.store(true); }
  void Join();

  uint64_t writes() const { return writes_.load(); }
  // Writes found missing when their page was next written.
  uint64_t lost_writes() const { return lost_.load(); }
  uint64_t first_lost_page() const { return first_lost_page_.load(); }

 private:
  void Run(uint32_t t);

  uint8_t* base_;
  std::vector<uint64_t>* keys_;
  std::vector<uint8_t>* written_;
  uint32_t threads_;
  double seconds_;
  uint32_t interval_us_;
  uint64_t dup_contents_;
  uint64_t seed_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> running_{0};
  std::atomic<uint64_t> writes_{0};
  std::atomic<uint64_t> lost_{0};
  std::atomic<uint64_t> first_lost_page_{~uint64_t{0}};
};

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_WRITERS_H_
