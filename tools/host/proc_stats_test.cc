// proc_stats: the /proc readers pksm-host measures with.
#include "proc_stats.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>

namespace pksm::host {
namespace {

TEST(ProcStats, TaskStatFieldsOfThisProcess) {
  auto nice = TaskNice(getpid());
  ASSERT_TRUE(nice.has_value());
  EXPECT_EQ(*nice, getpriority(PRIO_PROCESS, 0));
  auto before = TaskCpuSeconds(getpid());
  ASSERT_TRUE(before.has_value());
  // Burn ~50 ms of CPU: utime+stime must grow (clock ticks of 10 ms).
  volatile uint64_t x = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  while (std::chrono::steady_clock::now() < end) x = x + 1;
  auto after = TaskCpuSeconds(getpid());
  ASSERT_TRUE(after.has_value());
  EXPECT_GT(*after, *before);
  EXPECT_FALSE(TaskCpuSeconds(-1).has_value());
}

}  // namespace
}  // namespace pksm::host
