// Reads an allocation record (native/record/record.h) into plain JS objects, live or after the process
// ended, and sets the tracker's phase label when this process itself runs under the tracker.
#include "record/record.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "addon/module.h"
#include "record/ring.h"

namespace clipmem {
namespace {

const char* const kFnNames[] = CLIPMEM_FN_NAMES;
const char* const kDeviceFnNames[] = CLIPMEM_DEVICE_FN_NAMES;
const int kDeviceFnRuntime[] = CLIPMEM_DEVICE_FN_RUNTIME;

const char* fn_name(uint32_t fn) {
  if (fn < CLIPMEM_FN_COUNT) return kFnNames[fn];
  if (fn >= CLIPMEM_DEVICE_FN_BASE && fn < CLIPMEM_DEVICE_FN_BASE + CLIPMEM_DEVICE_FN_COUNT)
    return kDeviceFnNames[fn - CLIPMEM_DEVICE_FN_BASE];
  return "unknown";
}

template <typename T>
T snapshot(const T& field) {
  return __atomic_load_n(&field, __ATOMIC_ACQUIRE);
}

Napi::Value bytes(Napi::Env env, int64_t value) { return Napi::Number::New(env, double(value)); }
// -1 (unknown) as null, the one spelling of unknown.
Napi::Value known_bytes(Napi::Env env, int64_t value) { return value < 0 ? env.Null() : bytes(env, value); }

std::string bounded(const char* text, size_t size) { return std::string(text, strnlen(text, size)); }

std::string hex(uint64_t value) {
  char text[32];
  snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

std::string demangle(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  char* readable = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !readable) return name;
  std::string result(readable);
  free(readable);
  return result;
}

// Return addresses with their module and offset (for addr2line) and, where the tracker found one, the symbol.
Napi::Array ReadStack(Napi::Env env, const uint64_t* stack, const uint16_t* frame_module,
                      const char (*frame_symbol)[CLIPMEM_SYMBOL_BYTES], uint32_t depth, const ClipmemModule* modules,
                      uint32_t modules_used) {
  if (depth > CLIPMEM_STACK_DEPTH) depth = CLIPMEM_STACK_DEPTH;
  Napi::Array frames = Napi::Array::New(env, depth);
  for (uint32_t i = 0; i < depth; ++i) {
    Napi::Object frame = Napi::Object::New(env);
    frame.Set("address", hex(stack[i]));
    uint16_t index = frame_module[i];
    if (index != CLIPMEM_NO_MODULE && index < modules_used && modules[index].base) {
      frame.Set("module", bounded(modules[index].path, sizeof modules[index].path));
      frame.Set("offset", hex(stack[i] - modules[index].base));
    }
    std::string symbol = frame_symbol ? bounded(frame_symbol[i], CLIPMEM_SYMBOL_BYTES) : "";
    if (!symbol.empty()) frame.Set("symbol", demangle(symbol));
    frames.Set(i, frame);
  }
  return frames;
}

Napi::Object ReadFailure(Napi::Env env, const ClipmemFailure& f, const ClipmemModule* modules, uint32_t modules_used) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("sequence", Napi::Number::New(env, double(f.sequence)));
  out.Set("fn", fn_name(f.fn));
  // An overflowing nmemb*size is reported as the product it asked for (a double: not exact, but honest).
  out.Set("size",
          Napi::Number::New(
              env, (f.flags & CLIPMEM_FAILURE_SIZE_OVERFLOW) ? double(f.nmemb) * double(f.elem_size) : double(f.size)));
  out.Set("sizeOverflow", Napi::Boolean::New(env, f.flags & CLIPMEM_FAILURE_SIZE_OVERFLOW));
  out.Set("injected", Napi::Boolean::New(env, f.flags & CLIPMEM_FAILURE_INJECTED));
  out.Set("nmemb", bytes(env, int64_t(f.nmemb)));
  out.Set("elemSize", bytes(env, int64_t(f.elem_size)));
  out.Set("alignment", bytes(env, int64_t(f.alignment)));
  out.Set("oldSize", bytes(env, int64_t(f.old_size)));
  out.Set("address", hex(f.address));
  out.Set("prot", f.prot);
  out.Set("flags", f.map_flags);
  out.Set("fd", f.fd);
  out.Set("fdPath", bounded(f.fd_path, sizeof f.fd_path));
  out.Set("offset", bytes(env, f.offset));
  out.Set("errno", f.error);
  out.Set("vmSize", bytes(env, f.vm_size));
  out.Set("vmData", bytes(env, f.vm_data));
  out.Set("rss", bytes(env, f.rss));
  out.Set("mapCount", bytes(env, f.map_count));
  out.Set("maxMapCount", bytes(env, f.max_map_count));
  out.Set("commitLimit", bytes(env, f.commit_limit));
  out.Set("committedAs", bytes(env, f.committed_as));
  out.Set("memTotal", bytes(env, f.mem_total));
  out.Set("overcommitMemory", f.overcommit_memory);
  out.Set("tid", f.tid);
  out.Set("timeNs", Napi::Number::New(env, double(f.time_ns)));
  out.Set("heapCurrent", bytes(env, f.heap_current));
  out.Set("anonMapped", bytes(env, f.anon_mapped));
  out.Set("fileMapped", bytes(env, f.file_mapped));
  out.Set("phase", bounded(f.phase, sizeof f.phase));
  out.Set("stack", ReadStack(env, f.stack, f.frame_module, f.frame_symbol, f.stack_depth, modules, modules_used));
  out.Set("gpu", env.Null());
  if (f.fn >= CLIPMEM_DEVICE_FN_BASE && f.fn < CLIPMEM_DEVICE_FN_BASE + CLIPMEM_DEVICE_FN_COUNT) {
    Napi::Object gpu = Napi::Object::New(env);
    gpu.Set("api", kDeviceFnRuntime[f.fn - CLIPMEM_DEVICE_FN_BASE] ? "runtime" : "driver");
    gpu.Set("status", f.cuda_error);
    gpu.Set("device", f.device < 0 ? env.Null() : Napi::Number::New(env, f.device));
    gpu.Set("totalBytes", known_bytes(env, f.device_total));
    gpu.Set("freeBytes", known_bytes(env, f.device_free));
    gpu.Set("processBytes", known_bytes(env, f.device_process_used));
    gpu.Set("trackedBytes", bytes(env, f.device_tracked));
    gpu.Set("otherProcessCount", f.gpu_process_count);
    uint32_t kept = f.gpu_process_count < CLIPMEM_GPU_PROCESS_SLOTS ? f.gpu_process_count : CLIPMEM_GPU_PROCESS_SLOTS;
    Napi::Array others = Napi::Array::New(env, kept);
    for (uint32_t i = 0; i < kept; ++i) {
      Napi::Object other = Napi::Object::New(env);
      other.Set("pid", f.gpu_processes[i].pid);
      other.Set("bytes", known_bytes(env, f.gpu_processes[i].used));
      other.Set("name", bounded(f.gpu_processes[i].name, sizeof f.gpu_processes[i].name));
      others.Set(i, other);
    }
    gpu.Set("otherProcesses", others);
    out.Set("gpu", gpu);
  }
  // The Python stack: null when the process is not CPython (or a version the tracker cannot read).
  if (f.py_version == 0) {
    out.Set("python", env.Null());
  } else {
    Napi::Object python = Napi::Object::New(env);
    python.Set("version", std::to_string(f.py_version >> 24) + "." + std::to_string((f.py_version >> 16) & 0xff));
    const char* status = f.py_status == CLIPMEM_PY_CAPTURED     ? "captured"
                         : f.py_status == CLIPMEM_PY_NO_THREAD  ? "no-thread"
                         : f.py_status == CLIPMEM_PY_UNREADABLE ? "unreadable"
                                                                : "none";
    python.Set("status", status);
    // Frames left out, between the innermost CLIPMEM_PY_INNER and the outermost ones.
    python.Set("omitted", Napi::Number::New(env, double(f.py_more)));
    python.Set("omittedAfter", f.py_more ? Napi::Value(Napi::Number::New(env, CLIPMEM_PY_INNER)) : env.Null());
    uint32_t py_depth = f.py_depth < CLIPMEM_PY_DEPTH ? f.py_depth : CLIPMEM_PY_DEPTH;
    Napi::Array py_frames = Napi::Array::New(env, py_depth);
    for (uint32_t i = 0; i < py_depth; ++i) {
      const ClipmemPyFrame& p = f.py_frames[i];
      Napi::Object frame = Napi::Object::New(env);
      frame.Set("file", bounded(p.file, sizeof p.file));
      frame.Set("line", p.line);
      frame.Set("function", bounded(p.function, sizeof p.function));
      py_frames.Set(i, frame);
    }
    python.Set("frames", py_frames);
    out.Set("python", python);
  }
  return out;
}

// The sampled live-heap profile: every site claimed, the latest complete peak snapshot, the failure snapshots.
Napi::Object ReadHeapProfile(Napi::Env env, const ClipmemRecordHeader* h, const ClipmemModule* modules,
                             uint32_t modules_used) {
  const char* base = reinterpret_cast<const char*>(h);
  const auto* sites = reinterpret_cast<const ClipmemHeapSite*>(base + h->heap_sites_offset);
  Napi::Object out = Napi::Object::New(env);
  out.Set("sampleMean", bytes(env, int64_t(h->heap_sample_mean)));
  out.Set("samplesTotal", Napi::Number::New(env, double(snapshot(h->heap_samples_total))));
  out.Set("dropped", snapshot(h->heap_dropped));
  out.Set("liveBytes", bytes(env, snapshot(h->heap_sampled_live)));
  out.Set("peakBytes", bytes(env, snapshot(h->heap_sampled_peak)));
  Napi::Array list = Napi::Array::New(env);
  auto read_site = [&](uint32_t i) {
    const ClipmemHeapSite& site = sites[i];
    if (!snapshot(site.hash)) return;
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("index", i);
    entry.Set("fn", site.fn < CLIPMEM_FN_COUNT ? kFnNames[site.fn] : "unknown");
    entry.Set("liveBytes", bytes(env, snapshot(site.live_bytes)));
    entry.Set("liveBlocks", bytes(env, snapshot(site.live_blocks)));
    entry.Set("liveVariance", Napi::Number::New(env, site.live_variance));
    entry.Set("allocBytes", bytes(env, snapshot(site.alloc_bytes)));
    entry.Set("phaseIndex", site.phase);
    entry.Set("stack", ReadStack(env, site.stack, site.frame_module, nullptr, site.stack_depth, modules, modules_used));
    list.Set(list.Length(), entry);
  };
  // Sites are claimed in order and the last entry gathers the rest: only those are read (an unwritten page
  // of the file reads as zeros, but enters the page cache).
  constexpr uint32_t kRest = CLIPMEM_HEAP_SITE_CAPACITY - 1;
  uint32_t used = snapshot(h->heap_sites_used);
  for (uint32_t i = 0; i < used && i < kRest; ++i) read_site(i);
  read_site(kRest);
  out.Set("sites", list);
  auto read_snapshot = [&](const ClipmemHeapSnapshot& s) {
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("timeNs", Napi::Number::New(env, double(s.time_ns)));
    entry.Set("failure", Napi::Number::New(env, double(s.failure)));
    entry.Set("totalBytes", bytes(env, s.total_bytes));
    entry.Set("heapCurrent", bytes(env, s.heap_current));
    entry.Set("anonMapped", bytes(env, s.anon_mapped));
    entry.Set("phaseIndex", s.phase_index);
    uint32_t count = s.count < CLIPMEM_HEAP_SNAPSHOT_SITES ? s.count : CLIPMEM_HEAP_SNAPSHOT_SITES;
    Napi::Array top = Napi::Array::New(env, count);
    for (uint32_t i = 0; i < count; ++i) {
      Napi::Object site = Napi::Object::New(env);
      site.Set("site", s.site[i]);
      site.Set("liveBytes", bytes(env, s.live_bytes[i]));
      site.Set("liveVariance", Napi::Number::New(env, s.live_variance[i]));
      top.Set(i, site);
    }
    entry.Set("sites", top);
    return entry;
  };
  Napi::Value peak = env.Null();
  const auto* peaks = reinterpret_cast<const ClipmemHeapSnapshot*>(base + h->heap_snapshots_offset);
  for_each_ring_entry(peaks, CLIPMEM_HEAP_SNAPSHOT_CAPACITY, snapshot(h->heap_snapshots_total),
                      [&](const ClipmemHeapSnapshot& s, uint64_t) { peak = read_snapshot(s); });
  out.Set("peak", peak);
  Napi::Array at_failures = Napi::Array::New(env);
  const auto* failed = reinterpret_cast<const ClipmemHeapSnapshot*>(base + h->heap_failure_snapshots_offset);
  for_each_ring_entry(
      failed, CLIPMEM_HEAP_FAILURE_SNAPSHOTS, snapshot(h->heap_failure_snapshots_total),
      [&](const ClipmemHeapSnapshot& s, uint64_t) { at_failures.Set(at_failures.Length(), read_snapshot(s)); });
  out.Set("atFailures", at_failures);
  return out;
}

}  // namespace

