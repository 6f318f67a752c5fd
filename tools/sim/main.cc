// pksm-sim: runs a trace (see trace.h) through the PKSM engine over
// simulated guest memory and reports what it merged. See options.cc for the
// command line.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

#include "driver.h"
#include "options.h"

int main(int argc, char** argv) {
  pksm::sim::Options options;
  if (std::string err = pksm::sim::ParseOptions(argc, argv, &options); !err.empty()) {
    std::cerr << "pksm-sim: " << err << "\n" << pksm::sim::Usage();
    return 2;
  }
  if (options.help) {
    std::cout << pksm::sim::Usage();
    return 0;
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (options.trace_path != "-") {
    file.open(options.trace_path);
    if (!file) {
      std::cerr << "pksm-sim: cannot open trace '" << options.trace_path
                << "': " << std::strerror(errno) << "\n";
      return 2;
    }
    in = &file;
  }
  pksm::sim::Driver driver(options.config, std::cout, std::cerr);
  const int status = driver.RunTrace(*in, std::cerr);
  if (status != 0) return status;
  if (options.json) {
    std::cout << driver.StatsJson() << std::endl;
  } else {
    driver.PrintResultTable(std::cout);
  }
  return 0;
}
