// clip-mem as the parent of last resort of the processes it traces. A process whose parent exits is
// handed to the nearest ancestor marked a child subreaper (PR_SET_CHILD_SUBREAPER), else to init, which
// reaps it at once: its exit status is then lost. With clip-mem marked, an orphan of a traced run stays
// clip-mem's child, its exit status readable from /proc/PID/stat while it is a zombie, and clip-mem
// reaps it after reading it (reapChild), only for the pids it adopted.
#include <sys/prctl.h>
#include <sys/wait.h>

#include "addon/module.h"

namespace clipmem {

// becomeChildSubreaper(): true when this process is now a child subreaper.
Napi::Value BecomeChildSubreaper(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
}

// reapChild(pid): collects a child that has ended (never waits); true when it was collected.
Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "reapChild(pid: number)");
  siginfo_t status = {};
  int done = waitid(P_PID, id_t(info[0].As<Napi::Number>().Int32Value()), &status, WEXITED | WNOHANG);
  return Napi::Boolean::New(env, done == 0 && status.si_pid != 0);
}

}  // namespace clipmem
