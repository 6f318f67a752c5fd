// QmpValue: see qmp_value.h.
#include "qmp/qmp_value.h"

namespace pksm::qmp {

QmpValue QmpValue::Int(int64_t v) {
  QmpValue x;
  x.kind = Kind::kInt;
  x.i = v;
  return x;
}
QmpValue QmpValue::Uint(uint64_t v) {
  QmpValue x;
  x.kind = Kind::kUint;
  x.u = v;
  return x;
}
QmpValue QmpValue::Double(double v) {
  QmpValue x;
  x.kind = Kind::kDouble;
  x.d = v;
  return x;
}
QmpValue QmpValue::Bool(bool v) {
  QmpValue x;
  x.kind = Kind::kBool;
  x.b = v;
  return x;
}
QmpValue QmpValue::Str(std::string v) {
  QmpValue x;
  x.kind = Kind::kString;
  x.s = std::move(v);
  return x;
}
QmpValue QmpValue::List() {
  QmpValue x;
  x.kind = Kind::kList;
  return x;
}
QmpValue QmpValue::Dict() {
  QmpValue x;
  x.kind = Kind::kDict;
  return x;
}

QmpValue& QmpValue::Put(std::string key, QmpValue v) {
  dict.emplace_back(std::move(key), std::move(v));
  return *this;
}

QmpValue& QmpValue::Append(QmpValue v) {
  list.push_back(std::move(v));
  return *this;
}

const QmpValue* QmpValue::Get(std::string_view key) const {
  for (const auto& [k, v] : dict)
    if (k == key) return &v;
  return nullptr;
}

const char* QmpValue::KindName(Kind k) {
  switch (k) {
    case Kind::kNull: return "null";
    case Kind::kInt:
    case Kind::kUint: return "integer";
    case Kind::kDouble: return "number";
    case Kind::kBool: return "boolean";
    case Kind::kString: return "string";
    case Kind::kList: return "array";
    case Kind::kDict: return "object";
  }
  return "?";
}

}  // namespace pksm::qmp
