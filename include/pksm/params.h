// Params: every tunable of the engine, with one parser shared by the
// simulator's trace and options, the plugin's -plugin arguments and QMP.
#ifndef PKSM_PARAMS_H_
#define PKSM_PARAMS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pksm {

enum class Mode {
  kPksm,  // work lists, probation, zero page first, dirty-log volatility
  kKsm,   // the classic algorithm: one list, no probation, zero page only
          // after the stable tree, checksum volatility (the baseline)
};

struct Params {
  Mode mode = Mode::kPksm;
  // 0: stop; 1: run; 2: unmerge every page, then stop (run becomes 0).
  uint32_t run = 1;
  // Candidates examined per wake-up of the scanner.
  uint32_t pages_to_scan = 100;
  // Pause between wake-ups (used by the thread that drives the engine).
  uint32_t sleep_millisecs = 20;
  // Probation N: a new page is tried only after N consecutive visits on
  // which it was seen unwritten. 0 = plain PKSM.
  uint32_t delay = 1;
  // Merge all-zero pages onto the shared zero page.
  bool use_zero_pages = true;
  // Most mappings one stable page carries before a duplicate is started.
  uint32_t max_page_sharing = 256;
  // Percentage of candidates taken from the new list (rest: rescan list)
  // while both have work. 1..99; 50 is PKSM's half and half.
  uint32_t new_ratio = 50;

  // Sets one parameter from text, as an operator writes it ("delay", "3").
  // Keys use underscores; dashes are accepted too ("pages-to-scan").
  // Returns "" on success, otherwise an error naming the key and the value
  // (e.g. "invalid value 'abc' for 'delay': expected an integer 0..1000").
  std::string Set(std::string_view key, std::string_view value);

  // Validates every field; "" or an error naming the first bad field.
  std::string Validate() const;

  // One JSON object with every parameter (keys with underscores).
  std::string ToJson() const;

  // The names Set() accepts, in a stable order.
  static const std::vector<std::string_view>& Keys();
};

const char* ToString(Mode m);

}  // namespace pksm

#endif  // PKSM_PARAMS_H_
