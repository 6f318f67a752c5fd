// lifecycle: see lifecycle.h.
#include "qemu-plugin/lifecycle.h"

#include <cstdio>
#include <string>

#include "qemu-plugin/control.h"
#include "qemu-plugin/plugin_args.h"
#include "qemu-plugin/scanner.h"
#include "qmp/qmp_commands.h"

namespace pksm::plugin {

using qemu::api;

namespace {

Control* g_control = nullptr;
Scanner* g_scanner = nullptr;

// Notifier callbacks: main thread, BQL held. No exception may escape.
template <typename Fn>
void Guard(const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pksm: %s: %s\n", what, e.what());
  } catch (...) {
    std::fprintf(stderr, "pksm: %s: unknown exception\n", what);
  }
}

void OnExit(Notifier*, void*) {
  Guard("exit", [] { g_scanner->OnExit(); });
}

void OnMigrationState(Notifier*, void* data) {
  Guard("migration notifier", [&] { g_scanner->OnMigrationStateChange(static_cast<MigrationState*>(data)); });
}

void OnMachineReady(Notifier*, void*) {
  Guard("machine init notifier", [] { g_scanner->OnMachineReady(); });
}

void OnBlockAdded(RAMBlockNotifier*, void*, size_t, size_t) {
  // New blocks are picked up by the scanner's next rescan (their idstr is
  // not even set yet at this point).
}

void OnBlockRemoved(RAMBlockNotifier*, void* host, size_t size, size_t) {
  Guard("RAM block notifier", [&] { g_scanner->OnBlockRemoved(host, size); });
}

void OnBlockResized(RAMBlockNotifier*, void* host, size_t old_size, size_t new_size) {
  Guard("RAM block notifier", [&] { g_scanner->OnBlockResized(host, old_size, new_size); });
}

void FlushEvents() {
  Guard("events", [] { g_scanner->FlushEvents(); });
}

Notifier g_exit_notifier{&OnExit, nullptr, nullptr};
Notifier g_migration_notifier{&OnMigrationState, nullptr, nullptr};
Notifier g_machine_ready_notifier{&OnMachineReady, nullptr, nullptr};
RAMBlockNotifier g_ram_notifier{&OnBlockAdded, &OnBlockRemoved, &OnBlockResized, nullptr, nullptr};

}  // namespace

int Install(qemu_plugin_id_t /*id*/, const qemu_info_t* info, int argc, char** argv) {
  std::vector<std::string> missing = qemu::BindQemuApi();
  if (!missing.empty()) {
    std::string list;
    for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
    std::fprintf(stderr,
                 "pksm: this QEMU is not supported: %zu required QEMU symbol(s) not found: %s "
                 "(pksm needs QEMU 7.2 with its internal symbols exported, as Debian 12 builds it)\n",
                 missing.size(), list.c_str());
    return 1;
  }
  if (info == nullptr || !info->system_emulation) {
    api.error_report("pksm: needs system emulation (qemu-system-*), not user mode");
    return 1;
  }
  std::string err = qemu::CheckQemuVersion();
  if (!err.empty()) {
    api.error_report("pksm: %s", err.c_str());
    return 1;
  }
  PluginConfig config;
  err = ParsePluginArgs(argc, argv, &config);
  if (!err.empty()) {
    api.error_report("%s", err.c_str());
    return 1;
  }
  if (g_scanner != nullptr) {
    api.error_report("pksm: the plugin is loaded twice; load it once");
    return 1;
  }
  // Created once, never destroyed (see lifecycle.h).
  g_control = new Control(config.params);
  auto* scanner = new Scanner(config, g_control);
  err = scanner->Init();
  if (!err.empty()) {
    api.error_report("pksm: %s", err.c_str());
    return 1;
  }
  g_scanner = scanner;
  qmp::RegisterCommands(g_control, &FlushEvents);
  api.ram_block_notifier_add(&g_ram_notifier);
  api.add_migration_state_change_notifier(&g_migration_notifier);
  api.qemu_add_exit_notifier(&g_exit_notifier);
  g_scanner->Start();
  // Rounds wait for this (called at once if the machine is already ready).
  api.qemu_add_machine_init_done_notifier(&g_machine_ready_notifier);
  return 0;
}

}  // namespace pksm::plugin