// releaseRecordSpace(path): gives back the disk blocks (reserved at creation, see lifecycle.cc) of the parts
// of a record its process never wrote. Only for the record of a process that is gone: a live writer would
// need those blocks again. Returns the file's allocated bytes after; 0 for a file that is not a complete
// record.
Napi::Value ReleaseRecordSpace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "releaseRecordSpace(path: string)");
  std::string path = info[0].As<Napi::String>();
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Napi::Number::New(env, 0);
  struct stat st;
  ClipmemRecordHeader h;
  if (fstat(fd, &st) != 0 || pread(fd, &h, sizeof h, 0) != ssize_t(sizeof h) ||
      clipmem_header_problem(&h, uint64_t(st.st_size))) {
    close(fd);
    return Napi::Number::New(env, 0);
  }
  uint64_t ranges[CLIPMEM_WRITTEN_RANGES][2];
  unsigned count = clipmem_written_ranges(&h, ranges);
  const uint64_t page = 4096;
  uint64_t cursor = 0;
  auto release = [&](uint64_t from, uint64_t to) {
    from = (from + page - 1) / page * page;
    to = to / page * page;
    if (to > from) fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(from), off_t(to - from));
  };
  for (unsigned i = 0; i < count; ++i) {
    release(cursor, ranges[i][0]);
    if (ranges[i][0] + ranges[i][1] > cursor) cursor = ranges[i][0] + ranges[i][1];
  }
  release(cursor, h.total_size);
  double after = fstat(fd, &st) == 0 ? double(st.st_blocks) * 512 : 0;
  close(fd);
  return Napi::Number::New(env, after);
}

