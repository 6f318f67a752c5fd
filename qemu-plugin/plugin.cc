// The QEMU plugin ABI: the two symbols QEMU looks for, and nothing else.
// Everything lives in lifecycle.cc; no exception crosses into QEMU.
#include <cstdio>
#include <exception>

#include "qemu-plugin/lifecycle.h"

extern "C" {

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info,
                                                               int argc, char** argv) {
  try {
    return pksm::plugin::Install(id, info, argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pksm: plugin install failed: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "pksm: plugin install failed\n");
  }
  return 1;
}

}  // extern "C"
