// qemu_api: every QEMU symbol the plugin uses, in one place.
//
// QEMU 7.2 exports its internals from the executable, so a plugin can call
// them -- but nothing about them is a stable ABI. This header therefore
// (1) declares, extern "C", exactly the functions, data and struct layouts
// the plugin relies on (see shared/qemu-7.2-internals.md for each), and
// (2) binds them at load time with dlsym(RTLD_DEFAULT, ...) into a table of
// pointers instead of linking against them. A QEMU that lacks one of them is
// refused by qemu_plugin_install with a message naming every missing symbol,
// rather than failing inside the dynamic loader ("undefined symbol") or, worse,
// crashing later. Nothing in the plugin may name a QEMU symbol directly: the
// load test (plugin_load_test) dlopens the .so with RTLD_NOW outside QEMU and
// fails if a direct reference slipped in.
//
// Layout facts that have no getter (MemoryRegion flags, the RCU reader record)
// are read at the offsets verified for 7.2 and guarded by CheckQemuVersion().
#ifndef PKSM_QEMU_PLUGIN_QEMU_API_H_
#define PKSM_QEMU_PLUGIN_QEMU_API_H_

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {

// --- opaque QEMU types (only ever handled through pointers) ---
struct RAMBlock;
struct MemoryRegion;
struct RamDiscardManager;
struct QmpCommandList;
struct QObject;
struct QDict;
struct QList;
struct QNum;
struct QBool;
struct QDictEntry;
struct Error;
struct QemuEvent;
struct MigrationState;

typedef uintptr_t ram_addr_t;
typedef uint64_t hwaddr;
typedef uint64_t qemu_plugin_id_t;

// include/qemu/qemu-plugin.h
typedef struct qemu_info_t {
  const char* target_name;
  struct {
    int min;
    int cur;
  } version;
  bool system_emulation;
  union {
    struct {
      int smp_vcpus;
      int max_vcpus;
    } system;
  };
} qemu_info_t;

// include/qemu/notify.h: struct Notifier (24 bytes).
struct Notifier {
  void (*notify)(Notifier* notifier, void* data);
  void* le_next;
  void** le_prev;
};

// include/exec/ramlist.h: struct RAMBlockNotifier (40 bytes).
struct RAMBlockNotifier {
  void (*ram_block_added)(RAMBlockNotifier* n, void* host, size_t size, size_t max_size);
  void (*ram_block_removed)(RAMBlockNotifier* n, void* host, size_t size, size_t max_size);
  void (*ram_block_resized)(RAMBlockNotifier* n, void* host, size_t old_size, size_t new_size);
  void* le_next;
  void** le_prev;
};

// softmmu/physmem.c
// `struct { ram_addr_t start, end; unsigned long dirty[]; }`; the bitmap
// follows the header (read it with DirtyBitmapWords()).
struct DirtyBitmapSnapshot {
  ram_addr_t start;
  ram_addr_t end;
};

// include/qemu/rcu.h: the head of struct rcu_reader_data.
struct QemuRcuReaderHead {
  unsigned long ctr;
  bool waiting;
  unsigned depth;
};

// qapi/qapi-types-common.h
struct VersionTriple {
  int64_t major;
  int64_t minor;
  int64_t micro;
};
struct VersionInfo {
  VersionTriple* qemu;
  char* package;
};

// include/qemu/thread-posix.h
struct QemuThread {
  pthread_t thread;
};

typedef void QmpCommandFunc(QDict* args, QObject** ret, Error** errp);

// The functions. Each line: return type, name, parameter list.
#define PKSM_QEMU_FUNCTIONS(X)                                                                      \
  /* BQL */                                                                                         \
  X(void, qemu_mutex_lock_iothread_impl, (const char* file, int line))                              \
  X(void, qemu_mutex_unlock_iothread, (void))                                                       \
  X(bool, qemu_mutex_iothread_locked, (void))                                                       \
  /* RCU */                                                                                         \
  X(void, rcu_register_thread, (void))                                                              \
  X(void, rcu_unregister_thread, (void))                                                            \
  X(QemuRcuReaderHead*, get_ptr_rcu_reader, (void))                                                 \
  X(void, qemu_event_set, (QemuEvent * ev))                                                         \
  /* threads */                                                                                     \
  X(void, qemu_thread_create, (QemuThread * t, const char* name, void* (*fn)(void*), void* arg,     \
                               int mode))                                                           \
  /* RAM blocks */                                                                                  \
  X(int, qemu_ram_foreach_block, (int (*fn)(RAMBlock*, void*), void* opaque))                      \
  X(const char*, qemu_ram_get_idstr, (RAMBlock * rb))                                               \
  X(void*, qemu_ram_get_host_addr, (RAMBlock * rb))                                                 \
  X(ram_addr_t, qemu_ram_get_offset, (RAMBlock * rb))                                               \
  X(ram_addr_t, qemu_ram_get_used_length, (RAMBlock * rb))                                          \
  X(size_t, qemu_ram_pagesize, (RAMBlock * rb))                                                     \
  X(int, qemu_ram_get_fd, (RAMBlock * rb))                                                          \
  X(bool, qemu_ram_is_shared, (RAMBlock * rb))                                                      \
  X(MemoryRegion*, memory_region_from_host, (void* host, ram_addr_t* offset))                       \
  X(bool, memory_region_is_ram_device, (MemoryRegion * mr))                                         \
  X(uint8_t, memory_region_get_dirty_log_mask, (MemoryRegion * mr))                                 \
  X(RamDiscardManager*, memory_region_get_ram_discard_manager, (MemoryRegion * mr))                 \
  X(const char*, memory_region_name, (const MemoryRegion* mr))                                      \
  X(void, ram_block_notifier_add, (RAMBlockNotifier * n))                                           \
  /* dirty log */                                                                                   \
  X(void, memory_global_dirty_log_start, (unsigned flags))                                          \
  X(void, memory_global_dirty_log_stop, (unsigned flags))                                           \
  X(void, memory_global_dirty_log_sync, (void))                                                     \
  X(DirtyBitmapSnapshot*, memory_region_snapshot_and_clear_dirty,                                   \
    (MemoryRegion * mr, hwaddr addr, hwaddr size, unsigned client))                                 \
  X(void, g_free, (void* p))                                                                        \
  X(bool, kvm_dirty_ring_enabled, (void))                                                           \
  /* migration, run state, discard */                                                              \
  X(void, add_migration_state_change_notifier, (Notifier * n))                                      \
  X(bool, migration_in_setup, (MigrationState * s))                                                 \
  X(bool, migration_has_finished, (MigrationState * s))                                             \
  X(bool, migration_has_failed, (MigrationState * s))                                               \
  X(bool, migration_is_idle, (void))                                                                \
  X(bool, migration_in_bg_snapshot, (void))                                                         \
  X(bool, migration_in_incoming_postcopy, (void))                                                   \
  X(bool, runstate_check, (int state))                                                              \
  X(int, ram_block_discard_disable, (bool state))                                                   \
  X(bool, ram_block_discard_is_disabled, (void))                                                    \
  X(void, qemu_add_exit_notifier, (Notifier * n))                                                   \
  X(void, qemu_add_machine_init_done_notifier, (Notifier * n))                                       \
  /* QMP, QObjects, errors, events */                                                               \
  X(void, qmp_register_command, (QmpCommandList * cmds, const char* name, QmpCommandFunc* fn,       \
                                 int options, unsigned special_features))                           \
  X(void, error_setg_internal, (Error * *errp, const char* src, int line, const char* func,         \
                                const char* fmt, ...))                                              \
  X(void, error_report, (const char* fmt, ...))                                                     \
  X(void, info_report, (const char* fmt, ...))                                                      \
  X(QDict*, qdict_new, (void))                                                                      \
  X(void, qdict_put_int, (QDict * d, const char* key, int64_t value))                               \
  X(void, qdict_put_str, (QDict * d, const char* key, const char* value))                           \
  X(void, qdict_put_bool, (QDict * d, const char* key, bool value))                                 \
  X(void, qdict_put_obj, (QDict * d, const char* key, QObject* value))                              \
  X(const QDictEntry*, qdict_first, (const QDict* d))                                               \
  X(const QDictEntry*, qdict_next, (const QDict* d, const QDictEntry* e))                           \
  X(const char*, qdict_entry_key, (const QDictEntry* e))                                            \
  X(QObject*, qdict_entry_value, (const QDictEntry* e))                                             \
  X(QList*, qlist_new, (void))                                                                      \
  X(void, qlist_append_obj, (QList * l, QObject* value))                                            \
  X(QNum*, qnum_from_int, (int64_t value))                                                          \
  X(QNum*, qnum_from_uint, (uint64_t value))                                                        \
  X(bool, qnum_get_try_int, (const QNum* n, int64_t* value))                                        \
  X(bool, qnum_get_try_uint, (const QNum* n, uint64_t* value))                                      \
  X(bool, qbool_get_bool, (const QBool* b))                                                         \
  X(QBool*, qbool_from_bool, (bool value))                                                          \
  X(QObject*, qstring_from_str, (const char* str))                                                  \
  X(void, qobject_destroy, (QObject * obj))                                                         \
  X(void, qapi_event_emit, (int event, QDict* msg))                                                 \
  X(VersionInfo*, qmp_query_version, (Error * *errp))                                               \
  X(void, qapi_free_VersionInfo, (VersionInfo * info))

// The data symbols.
#define PKSM_QEMU_DATA(X)                                                                           \
  X(unsigned long, rcu_gp_ctr)                                                                      \
  X(QemuEvent, rcu_gp_event)                                                                        \
  X(unsigned int, global_dirty_tracking)                                                            \
  X(bool, kvm_allowed)                                                                              \
  X(QmpCommandList, qmp_commands)

}  // extern "C"

