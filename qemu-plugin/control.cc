// Control: see control.h.
#include "qemu-plugin/control.h"

#include <chrono>

namespace pksm::plugin {

Control::Control(const Params& initial) : params_(initial) {
  status_.stats.mode = ToString(initial.mode);
}

Params Control::params() const {
  std::lock_guard<std::mutex> lock(mu_);
  return params_;
}

void Control::RequestParams(const Params& p) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    params_ = p;
    ++params_gen_;
    wake_ = true;
  }
  cv_.notify_all();
}

StatusSnapshot Control::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

bool Control::TakeParams(Params* p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (taken_gen_ == params_gen_) return false;
  taken_gen_ = params_gen_;
  *p = params_;
  return true;
}

bool Control::UnmergeFinished() {
  std::lock_guard<std::mutex> lock(mu_);
  if (taken_gen_ != params_gen_) return false;  // a newer request wins
  if (params_.run != 2) return false;
  params_.run = 0;
  return true;
}

void Control::Publish(StatusSnapshot s) {
  std::lock_guard<std::mutex> lock(mu_);
  status_ = std::move(s);
}

void Control::Sleep(uint32_t ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return wake_ || stop_; });
  wake_ = false;
}

void Control::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void Control::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

bool Control::stop_requested() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

void Control::QueueEvent(PendingEvent e) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

std::vector<PendingEvent> Control::TakeEvents() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PendingEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

}  // namespace pksm::plugin