// readRecord(path): one consistent-enough snapshot of the record (counters are read without stopping
// the writer; ring entries being rewritten at that instant are skipped).
Napi::Value ReadRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "readRecord(path: string)");
  std::string path = info[0].As<Napi::String>();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw Napi::Error::New(env, "cannot open the record " + path + ": " + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    throw Napi::Error::New(env, "the record " + path + " is empty (the process died while creating it)");
  }
  void* base = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) throw Napi::Error::New(env, "cannot map the record " + path + ": " + strerror(errno));
  struct Unmap {
    void* base;
    size_t size;
    ~Unmap() { munmap(base, size); }
  } unmap{base, size_t(st.st_size)};
  const auto* h = static_cast<const ClipmemRecordHeader*>(base);
  if (const char* problem = clipmem_header_problem(h, uint64_t(st.st_size)))
    throw Napi::Error::New(env, "the record " + path + " cannot be read: " + problem);
  const char* bytes_base = static_cast<const char*>(base);
  const auto* slots = reinterpret_cast<const ClipmemThreadSlot*>(bytes_base + h->slots_offset);
  const auto* failures = reinterpret_cast<const ClipmemFailure*>(bytes_base + h->failures_offset);
  const auto* timeline = reinterpret_cast<const ClipmemSample*>(bytes_base + h->timeline_offset);
  const auto* phases = reinterpret_cast<const ClipmemPhase*>(bytes_base + h->phases_offset);
  const auto* modules = reinterpret_cast<const ClipmemModule*>(bytes_base + h->modules_offset);

  Napi::Object out = Napi::Object::New(env);
  out.Set("path", path);
  out.Set("pid", h->pid);
  out.Set("parentPid", h->parent_pid);
  out.Set("execGeneration", h->exec_generation);
  out.Set("state", snapshot(h->state) == CLIPMEM_STATE_EXITED ? "exited" : "running");
  out.Set("startNs", Napi::Number::New(env, double(h->start_ns)));
  out.Set("endNs", Napi::Number::New(env, double(snapshot(h->end_ns))));
  int32_t exit_code = snapshot(h->exit_code);
  out.Set("exitCode", exit_code < 0 ? env.Null() : Napi::Number::New(env, exit_code));
  out.Set("rlimitAs", bytes(env, h->rlimit_as));
  out.Set("rlimitData", bytes(env, h->rlimit_data));
  out.Set("failureRlimitAs", bytes(env, h->failure_rlimit_as));
  out.Set("failureRlimitData", bytes(env, h->failure_rlimit_data));
  out.Set("exe", bounded(h->exe, sizeof h->exe));

  // Heap: the folded counter plus every thread's unfolded delta.
  int64_t heap = snapshot(h->heap_current);
  Napi::Object calls = Napi::Object::New(env);
  uint64_t call_totals[CLIPMEM_FN_COUNT] = {};
  uint64_t histogram[CLIPMEM_HISTOGRAM_BUCKETS] = {};
  uint32_t slots_used = snapshot(h->slots_used);
  for (uint32_t i = 0; i < CLIPMEM_THREAD_SLOTS; ++i) {
    if (i >= slots_used && i != CLIPMEM_THREAD_SLOTS - 1) continue;
    heap += snapshot(slots[i].heap_delta);
    for (int fn = 0; fn < CLIPMEM_FN_COUNT; ++fn) call_totals[fn] += snapshot(slots[i].calls[fn]);
    for (int b = 0; b < CLIPMEM_HISTOGRAM_BUCKETS; ++b) histogram[b] += snapshot(slots[i].histogram[b]);
  }
  for (int fn = 0; fn < CLIPMEM_FN_COUNT; ++fn)
    calls.Set(kFnNames[fn], Napi::Number::New(env, double(call_totals[fn])));
  Napi::Array hist = Napi::Array::New(env, CLIPMEM_HISTOGRAM_BUCKETS);
  for (uint32_t b = 0; b < CLIPMEM_HISTOGRAM_BUCKETS; ++b) hist.Set(b, Napi::Number::New(env, double(histogram[b])));
  out.Set("calls", calls);
  out.Set("histogram", hist);
  out.Set("threads", Napi::Number::New(env, slots_used > CLIPMEM_THREAD_SLOTS ? CLIPMEM_THREAD_SLOTS : slots_used));

  Napi::Object counters = Napi::Object::New(env);
  counters.Set("heapCurrent", bytes(env, heap));
  counters.Set("heapPeak", bytes(env, snapshot(h->heap_peak) > heap ? snapshot(h->heap_peak) : heap));
  counters.Set("anonMapped", bytes(env, snapshot(h->anon_mapped)));
  counters.Set("anonPeak", bytes(env, snapshot(h->anon_peak)));
  counters.Set("fileMapped", bytes(env, snapshot(h->file_mapped)));
  counters.Set("filePeak", bytes(env, snapshot(h->file_peak)));
  counters.Set("reservedMapped", bytes(env, snapshot(h->reserved_mapped)));
  counters.Set("reservedPeak", bytes(env, snapshot(h->reserved_peak)));
  counters.Set("unmappedUnknown", bytes(env, snapshot(h->unmapped_unknown)));
  counters.Set("vmPeak", bytes(env, snapshot(h->vm_peak)));
  counters.Set("rssPeak", bytes(env, snapshot(h->rss_peak)));
  out.Set("counters", counters);
  out.Set("injectedFaults", snapshot(h->injected_faults));

  uint32_t modules_used = snapshot(h->modules_used);
  if (modules_used > CLIPMEM_MODULE_CAPACITY) modules_used = CLIPMEM_MODULE_CAPACITY;

  // Rings: entries in sequence order, the latest `capacity` of `total`.
  uint64_t failures_total = snapshot(h->failures_total);
  out.Set("failuresTotal", Napi::Number::New(env, double(failures_total)));
  Napi::Array failure_list = Napi::Array::New(env);
  for_each_ring_entry(failures, CLIPMEM_FAILURE_CAPACITY, failures_total, [&](const ClipmemFailure& f, uint64_t) {
    failure_list.Set(failure_list.Length(), ReadFailure(env, f, modules, modules_used));
  });
  out.Set("failures", failure_list);

  uint64_t samples_total = snapshot(h->samples_total);
  out.Set("samplesTotal", Napi::Number::New(env, double(samples_total)));
  Napi::Array samples = Napi::Array::New(env);
  for_each_ring_entry(timeline, CLIPMEM_TIMELINE_CAPACITY, samples_total, [&](const ClipmemSample& s, uint64_t seq) {
    Napi::Object sample = Napi::Object::New(env);
    sample.Set("sequence", Napi::Number::New(env, double(seq)));
    sample.Set("timeNs", Napi::Number::New(env, double(s.time_ns)));
    sample.Set("heap", bytes(env, s.heap_current));
    sample.Set("anon", bytes(env, s.anon_mapped));
    sample.Set("file", bytes(env, s.file_mapped));
    sample.Set("reserved", bytes(env, s.reserved_mapped));
    sample.Set("vmSize", bytes(env, s.vm_size));
    sample.Set("rss", bytes(env, s.rss));
    sample.Set("phaseIndex", s.phase_index);
    sample.Set("gpu", bytes(env, s.device_live));
    samples.Set(samples.Length(), sample);
  });
  out.Set("timeline", samples);

  uint64_t phases_total = snapshot(h->phases_total);
  out.Set("phasesTotal", Napi::Number::New(env, double(phases_total)));
  out.Set("currentPhase", snapshot(h->current_phase));
  Napi::Array markers = Napi::Array::New(env);
  for_each_ring_entry(phases, CLIPMEM_PHASE_CAPACITY, phases_total, [&](const ClipmemPhase& p, uint64_t seq) {
    Napi::Object marker = Napi::Object::New(env);
    marker.Set("index", Napi::Number::New(env, double(seq)));
    marker.Set("timeNs", Napi::Number::New(env, double(p.time_ns)));
    marker.Set("label", bounded(p.label, sizeof p.label));
    marker.Set("heap", bytes(env, p.heap_current));
    marker.Set("anon", bytes(env, p.anon_mapped));
    marker.Set("file", bytes(env, p.file_mapped));
    markers.Set(markers.Length(), marker);
  });
  out.Set("phases", markers);

  // GPU memory per CUDA ordinal, for the devices the process allocated on or failed on.
  const auto* devices = reinterpret_cast<const ClipmemDevice*>(bytes_base + h->devices_offset);
  Napi::Array device_list = Napi::Array::New(env);
  for (uint32_t i = 0; i < CLIPMEM_DEVICE_CAPACITY; ++i) {
    const ClipmemDevice& d = devices[i];
    if (!snapshot(d.allocations) && !snapshot(d.failures)) continue;
    Napi::Object device = Napi::Object::New(env);
    device.Set("ordinal", i);
    device.Set("live", bytes(env, snapshot(d.live)));
    device.Set("peak", bytes(env, snapshot(d.peak)));
    device.Set("allocations", Napi::Number::New(env, double(snapshot(d.allocations))));
    device.Set("frees", Napi::Number::New(env, double(snapshot(d.frees))));
    device.Set("failures", Napi::Number::New(env, double(snapshot(d.failures))));
    device.Set("largest", bytes(env, snapshot(d.largest)));
    int64_t total = snapshot(d.total);
    device.Set("totalBytes", total > 0 ? bytes(env, total) : env.Null());
    device_list.Set(device_list.Length(), device);
  }
  out.Set("devices", device_list);
  out.Set("pinnedCurrent", bytes(env, snapshot(h->pinned_current)));
  out.Set("pinnedPeak", bytes(env, snapshot(h->pinned_peak)));
  out.Set("deviceUntracked", Napi::Number::New(env, double(snapshot(h->device_untracked))));
  out.Set("heapProfile", ReadHeapProfile(env, h, modules, modules_used));
  return out;
}

