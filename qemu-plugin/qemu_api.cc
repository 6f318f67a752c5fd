// qemu_api: binding of the QEMU symbols and the small inline helpers QEMU
// does not export (rcu_read_lock, qobject_unref, MemoryRegion flags).
#include "qemu-plugin/qemu_api.h"

#include <dlfcn.h>

#include <atomic>
#include <cstring>

namespace pksm::qemu {

Api api;

std::vector<std::string> BindQemuApi() {
  std::vector<std::string> missing;
  Api bound;
#define PKSM_QEMU_BIND_FN(ret, name, params)                                   \
  bound.name = reinterpret_cast<ret(*) params>(dlsym(RTLD_DEFAULT, #name));    \
  if (bound.name == nullptr) missing.emplace_back(#name);
  PKSM_QEMU_FUNCTIONS(PKSM_QEMU_BIND_FN)
#undef PKSM_QEMU_BIND_FN
#define PKSM_QEMU_BIND_DATA(type, name)                                        \
  bound.name = static_cast<type*>(dlsym(RTLD_DEFAULT, #name));                 \
  if (bound.name == nullptr) missing.emplace_back(#name);
  PKSM_QEMU_DATA(PKSM_QEMU_BIND_DATA)
#undef PKSM_QEMU_BIND_DATA
  if (missing.empty()) api = bound;
  return missing;
}

std::string CheckQemuVersion() {
  VersionInfo* v = api.qmp_query_version(nullptr);
  if (v == nullptr || v->qemu == nullptr) return "cannot read the QEMU version";
  int64_t major = v->qemu->major, minor = v->qemu->minor, micro = v->qemu->micro;
  api.qapi_free_VersionInfo(v);
  if (major == 7 && minor == 2) return "";
  return "QEMU " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(micro) +
         " is not supported (pksm relies on QEMU 7.2 internals)";
}

void LockBql() { api.qemu_mutex_lock_iothread_impl(__FILE__, __LINE__); }
void UnlockBql() { api.qemu_mutex_unlock_iothread(); }

// include/qemu/rcu.h (7.2):
//   lock:   if (r->depth++ > 0) return; r->ctr = rcu_gp_ctr; smp_mb();
//   unlock: if (--r->depth > 0) return; store_release(r->ctr, 0); smp_mb();
//           if (r->waiting) { r->waiting = false; qemu_event_set(&rcu_gp_event); }
void RcuReadLock() {
  QemuRcuReaderHead* r = api.get_ptr_rcu_reader();
  if (r->depth++ > 0) return;
  unsigned long ctr = __atomic_load_n(api.rcu_gp_ctr, __ATOMIC_RELAXED);
  __atomic_store_n(&r->ctr, ctr, __ATOMIC_RELAXED);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void RcuReadUnlock() {
  QemuRcuReaderHead* r = api.get_ptr_rcu_reader();
  if (--r->depth > 0) return;
  __atomic_store_n(&r->ctr, 0UL, __ATOMIC_RELEASE);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (__atomic_load_n(&r->waiting, __ATOMIC_RELAXED)) {
    __atomic_store_n(&r->waiting, false, __ATOMIC_RELAXED);
    api.qemu_event_set(api.rcu_gp_event);
  }
}

// struct MemoryRegion (include/exec/memory.h, 7.2): after the 40-byte
// Object header come bool romd_mode (+40), ram (+41), subpage (+42),
// readonly (+43), nonvolatile (+44), rom_device (+45).
namespace {
bool MemoryRegionByte(const MemoryRegion* mr, size_t offset) {
  uint8_t b = 0;
  std::memcpy(&b, reinterpret_cast<const uint8_t*>(mr) + offset, 1);
  return b != 0;
}
}  // namespace

bool MemoryRegionIsRam(const MemoryRegion* mr) { return MemoryRegionByte(mr, 41); }
bool MemoryRegionIsReadonly(const MemoryRegion* mr) { return MemoryRegionByte(mr, 43); }
bool MemoryRegionIsRomDevice(const MemoryRegion* mr) { return MemoryRegionByte(mr, 45); }

// struct QObject { QType type; size_t refcnt; } (not atomic: BQL rules).
struct QObjectHead {
  int type;
  size_t refcnt;
};

int QObjectType(const QObject* obj) { return reinterpret_cast<const QObjectHead*>(obj)->type; }

void QObjectUnref(QObject* obj) {
  if (obj == nullptr) return;
  auto* head = reinterpret_cast<QObjectHead*>(obj);
  if (--head->refcnt == 0) api.qobject_destroy(obj);
}

void SetError(Error** errp, const std::string& msg) {
  api.error_setg_internal(errp, __FILE__, __LINE__, "pksm", "%s", msg.c_str());
}

}  // namespace pksm::qemu