namespace pksm::qemu {

// QEMU constants used by the plugin (include/exec/memory.h, ramlist.h,
// qapi/qmp/qobject.h, qapi/run-state.h, qapi/error.h, qemu/thread.h).
inline constexpr unsigned kGlobalDirtyLimit = 4;
inline constexpr unsigned kDirtyMemoryVga = 0;
inline constexpr uint8_t kDirtyLogMaskVga = 1u << kDirtyMemoryVga;
inline constexpr int kRunStateInmigrate = 1;
inline constexpr int kQTypeQNull = 1;
inline constexpr int kQTypeQNum = 2;
inline constexpr int kQTypeQString = 3;
inline constexpr int kQTypeQDict = 4;
inline constexpr int kQTypeQList = 5;
inline constexpr int kQTypeQBool = 6;
inline constexpr int kQemuThreadDetached = 1;
inline constexpr int kQapiEventUnthrottled = 0;  // QAPI_EVENT_SHUTDOWN's slot

// The bound symbols. Valid after BindQemuApi() returned no missing names.
struct Api {
#define PKSM_QEMU_FN_FIELD(ret, name, params) ret(*name) params = nullptr;
  PKSM_QEMU_FUNCTIONS(PKSM_QEMU_FN_FIELD)
#undef PKSM_QEMU_FN_FIELD
#define PKSM_QEMU_DATA_FIELD(type, name) type* name = nullptr;
  PKSM_QEMU_DATA(PKSM_QEMU_DATA_FIELD)
#undef PKSM_QEMU_DATA_FIELD
};

// The one instance, filled by BindQemuApi().
extern Api api;

// Looks every symbol up with dlsym(RTLD_DEFAULT) and fills `api`. Returns
// the names not found (empty: all bound).
std::vector<std::string> BindQemuApi();

// Checks the QEMU version the layouts above were verified on (7.2.x).
// Returns "" or an explanation.
std::string CheckQemuVersion();

// --- helpers over the bound API ---

// BQL, as the macro qemu_mutex_lock_iothread() would take it.
void LockBql();
void UnlockBql();

// RAII holder of the BQL for a plugin thread that does not hold it yet.
class BqlGuard {
 public:
  BqlGuard() { LockBql(); }
  ~BqlGuard() { UnlockBql(); }
  BqlGuard(const BqlGuard&) = delete;
  BqlGuard& operator=(const BqlGuard&) = delete;
};

// rcu_read_lock()/rcu_read_unlock() are inline in QEMU; these replicate
// them over the exported reader record (include/qemu/rcu.h, 7.2).
void RcuReadLock();
void RcuReadUnlock();

// MemoryRegion fields without a getter (offsets verified on 7.2).
bool MemoryRegionIsRam(const MemoryRegion* mr);
bool MemoryRegionIsReadonly(const MemoryRegion* mr);
bool MemoryRegionIsRomDevice(const MemoryRegion* mr);

// QObject helpers: type tag and the inline unref.
int QObjectType(const QObject* obj);
void QObjectUnref(QObject* obj);
template <typename T>
QObject* AsQObject(T* p) {
  return reinterpret_cast<QObject*>(p);
}

// error_setg() for a GenericError carrying `msg`.
void SetError(Error** errp, const std::string& msg);

}  // namespace pksm::qemu

#endif  // PKSM_QEMU_PLUGIN_QEMU_API_H_
