// Stop signals: SIGINT/SIGTERM ask pksm-host to stop at the next check, so
// that every RAII guard (the kernel KSM knobs above all) runs its
// destructor on the normal unwinding path. A second signal, or a crash
// while an emergency hook is armed, runs the hook directly from the signal
// handler (async-signal-safe writes only) and exits at once.
#ifndef PKSM_TOOLS_HOST_STOP_SIGNALS_H_
#define PKSM_TOOLS_HOST_STOP_SIGNALS_H_

#include <stdexcept>

namespace pksm::host {

// Installs the SIGINT/SIGTERM handlers. Call once, early in main().
void InstallStopSignals();

// Nonzero once a stop signal arrived. Polled by every long loop.
const volatile int* StopFlag();
bool StopRequested();

// Thrown by loops that saw StopRequested(); main() reports it and exits 130.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted by a signal") {}
};
// Throws Interrupted if a stop signal arrived.
void ThrowIfStopRequested();

// An async-signal-safe function run from a signal handler on a second stop
// signal or on SIGSEGV/SIGBUS/SIGABRT/SIGFPE while armed. One hook at a
// time; nullptr disarms. Crash signals are handled only while a hook is
// armed, then re-raised with the default action.
using EmergencyHook = void (*)();
void ArmEmergencyHook(EmergencyHook hook);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_STOP_SIGNALS_H_
