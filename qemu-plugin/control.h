// Control: the only meeting point of the scanner thread and QEMU's main
// thread (QMP handlers, notifiers).
//
// The engine is single-threaded and owned by the scanner thread, and QMP
// handlers run in the main loop with the BQL held: they must answer at once
// and never wait for a scan step. So the two sides never share the engine.
// The scanner publishes a complete StatusSnapshot after every round; the
// handlers read the latest one. Parameter changes go the other way as a
// "desired parameters" value with a generation number; the scanner applies
// the newest one at the start of its next round (and is woken from its sleep
// to do so). Events are queued here and emitted by whoever next holds the
// BQL. Everything is guarded by one mutex that is held only for copies.
#ifndef PKSM_QEMU_PLUGIN_CONTROL_H_
#define PKSM_QEMU_PLUGIN_CONTROL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "pksm/params.h"
#include "pksm/stats.h"

namespace pksm::plugin {

// One scanned RAM block as QMP's ram-blocks reports it.
struct BlockReport {
  std::string name;
  uint64_t size = 0;  // bytes
  uint64_t pages_sharing = 0;
  uint64_t zero_pages = 0;
};

// A RAM block left alone, and why.
struct SkippedReport {
  std::string name;
  std::string reason;
};

// Everything query-pksm reports, as of the end of the scanner's last round.
struct StatusSnapshot {
  Stats stats;
  std::string dirty_log = "none";
  bool paused = false;
  std::string paused_reason;
  uint64_t vmas_used = 0;
  uint64_t vma_budget = 0;
  uint64_t scanner_cpu_ns = 0;
  std::vector<BlockReport> blocks;
  std::vector<SkippedReport> skipped;
};

// A QMP event waiting to be emitted: name and flat data members.
struct PendingEvent {
  struct Field {
    std::string key;
    bool is_string = false;
    int64_t number = 0;
    std::string text;
  };
  std::string name;
  std::vector<Field> data;

  PendingEvent& Int(std::string key, int64_t v) {
    data.push_back({std::move(key), false, v, {}});
    return *this;
  }
  PendingEvent& Str(std::string key, std::string v) {
    data.push_back({std::move(key), true, 0, std::move(v)});
    return *this;
  }
};

class Control {
 public:
  explicit Control(const Params& initial);

  // --- QMP side (any thread) ---

  // The parameters as last requested (what query-pksm-parameters shows; the
  // engine applies them at its next round).
  Params params() const;
  // Requests new parameters and wakes the scanner.
  void RequestParams(const Params& p);
  StatusSnapshot status() const;

  // --- scanner side ---

  // True and *p = the newest requested parameters if they changed since the
  // last call.
  bool TakeParams(Params* p);
  // The engine finished `run: 2` and set run to 0. Unless a newer request
  // is pending, the requested parameters follow (run becomes 0). Returns
  // whether they did.
  bool UnmergeFinished();
  void Publish(StatusSnapshot s);
  // Sleeps up to `ms` milliseconds; returns early on RequestParams(),
  // Wake() or RequestStop().
  void Sleep(uint32_t ms);
  void Wake();

  // --- lifecycle ---
  void RequestStop();
  bool stop_requested() const;

  // --- events ---
  void QueueEvent(PendingEvent e);
  std::vector<PendingEvent> TakeEvents();

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Params params_;
  uint64_t params_gen_ = 0;
  uint64_t taken_gen_ = 0;
  StatusSnapshot status_;
  bool stop_ = false;
  bool wake_ = false;
  std::deque<PendingEvent> events_;
};

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_CONTROL_H_
