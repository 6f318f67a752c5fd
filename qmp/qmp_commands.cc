// qmp_commands: QObject <-> QmpValue at the edges, qmp_logic in between.
#include "qmp/qmp_commands.h"

#include <cstdio>
#include <exception>

#include "qemu-plugin/qemu_api.h"
#include "qmp/qmp_logic.h"

namespace pksm::qmp {

using qemu::api;

namespace {

plugin::Control* g_control = nullptr;
void (*g_flush_events)() = nullptr;

// What a client sent, as a QmpValue (scalars keep what the checks need).
QmpValue FromQObject(const QObject* obj) {
  if (obj == nullptr) return QmpValue();
  switch (qemu::QObjectType(obj)) {
    case qemu::kQTypeQNum: {
      const auto* n = reinterpret_cast<const QNum*>(obj);
      int64_t i = 0;
      uint64_t u = 0;
      if (api.qnum_get_try_int(n, &i)) return QmpValue::Int(i);
      if (api.qnum_get_try_uint(n, &u)) return QmpValue::Uint(u);
      return QmpValue::Double(0);
    }
    case qemu::kQTypeQBool:
      return QmpValue::Bool(api.qbool_get_bool(reinterpret_cast<const QBool*>(obj)));
    case qemu::kQTypeQString:
      return QmpValue::Str("");
    case qemu::kQTypeQList:
      return QmpValue::List();
    case qemu::kQTypeQDict: {
      QmpValue d = QmpValue::Dict();
      const auto* dict = reinterpret_cast<const QDict*>(obj);
      for (const QDictEntry* e = api.qdict_first(dict); e != nullptr; e = api.qdict_next(dict, e))
        d.Put(api.qdict_entry_key(e), FromQObject(api.qdict_entry_value(e)));
      return d;
    }
    default:
      return QmpValue();
  }
}

QObject* ToQObject(const QmpValue& v) {
  switch (v.kind) {
    case QmpValue::Kind::kInt: return qemu::AsQObject(api.qnum_from_int(v.i));
    case QmpValue::Kind::kUint: return qemu::AsQObject(api.qnum_from_uint(v.u));
    case QmpValue::Kind::kDouble: return qemu::AsQObject(api.qnum_from_int(static_cast<int64_t>(v.d)));
    case QmpValue::Kind::kBool: return qemu::AsQObject(api.qbool_from_bool(v.b));
    case QmpValue::Kind::kString: return api.qstring_from_str(v.s.c_str());
    case QmpValue::Kind::kList: {
      QList* l = api.qlist_new();
      for (const QmpValue& x : v.list) api.qlist_append_obj(l, ToQObject(x));
      return qemu::AsQObject(l);
    }
    case QmpValue::Kind::kDict: {
      QDict* d = api.qdict_new();
      for (const auto& [k, x] : v.dict) api.qdict_put_obj(d, k.c_str(), ToQObject(x));
      return qemu::AsQObject(d);
    }
    case QmpValue::Kind::kNull: break;
  }
  return qemu::AsQObject(api.qdict_new());
}

QmpValue Arguments(QDict* args) {
  if (args == nullptr) return QmpValue::Dict();
  return FromQObject(qemu::AsQObject(args));
}

// Every handler body runs inside this: no exception may reach QEMU.
template <typename Fn>
void Guarded(const char* name, Error** errp, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    qemu::SetError(errp, std::string(name) + ": internal error: " + e.what());
  } catch (...) {
    qemu::SetError(errp, std::string(name) + ": internal error");
  }
}

void QueryPksm(QDict* args, QObject** ret, Error** errp) {
  Guarded(kQueryPksm, errp, [&] {
    std::string err = CheckNoArguments(Arguments(args));
    if (!err.empty()) return qemu::SetError(errp, err);
    *ret = ToQObject(StatusToQmp(g_control->status(), g_control->params()));
  });
}

void QueryPksmParameters(QDict* args, QObject** ret, Error** errp) {
  Guarded(kQueryPksmParameters, errp, [&] {
    std::string err = CheckNoArguments(Arguments(args));
    if (!err.empty()) return qemu::SetError(errp, err);
    *ret = ToQObject(ParamsToQmp(g_control->params()));
  });
}

void PksmSetParameters(QDict* args, QObject** ret, Error** errp) {
  Guarded(kPksmSetParameters, errp, [&] {
    const Params current = g_control->params();
    Params next;
    std::string err = ApplySetParameters(Arguments(args), current, &next);
    if (!err.empty()) return qemu::SetError(errp, err);
    g_control->RequestParams(next);
    if (next.run != current.run)
      g_control->QueueEvent(plugin::PendingEvent{"PKSM_RUN_CHANGED", {}}
                                .Int("run", next.run)
                                .Str("reason", "qmp"));
    if (g_flush_events) g_flush_events();
    *ret = qemu::AsQObject(api.qdict_new());
  });
}

}  // namespace

void RegisterCommands(plugin::Control* control, void (*flush_events)()) {
  g_control = control;
  g_flush_events = flush_events;
  api.qmp_register_command(api.qmp_commands, kQueryPksm, &QueryPksm, 0, 0);
  api.qmp_register_command(api.qmp_commands, kQueryPksmParameters, &QueryPksmParameters, 0, 0);
  api.qmp_register_command(api.qmp_commands, kPksmSetParameters, &PksmSetParameters, 0, 0);
}

}  // namespace pksm::qmp
