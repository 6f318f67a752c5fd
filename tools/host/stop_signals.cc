#include "stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace pksm::host {

namespace {

volatile int g_stop = 0;
std::atomic<EmergencyHook> g_hook{nullptr};
struct sigaction g_old_crash[4];
constexpr int kCrashSignals[4] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE};

void RunHook() {
  EmergencyHook h = g_hook.exchange(nullptr);
  if (h != nullptr) h();
}

void OnStop(int sig) {
  if (g_stop) {
    RunHook();
    static const char kMsg[] = "pksm-host: second signal, restored what could be restored, exiting\n";
    ssize_t n = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)n;
    _exit(128 + sig);
  }
  g_stop = 1;
}

void OnCrash(int sig) {
  RunHook();
  // Back to the previous disposition (the default, or a sanitizer's) and
  // let the signal do what it would have done.
  for (int i = 0; i < 4; ++i) {
    if (kCrashSignals[i] == sig) sigaction(sig, &g_old_crash[i], nullptr);
  }
  raise(sig);
}

}  // namespace

void InstallStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: sleeps wake up and loops see the flag
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

const volatile int* StopFlag() { return &g_stop; }

bool StopRequested() { return g_stop != 0; }

void ThrowIfStopRequested() {
  if (g_stop) throw Interrupted();
}

void ArmEmergencyHook(EmergencyHook hook) {
  static bool crash_handlers_installed = false;
  g_hook.store(hook);
  if (hook != nullptr && !crash_handlers_installed) {
    crash_handlers_installed = true;
    struct sigaction sa {};
    sa.sa_handler = OnCrash;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    for (int i = 0; i < 4; ++i) sigaction(kCrashSignals[i], &sa, &g_old_crash[i]);
  } else if (hook == nullptr && crash_handlers_installed) {
    crash_handlers_installed = false;
    for (int i = 0; i < 4; ++i) sigaction(kCrashSignals[i], &g_old_crash[i], nullptr);
  }
}

}  // namespace pksm::host
