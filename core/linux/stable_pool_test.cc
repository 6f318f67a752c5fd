// StablePool: contiguous allocation, growth of the memfd, retirement.
#include "stable_pool.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <string>

namespace pksm {
namespace {

uint64_t AllocatedBytes(int fd) {
  struct stat st;
  fstat(fd, &st);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(StablePool, RunsAreContiguousAndThePoolGrows) {
  StablePool pool;
  std::string err;
  ASSERT_TRUE(pool.Open(200000, &err)) << err;
  EXPECT_EQ(pool.capacity(), 65536u);
  uint32_t prev = pool.Allocate(StablePool::kNone);
  ASSERT_NE(prev, StablePool::kNone);
  for (int i = 1; i < 70000; ++i) {
    uint32_t off = pool.Allocate(prev + 1);
    ASSERT_EQ(off, prev + 1) << i;
    prev = off;
  }
  EXPECT_EQ(pool.capacity(), 131072u);
  memset(pool.Page(prev), 7, 4096);  // past the first size: backed now
  EXPECT_EQ(pool.Page(prev)[4095], 7);
  EXPECT_EQ(pool.live(), 70000u);
}

TEST(StablePool, FreedPagesReturnMemoryRetiredOffsetsWaitForReuse) {
  StablePool pool;
  std::string err;
  ASSERT_TRUE(pool.Open(2, &err)) << err;
  uint32_t a = pool.Allocate(StablePool::kNone), b = pool.Allocate(StablePool::kNone);
  ASSERT_NE(a, b);
  memset(pool.Page(a), 1, 4096);
  memset(pool.Page(b), 2, 4096);
  EXPECT_GE(AllocatedBytes(pool.fd()), 8192u);
  EXPECT_EQ(pool.Allocate(StablePool::kNone), StablePool::kNone) << "full";
  pool.Retire(a);
  pool.Free(b);
  EXPECT_LT(AllocatedBytes(pool.fd()), 4096u) << "both pages punched out";
  EXPECT_EQ(pool.Page(a)[0], 0) << "a retired offset reads as a hole";
  EXPECT_EQ(pool.Allocate(a), b) << "the retired offset is not handed out";
  EXPECT_EQ(pool.Allocate(StablePool::kNone), StablePool::kNone);
  pool.Reuse(a);
  EXPECT_EQ(pool.Allocate(StablePool::kNone), a);
}

}  // namespace
}  // namespace pksm
