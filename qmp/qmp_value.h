// QmpValue: a small JSON-like tree standing between QEMU's QObjects and the
// pksm QMP logic.
//
// The QMP handlers do two things: check the arguments a client sent and
// build the reply. Both are plain logic that deserves unit tests, but
// QObjects only exist inside a running QEMU. So the logic works on QmpValue
// (qmp_logic.h) and qmp_commands.cc converts at the edges.
#ifndef PKSM_QMP_QMP_VALUE_H_
#define PKSM_QMP_QMP_VALUE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pksm::qmp {

struct QmpValue {
  enum class Kind { kNull, kInt, kUint, kDouble, kBool, kString, kList, kDict };

  Kind kind = Kind::kNull;
  int64_t i = 0;     // kInt (any JSON integer that fits int64)
  uint64_t u = 0;    // kUint (integers above INT64_MAX)
  double d = 0;      // kDouble
  bool b = false;    // kBool
  std::string s;     // kString
  std::vector<QmpValue> list;                           // kList
  std::vector<std::pair<std::string, QmpValue>> dict;   // kDict, in insertion order

  static QmpValue Int(int64_t v);
  static QmpValue Uint(uint64_t v);
  static QmpValue Double(double v);
  static QmpValue Bool(bool v);
  static QmpValue Str(std::string v);
  static QmpValue List();
  static QmpValue Dict();

  // kDict: appends a member (keys are unique by construction of callers).
  QmpValue& Put(std::string key, QmpValue v);
  // kList: appends an element.
  QmpValue& Append(QmpValue v);
  // kDict: the member called `key`, or nullptr.
  const QmpValue* Get(std::string_view key) const;

  // QMP's name of the kind, for error messages ("integer", "boolean", ...).
  static const char* KindName(Kind k);
};

}  // namespace pksm::qmp

#endif  // PKSM_QMP_QMP_VALUE_H_
