// Options: pksm-sim's command line.
//
//   pksm-sim [options] TRACE|-
//
// Parsed separately from main() so tests can check every accepted and
// rejected option in-process.
#ifndef PKSM_TOOLS_SIM_OPTIONS_H_
#define PKSM_TOOLS_SIM_OPTIONS_H_

#include <string>
#include <string_view>

#include "driver.h"

namespace pksm::sim {

struct Options {
  SimConfig config;
  bool json = false;        // --json: final statistics JSON as the last line
  bool help = false;        // --help: print Usage() and exit 0
  std::string trace_path;   // "-" reads standard input
};

// Parses argv[1..argc-1]. Returns "" or a message naming the bad option or
// value (e.g. "--delay: invalid value 'x' ..."). On success the parameters in
// out->config.params are valid.
std::string ParseOptions(int argc, const char* const* argv, Options* out);

std::string_view Usage();

}  // namespace pksm::sim

#endif  // PKSM_TOOLS_SIM_OPTIONS_H_
