// Capability: what can be allocated right now (native/probe/allocator_probe.h), for the native-probe report.
#include <cerrno>
#include <cstring>
#include <string>

#include "addon/module.h"
#include "probe/allocator_probe.h"

namespace {

// "ENOMEM" for ENOMEM. strerrorname_np is glibc >= 2.32; clusters run older ones, and the probe's
// failures are almost always one of these.
std::string errnoName(int error) {
#if __GLIBC_PREREQ(2, 32)
  if (const char* name = strerrorname_np(error)) return name;
#endif
  switch (error) {
    case ENOMEM:
      return "ENOMEM";
    case EINVAL:
      return "EINVAL";
    case EAGAIN:
      return "EAGAIN";
    case EPERM:
      return "EPERM";
    case EACCES:
      return "EACCES";
    case EOVERFLOW:
      return "EOVERFLOW";
    default:
      return "errno " + std::to_string(error);
  }
}

void setErrno(Napi::Env env, Napi::Object target, int error) {
  if (error == 0) return;
  target.Set("errno", Napi::String::New(env, errnoName(error)));
  target.Set("error", Napi::String::New(env, std::strerror(error)));
}

Napi::Object searchToObject(Napi::Env env, const clipmem::SearchResult& result) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("largest", Napi::Number::New(env, static_cast<double>(result.largest)));
  object.Set("failedAt", Napi::Number::New(env, static_cast<double>(result.failedAt)));
  setErrno(env, object, result.failedErrno);
  return object;
}

}  // namespace

namespace clipmem {

// Runs the four searches. Address space first: a failed malloc makes glibc retry in a new arena, which
// reserves 64 MiB of address space for good, so the malloc search goes last.
Napi::Value ProbeAllocator(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("reservation", searchToObject(env, clipmem::probeLargestReservation()));
  clipmem::ReservableResult reservable = clipmem::probeReservableAddressSpace();
  Napi::Object total = Napi::Object::New(env);
  total.Set("total", Napi::Number::New(env, static_cast<double>(reservable.total)));
  total.Set("blocks", Napi::Number::New(env, static_cast<double>(reservable.blocks)));
  setErrno(env, total, reservable.stopErrno);
  result.Set("reservable", total);
  result.Set("readWriteMapping", searchToObject(env, clipmem::probeLargestReadWriteMapping()));
  result.Set("malloc", searchToObject(env, clipmem::probeLargestMalloc()));
  result.Set("pageSize", Napi::Number::New(env, static_cast<double>(clipmem::pageSize())));
  return result;
}

}  // namespace clipmem
