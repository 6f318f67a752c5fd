// lifecycle: what qemu_plugin_install does, and the QEMU notifiers that
// drive the plugin for the rest of the process.
//
// The plugin is never unloaded (it is linked -z nodelete and never calls
// qemu_plugin_uninstall): QEMU keeps pointers to its command names,
// notifiers and handlers. Objects are created once and never destroyed; at
// exit the scanner is only told to stop, since it may be blocked on the BQL
// the exiting main thread holds.
#ifndef PKSM_QEMU_PLUGIN_LIFECYCLE_H_
#define PKSM_QEMU_PLUGIN_LIFECYCLE_H_

#include "qemu-plugin/qemu_api.h"

namespace pksm::plugin {

// Binds the QEMU API, checks the version, parses the arguments, sets up the
// engine and the real-memory layer, registers the QMP commands and the
// notifiers, starts the scanner. Returns 0, or non-zero after printing why
// (QEMU then refuses to start).
int Install(qemu_plugin_id_t id, const qemu_info_t* info, int argc, char** argv);

}  // namespace pksm::plugin

#endif  // PKSM_QEMU_PLUGIN_LIFECYCLE_H_
