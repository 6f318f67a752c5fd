// Loads libpksm-qemu.so outside QEMU, the way QEMU does (dlopen RTLD_NOW),
// and checks the load-time contract: no direct reference to a QEMU symbol
// (the load would fail with "undefined symbol"), only the plugin entry points
// exported, and install refusing with a message that lists the missing QEMU
// symbols instead of crashing.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace {

struct QemuInfo {
  const char* target_name;
  struct {
    int min, cur;
  } version;
  bool system_emulation;
  struct {
    int smp_vcpus, max_vcpus;
  } system;
};

using InstallFn = int (*)(uint64_t, const QemuInfo*, int, char**);

TEST(PluginLoadTest, LoadsWithoutQemuAndRefusesNamingMissingSymbols) {
  void* h = dlopen(PKSM_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << dlerror();
  auto* version = static_cast<int*>(dlsym(h, "qemu_plugin_version"));
  ASSERT_NE(version, nullptr);
  EXPECT_EQ(*version, 1);
  auto install = reinterpret_cast<InstallFn>(dlsym(h, "qemu_plugin_install"));
  ASSERT_NE(install, nullptr);
  // Internal symbols stay hidden.
  EXPECT_EQ(dlsym(h, "_ZN4pksm6plugin7InstallEmPK11qemu_info_tiPPc"), nullptr);

  // Capture stderr while install runs.
  char path[] = "/tmp/pksm-plugin-load-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  QemuInfo info{"x86_64", {1, 1}, true, {1, 1}};
  char arg[] = "delay=1";
  char* argv[] = {arg};
  int rc = install(1, &info, 1, argv);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  unlink(path);

  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("not supported"), std::string::npos) << out;
  EXPECT_NE(out.find("qemu_mutex_lock_iothread_impl"), std::string::npos) << out;
  EXPECT_NE(out.find("qmp_register_command"), std::string::npos) << out;
  EXPECT_NE(out.find("global_dirty_tracking"), std::string::npos) << out;
}

}  // namespace
