// Trace: the text format pksm-sim reads, one command per line.
//
//   region R PAGES                  declare region R of PAGES pages (untouched)
//   fill R FIRST COUNT zero         the pages become zero (populated)
//   fill R FIRST COUNT same SEED    the pages get content(SEED)
//   fill R FIRST COUNT unique SEED  page i of the region gets content(SEED, i)
//   write R PAGE SEED               a guest write: the page gets content(SEED)
//   discard R FIRST COUNT           the pages read as zero and are untracked
//   set KEY VALUE                   run, delay, pages_to_scan, max_page_sharing,
//                                   use_zero_pages, new_ratio
//   scan PASSES                     run until PASSES more full passes completed
//   step PAGES                      one engine step with a budget of PAGES
//   stats                           print the statistics as one JSON line
//   verify                          every page reads what the trace gave it
//
// `#` starts a comment; blank lines are ignored. ParseLine checks only what
// one line can tell (command names, argument counts, integers, content
// kinds, parameter names); whether a region exists or a page range fits is
// the Driver's business, since it needs the regions declared so far.
#ifndef PKSM_TOOLS_SIM_TRACE_H_
#define PKSM_TOOLS_SIM_TRACE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace pksm::sim {

// What a fill gives its pages.
enum class ContentKind : uint8_t {
  kZero,    // all-zero bytes (populated, unlike an untouched page)
  kSame,    // content(seed) on every page
  kUnique,  // content(seed, index-in-region)
};

struct Command {
  enum class Op {
    kNone,  // blank line or comment only
    kRegion,
    kFill,
    kWrite,
    kDiscard,
    kSet,
    kScan,
    kStep,
    kStats,
    kVerify,
  };
  Op op = Op::kNone;
  uint64_t region = 0;  // region, fill, write, discard
  uint64_t first = 0;   // fill, discard: first page; write: the page
  uint64_t count = 0;   // region: PAGES; fill, discard: COUNT; scan: PASSES; step: PAGES
  ContentKind kind = ContentKind::kZero;  // fill
  uint64_t seed = 0;    // fill same/unique, write
  std::string key;      // set
  std::string value;    // set
};

// Largest values a trace may use, so a typo cannot ask for terabytes or
// make a scan run for ever. 2^24 pages is a 64 GiB region.
inline constexpr uint64_t kMaxRegionId = 65535;
inline constexpr uint64_t kMaxRegionPages = uint64_t{1} << 24;
inline constexpr uint64_t kMaxScanPasses = 1000000;

// Parses one line (without its newline). Returns "" and fills *out, or a
// message naming the offending token, e.g. "'x1' is not an unsigned integer
// (PAGES of 'region')". On error *out is unspecified.
std::string ParseLine(std::string_view line, Command* out);

// The keys `set` accepts, as one comma-separated string for messages.
std::string_view SetKeysForMessage();

}  // namespace pksm::sim

#endif  // PKSM_TOOLS_SIM_TRACE_H_
