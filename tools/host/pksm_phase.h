// Pksm phase: the workload deduplicated by the pksm engine over this
// process's own memory (ProcessMemory: userfaultfd write protection, a pool
// memfd, remaps), driven from the calling thread the way the plugin's
// scanner thread drives it: Step(pages_to_scan), sleep, repeat.
#ifndef PKSM_TOOLS_HOST_PKSM_PHASE_H_
#define PKSM_TOOLS_HOST_PKSM_PHASE_H_

#include "options.h"
#include "phase.h"
#include "workload.h"

namespace pksm::host {

// Throws std::runtime_error on failure, Interrupted on a stop signal.
PhaseResult RunPksmPhase(const HostOptions& o, const Workload& w);

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_PKSM_PHASE_H_
