// mapFile(path) -> ArrayBuffer: the whole file mapped read-only (PROT_READ, MAP_PRIVATE) as an external
// ArrayBuffer, so checkpoint tensors can be zero-copy views; the mapping is unmapped when the buffer is
// garbage-collected, or at once by unmapFile(buffer) (which also detaches it, so stale views read as
// empty instead of faulting). mappedBytes() is what this addon holds mapped now. residentBytes(path) is how
// much of a file is in the page cache now (mincore over a mapping that is never touched).
// Errors carry code (e.g. "ENOMEM"), errno, syscall and path, like Node's fs errors.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "addon/module.h"

namespace clipmem {
namespace {

struct Mapping {
  void* address;
  size_t length;
  bool unmapped;
};

std::mutex registryMutex;
std::unordered_map<void*, Mapping*> live;  // address -> mapping still mapped
size_t liveBytes = 0;

const char* ErrnoCode(int error) {
  switch (error) {
    case ENOMEM:
      return "ENOMEM";
    case ENOENT:
      return "ENOENT";
    case EACCES:
      return "EACCES";
    case EISDIR:
      return "EISDIR";
    case EINVAL:
      return "EINVAL";
    case EMFILE:
      return "EMFILE";
    case ENFILE:
      return "ENFILE";
    case ENODEV:
      return "ENODEV";
    case EOVERFLOW:
      return "EOVERFLOW";
    default:
      return "EIO";
  }
}

Napi::Error SystemError(Napi::Env env, int error, const char* syscall, const std::string& path) {
  std::string message =
      std::string(syscall) + " " + path + ": " + std::strerror(error) + " (errno " + std::to_string(error) + ")";
  Napi::Error result = Napi::Error::New(env, message);
  result.Set("code", Napi::String::New(env, ErrnoCode(error)));
  result.Set("errno", Napi::Number::New(env, error));
  result.Set("syscall", Napi::String::New(env, syscall));
  result.Set("path", Napi::String::New(env, path));
  return result;
}

// Runs when V8 frees the buffer; unmapFile may have unmapped it already.
void FinalizeMapping(Napi::Env, void*, Mapping* mapping) {
  std::lock_guard<std::mutex> lock(registryMutex);
  if (!mapping->unmapped) {
    munmap(mapping->address, mapping->length);
    live.erase(mapping->address);
    liveBytes -= mapping->length;
  }
  delete mapping;
}

// The whole of a regular file mapped read-only (flags: MAP_PRIVATE or MAP_SHARED); length 0 for an empty
// file, which cannot be mapped. Errors name the call and the path.
std::pair<void*, size_t> MapWholeFile(Napi::Env env, const std::string& path, int flags) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SystemError(env, errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int error = errno;
    close(fd);
    throw SystemError(env, error, "fstat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    throw SystemError(env, EINVAL, "mmap", path + " (not a regular file)");
  }
  if (st.st_size == 0) {
    close(fd);
    return {nullptr, 0};
  }
  const size_t length = size_t(st.st_size);
  void* address = mmap(nullptr, length, PROT_READ, flags, fd, 0);
  int error = errno;
  close(fd);  // the mapping keeps the file referenced
  if (address == MAP_FAILED) throw SystemError(env, error, "mmap", path);
  return {address, length};
}

}  // namespace

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "mapFile(path): path must be a string");
  std::string path = info[0].As<Napi::String>();
  const auto [address, length] = MapWholeFile(env, path, MAP_PRIVATE);
  if (length == 0) throw SystemError(env, EINVAL, "mmap", path + " (empty file)");
  Mapping* mapping = new Mapping{address, length, false};
  {
    std::lock_guard<std::mutex> lock(registryMutex);
    live[address] = mapping;
    liveBytes += length;
  }
  try {
    return Napi::ArrayBuffer::New(env, address, length, FinalizeMapping, mapping);
  } catch (...) {
    // No buffer, so no finalizer will ever run (e.g. a runtime that forbids external buffers): undo here.
    std::lock_guard<std::mutex> lock(registryMutex);
    munmap(address, length);
    live.erase(address);
    liveBytes -= length;
    delete mapping;
    throw;
  }
}

Napi::Value UnmapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer())
    throw Napi::TypeError::New(env, "unmapFile(buffer): buffer must be an ArrayBuffer from mapFile");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  void* address = buffer.Data();
  {
    std::lock_guard<std::mutex> lock(registryMutex);
    auto found = live.find(address);
    if (found == live.end()) return Napi::Boolean::New(env, false);
    Mapping* mapping = found->second;
    munmap(mapping->address, mapping->length);
    mapping->unmapped = true;
    liveBytes -= mapping->length;
    live.erase(found);
  }
  buffer.Detach();
  return Napi::Boolean::New(env, true);
}

Napi::Value MappedBytes(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(registryMutex);
  return Napi::Number::New(info.Env(), static_cast<double>(liveBytes));
}

Napi::Value ResidentBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw Napi::TypeError::New(env, "residentBytes(path): path must be a string");
  const std::string path = info[0].As<Napi::String>();
  const auto [address, length] = MapWholeFile(env, path, MAP_SHARED);  // never touched: no page is read in
  if (length == 0) return Napi::Number::New(env, 0);
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  std::string vector((length + page - 1) / page, '\0');
  int result = mincore(address, length, reinterpret_cast<unsigned char*>(&vector[0]));
  int error = errno;
  munmap(address, length);
  if (result != 0) throw SystemError(env, error, "mincore", path);
  size_t resident = 0;
  for (size_t i = 0; i < vector.size(); ++i)
    if (vector[i] & 1) resident += (i + 1 == vector.size()) ? length - i * page : page;
  return Napi::Number::New(env, double(resident));
}

}  // namespace clipmem
