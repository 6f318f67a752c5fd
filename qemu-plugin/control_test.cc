#include "qemu-plugin/control.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace pksm::plugin {
namespace {

TEST(ControlTest, RequestedParamsAreTakenOnce) {
  Params p;
  Control c(p);
  Params got;
  EXPECT_FALSE(c.TakeParams(&got));
  p.delay = 5;
  c.RequestParams(p);
  EXPECT_EQ(c.params().delay, 5u);  // visible to QMP at once
  ASSERT_TRUE(c.TakeParams(&got));
  EXPECT_EQ(got.delay, 5u);
  EXPECT_FALSE(c.TakeParams(&got));
}

TEST(ControlTest, UnmergeFinishedSetsRunToZeroUnlessNewerRequest) {
  Params p;
  Control c(p);
  Params got;
  p.run = 2;
  c.RequestParams(p);
  ASSERT_TRUE(c.TakeParams(&got));
  EXPECT_TRUE(c.UnmergeFinished());
  EXPECT_EQ(c.params().run, 0u);

  p.run = 2;
  c.RequestParams(p);
  ASSERT_TRUE(c.TakeParams(&got));
  p.run = 1;
  c.RequestParams(p);  // operator changed their mind meanwhile
  EXPECT_FALSE(c.UnmergeFinished());
  EXPECT_EQ(c.params().run, 1u);
}

TEST(ControlTest, EventsAreDeliveredInOrderOnce) {
  Control c{Params()};
  c.QueueEvent(PendingEvent{"A", {}}.Int("run", 1));
  c.QueueEvent(PendingEvent{"B", {}}.Str("reason", "migration"));
  auto ev = c.TakeEvents();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].name, "A");
  EXPECT_EQ(ev[0].data[0].number, 1);
  EXPECT_EQ(ev[1].data[0].text, "migration");
  EXPECT_TRUE(c.TakeEvents().empty());
}

TEST(ControlTest, SleepEndsOnRequestAndStop) {
  Control c{Params()};
  std::atomic<int> woke{0};
  std::thread scanner([&] {
    c.Sleep(60000);
    woke = 1;
    // A RequestParams the main thread sent after the first wake-up may end
    // one more sleep early; only a stop ends this loop.
    while (!c.stop_requested()) c.Sleep(60000);
    woke = 2;
  });
  Params p;
  p.delay = 3;
  while (woke.load() == 0) {
    c.RequestParams(p);
    std::this_thread::yield();
  }
  while (woke.load() == 1) {
    c.RequestStop();
    std::this_thread::yield();
  }
  scanner.join();
  EXPECT_TRUE(c.stop_requested());
}

// A QMP thread and a scanner thread hammer the interface (for TSan).
TEST(ControlTest, ConcurrentPublishAndQuery) {
  Control c{Params()};
  std::atomic<bool> done{false};
  std::thread scanner([&] {
    for (uint64_t i = 1; i <= 2000; ++i) {
      Params got;
      c.TakeParams(&got);
      StatusSnapshot s;
      s.stats.pages_sharing = i;
      s.blocks.push_back({"pc.ram", i, i, i});
      c.Publish(s);
    }
    done = true;
  });
  uint64_t last = 0;
  Params p;
  while (!done.load()) {
    StatusSnapshot s = c.status();
    EXPECT_GE(s.stats.pages_sharing, last);  // snapshots never go back
    last = s.stats.pages_sharing;
    if (!s.blocks.empty()) {
      EXPECT_EQ(s.blocks[0].size, s.stats.pages_sharing);  // consistent
    }
    p.delay = static_cast<uint32_t>(last % 1000);
    c.RequestParams(p);
  }
  scanner.join();
  EXPECT_EQ(c.status().stats.pages_sharing, 2000u);
}

}  // namespace
}  // namespace pksm::plugin
