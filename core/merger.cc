#include "pksm/merger.h"

namespace pksm {

const char* ToString(MergeResult r) {
  switch (r) {
    case MergeResult::kMerged: return "merged";
    case MergeResult::kChanged: return "changed";
    case MergeResult::kNotPopulated: return "not-populated";
    case MergeResult::kNoBudget: return "no-budget";
    case MergeResult::kError: return "error";
  }
  return "unknown";
}

}  // namespace pksm