// setPhase(label): true if this process runs under the tracker and the label was recorded.
Napi::Value SetPhase(const Napi::CallbackInfo& info) {
  using SetPhaseFn = int (*)(const char*);
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "setPhase(label: string)");
  static SetPhaseFn set_phase = reinterpret_cast<SetPhaseFn>(dlsym(RTLD_DEFAULT, "clipmem_tracker_set_phase"));
  if (!set_phase) return Napi::Boolean::New(env, false);
  std::string label = info[0].As<Napi::String>();
  return Napi::Boolean::New(env, set_phase(label.c_str()) != 0);
}

// demangle(name): a C++ symbol made readable (unchanged if it is not a mangled name).
Napi::Value Demangle(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "demangle(name: string)");
  return Napi::String::New(info.Env(), demangle(info[0].As<Napi::String>()));
}

// trackedFunctions(): the hooked functions in call-table order (native/record/hooks.h), the names
// readRecord() reports in `calls` and a failure's `fn`; src/track/record.ts takes them from here.
Napi::Value TrackedFunctions(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env(), CLIPMEM_FN_COUNT);
  for (uint32_t fn = 0; fn < CLIPMEM_FN_COUNT; ++fn) names.Set(fn, Napi::String::New(info.Env(), kFnNames[fn]));
  return names;
}

// deviceFunctions(): the GPU allocation functions (native/record/device_hooks.h), the names a GPU
// failure's `fn` takes.
Napi::Value DeviceFunctions(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env(), CLIPMEM_DEVICE_FN_COUNT);
  for (uint32_t fn = 0; fn < CLIPMEM_DEVICE_FN_COUNT; ++fn)
    names.Set(fn, Napi::String::New(info.Env(), kDeviceFnNames[fn]));
  return names;
}

}  // namespace clipmem
