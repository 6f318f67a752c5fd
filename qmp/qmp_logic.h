// qmp_logic: the QEMU-free part of pksm's QMP commands (qmp/pksm.json).
//
// pksm-set-parameters is all or nothing: every argument is checked (known
// name, JSON type, range) against a copy of the current parameters before
// anything is requested from the scanner, and the first problem becomes a
// GenericError whose description names the argument, worded like QEMU's own
// QAPI errors. The reply builders fix the field names and types of
// query-pksm and query-pksm-parameters in one place.
#ifndef PKSM_QMP_QMP_LOGIC_H_
#define PKSM_QMP_QMP_LOGIC_H_

#include <string>

#include "pksm/params.h"
#include "qemu-plugin/control.h"
#include "qmp/qmp_value.h"

namespace pksm::qmp {

// The command names, static for the life of the process (QEMU keeps the
// pointers).
inline constexpr const char kQueryPksm[] = "query-pksm";
inline constexpr const char kQueryPksmParameters[] = "query-pksm-parameters";
inline constexpr const char kPksmSetParameters[] = "pksm-set-parameters";

// Checks `args` (the command's "arguments" object) and applies it to a copy
// of `current`. Returns "" and sets *out, or the error message (then *out is
// untouched).
std::string ApplySetParameters(const QmpValue& args, const Params& current, Params* out);

// Rejects any argument at all (the query commands take none).
std::string CheckNoArguments(const QmpValue& args);

// query-pksm-parameters' reply (PksmParameters).
QmpValue ParamsToQmp(const Params& p);

// query-pksm's reply (PksmInfo). `requested` gives run and mode as last set.
QmpValue StatusToQmp(const plugin::StatusSnapshot& s, const Params& requested);

}  // namespace pksm::qmp

#endif  // PKSM_QMP_QMP_LOGIC_H_
