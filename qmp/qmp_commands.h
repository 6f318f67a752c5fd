// qmp_commands: pksm's commands in QEMU's own QMP monitor.
//
// QEMU 7.2 compiles its QAPI schema in, so the commands of qmp/pksm.json are
// registered by hand (qmp_register_command) at plugin install. Handlers run
// in the main loop with the BQL held and never wait for the scanner: they
// read the Control's latest snapshot and queue parameter requests. The
// dispatcher does no schema checking; qmp_logic does it.
#ifndef PKSM_QMP_QMP_COMMANDS_H_
#define PKSM_QMP_QMP_COMMANDS_H_

#include "qemu-plugin/control.h"

namespace pksm::qmp {

// Registers query-pksm, query-pksm-parameters and pksm-set-parameters.
// `control` lives for the rest of the process; `flush_events` emits queued
// events (called with the BQL held).
void RegisterCommands(plugin::Control* control, void (*flush_events)());

}  // namespace pksm::qmp

#endif  // PKSM_QMP_QMP_COMMANDS_H_
