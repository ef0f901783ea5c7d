// Python frames of the failing thread (see python.h). Layouts: x86-64, CPython's default (GIL) build,
// offsets taken with offsetof from each version's internal headers (Py_BUILD_CORE).
#include "preload/python.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

namespace clipmem {
namespace {

enum LineTable { kLnotab, kLinetable310, kLocations };  // 3.8-3.9, 3.10, 3.11+
enum Instruction {
  kLastiBytes,
  kLastiUnits,
  kPointer
};  // f_lasti in bytes (3.8-3.9), in code units (3.10),
    // a pointer to the code unit (3.11+)

struct Layout {
  uint32_t version;  // 0x03MM0000
  // _PyRuntimeState -> PyInterpreterState -> PyThreadState
  uint16_t runtime_interpreters_head, interp_threads_head, interp_next, tstate_next, tstate_thread_id;
  uint16_t tstate_frame;       // frame (3.8-3.10), cframe (3.11-3.12), current_frame (3.13)
  int16_t cframe_current;      // _PyCFrame.current_frame (3.11-3.12); -1: tstate_frame is the frame
  uint16_t frame_code;         // f_code / f_executable
  uint16_t frame_previous;     // f_back / previous
  uint16_t frame_instruction;  // f_lasti (int) / prev_instr / instr_ptr
  int16_t frame_owner;         // owner byte (3.12+: 3 is a C stack entry frame to skip); -1: none
  uint16_t code_filename, code_name, code_linetable, code_firstlineno;
  uint16_t code_units;                // co_code_adaptive (3.11+)
  uint16_t ascii_size, compact_size;  // where a compact str's characters start: ASCII, other
  LineTable table;
  Instruction instruction;
};

const Layout kLayouts[] = {
    {0x03080000, 32, 8, 0, 8, 176, 24, -1, 32, 24, 104, -1, 104, 112, 120, 40, 0, 48, 72, kLnotab, kLastiBytes},
    {0x03090000, 32, 8, 0, 8, 176, 24, -1, 32, 24, 104, -1, 104, 112, 120, 40, 0, 48, 72, kLnotab, kLastiBytes},
    {0x030a0000, 32, 8, 0, 8, 176, 24, -1, 32, 24, 96, -1, 104, 112, 120, 40, 0, 48, 72, kLinetable310, kLastiUnits},
    {0x030b0000, 40, 16, 0, 8, 152, 56, 8, 32, 48, 56, -1, 112, 128, 136, 72, 184, 48, 72, kLocations, kPointer},
    {0x030c0000, 40, 72, 0, 8, 136, 56, 0, 0, 8, 56, 70, 112, 128, 136, 68, 192, 40, 56, kLocations, kPointer},
    {0x030d0000, 632, 7344, 7264, 8, 152, 72, -1, 0, 8, 56, 70, 112, 128, 136, 68, 200, 40, 56, kLocations, kPointer},
};
constexpr int kFrameOwnedByCStack = 3;

const Layout* layout;
uintptr_t runtime;    // &_PyRuntime
uintptr_t code_type;  // &PyCode_Type: a frame's code object must be one

// One read of this process's memory that fails instead of faulting on an unmapped address.
bool peek(uintptr_t address, void* out, size_t size) {
  if (address < 4096) return false;
  iovec local{out, size}, remote{reinterpret_cast<void*>(address), size};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == ssize_t(size);
}

template <typename T>
bool peek(uintptr_t address, T* out) {
  return peek(address, out, sizeof *out);
}

// A str object as UTF-8 into out (size bytes, NUL-terminated). keep_tail: a longer text keeps its end.
bool read_str(uintptr_t object, char* out, size_t size, bool keep_tail) {
  out[0] = 0;
  int64_t length;
  uint32_t state;
  if (!peek(object + 16, &length) || !peek(object + 32, &state) || length < 0) return false;
  unsigned kind = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1;
  if (!compact || (kind != 1 && kind != 2 && kind != 4)) return false;
  uintptr_t data = object + (ascii ? layout->ascii_size : layout->compact_size);
  // Code units to read: all of them, or the last ones that may fit (a UTF-8 character takes up to 4 bytes).
  size_t room = size - 1, skip = 0;
  size_t units = size_t(length);
  size_t fit = ascii ? room : room / 4;
  const char* prefix = "";
  if (units > fit) {
    if (keep_tail) {
      prefix = "...";
      fit = fit > 3 ? fit - 3 : 0;
      skip = units - fit;
    }
    units = fit;
  }
  size_t n = strlen(prefix);
  memcpy(out, prefix, n);
  uint8_t buffer[256];
  for (size_t done = 0; done < units;) {
    size_t chunk = (units - done) * kind > sizeof buffer ? sizeof buffer / kind : units - done;
    if (!peek(data + (skip + done) * kind, buffer, chunk * kind)) return out[n] = 0, false;
    for (size_t i = 0; i < chunk; ++i) {
      uint32_t c = kind == 1   ? buffer[i]
                   : kind == 2 ? reinterpret_cast<uint16_t*>(buffer)[i]
                               : reinterpret_cast<uint32_t*>(buffer)[i];
      char encoded[4];
      size_t bytes = 0;
      if (c < 0x80)
        encoded[bytes++] = char(c);
      else if (c < 0x800)
        encoded[bytes++] = char(0xc0 | c >> 6), encoded[bytes++] = char(0x80 | (c & 0x3f));
      else if (c < 0x10000)
        encoded[bytes++] = char(0xe0 | c >> 12), encoded[bytes++] = char(0x80 | ((c >> 6) & 0x3f)),
        encoded[bytes++] = char(0x80 | (c & 0x3f));
      else
        encoded[bytes++] = char(0xf0 | c >> 18), encoded[bytes++] = char(0x80 | ((c >> 12) & 0x3f)),
        encoded[bytes++] = char(0x80 | ((c >> 6) & 0x3f)), encoded[bytes++] = char(0x80 | (c & 0x3f));
      if (n + bytes > room) break;
      memcpy(out + n, encoded, bytes);
      n += bytes;
    }
    done += chunk;
  }
  out[n] = 0;
  return true;
}

// The bytes of a bytes object, read a window at a time.
struct ByteReader {
  uintptr_t data;
  int64_t size, position = 0, window_start = 0, window_end = 0;
  uint8_t window[512] = {};
  bool failed = false;
  bool more() const { return position < size && !failed; }
  uint8_t next() {
    if (position >= window_end) {
      int64_t n = size - position < int64_t(sizeof window) ? size - position : int64_t(sizeof window);
      if (n <= 0 || !peek(data + uintptr_t(position), window, size_t(n))) {
        failed = true;
        return 0;
      }
      window_start = position;
      window_end = position + n;
    }
    return window[position++ - window_start];
  }
};

// 3.11+ location table varints: 6 bits a byte, bit 6 says another follows.
uint32_t read_varint(ByteReader& r) {
  uint8_t b = r.next();
  uint32_t value = b & 63;
  for (unsigned shift = 6; (b & 64) && r.more() && shift < 32; shift += 6) {
    b = r.next();
    value |= uint32_t(b & 63) << shift;
  }
  return value;
}

int32_t read_signed_varint(ByteReader& r) {
  uint32_t value = read_varint(r);
  return (value & 1) ? -int32_t(value >> 1) : int32_t(value >> 1);
}

// The line of the instruction at byte offset `at` in the code, as PyCode_Addr2Line computes it.
int32_t line_of(uintptr_t code, int64_t at) {
  int32_t first;
  uintptr_t table;
  int64_t size;
  // A line table beyond 1 MiB is a bad pointer's garbage, not a function's: never walk it.
  if (!peek(code + layout->code_firstlineno, &first) || !peek(code + layout->code_linetable, &table) ||
      !peek(table + 16, &size) || size < 0 || size > (1 << 20))
    return -1;
  if (at < 0) return first;
  ByteReader r{table + 32, size};
  int32_t line = first;
  if (layout->table == kLnotab) {  // (address increment, signed line increment) pairs
    for (int64_t address = 0; r.more();) {
      address += r.next();
      if (address > at) break;
      line += int8_t(r.next());
    }
    return r.failed ? -1 : line;
  }
  if (layout->table == kLinetable310) {  // (address delta, line delta; -128: no line) pairs
    int64_t end = 0;
    int32_t result = -1;
    while (r.more()) {
      uint8_t delta = r.next();
      int8_t line_delta = int8_t(r.next());
      end += delta;
      if (line_delta != -128) line += line_delta;
      result = line_delta == -128 ? -1 : line;
      if (end > at) return r.failed ? -1 : result;
    }
    return -1;
  }
  // 3.11+: entries of a head byte (bit 7 set, code << 3 | code units - 1), then the bytes its code says.
  for (int64_t end = 0; r.more();) {
    uint8_t head = r.next();
    int code_kind = (head >> 3) & 15;
    end += 2 * ((head & 7) + 1);
    int32_t delta = 0;
    if (code_kind == 14) {  // long form: line delta, end line, column, end column
      delta = read_signed_varint(r);
      for (int i = 0; i < 3; ++i) read_varint(r);
    } else if (code_kind == 13) {  // no columns
      delta = read_signed_varint(r);
    } else if (code_kind >= 10 && code_kind <= 12) {  // one line: delta 0 to 2, two column bytes
      delta = code_kind - 10;
      r.next(), r.next();
    } else if (code_kind < 10) {  // short form: one column byte
      r.next();
    }
    line += delta;
    if (end > at) return r.failed ? -1 : code_kind == 15 ? -1 : line;
  }
  return -1;
}

// The code object a frame runs, or 0 when the frame is to be skipped (a C stack entry, not a code object).
uintptr_t code_of(uintptr_t frame, bool* failed) {
  *failed = false;
  if (layout->frame_owner >= 0) {
    uint8_t owner;
    if (!peek(frame + uintptr_t(layout->frame_owner), &owner)) return *failed = true, 0;
    if (owner == kFrameOwnedByCStack) return 0;
  }
  uintptr_t code, type;
  if (!peek(frame + layout->frame_code, &code) || !peek(code + 8, &type)) return *failed = true, 0;
  return type == code_type ? code : 0;
}

// One frame into out; false when the frame is to be skipped or a read failed (*failed).
bool read_frame(uintptr_t frame, ClipmemPyFrame* out, bool* failed) {
  uintptr_t code = code_of(frame, failed);
  if (!code) return false;
  int64_t at = -1;
  if (layout->instruction == kPointer) {
    uintptr_t instruction;
    if (!peek(frame + layout->frame_instruction, &instruction)) return *failed = true, false;
    at = int64_t(instruction) - int64_t(code + layout->code_units);
  } else {
    int32_t lasti;
    if (!peek(frame + layout->frame_instruction, &lasti)) return *failed = true, false;
    at = layout->instruction == kLastiUnits ? int64_t(lasti) * 2 : lasti;
  }
  out->line = line_of(code, at);
  uintptr_t name, file;
  if (!peek(code + layout->code_name, &name) || !peek(code + layout->code_filename, &file))
    return *failed = true, false;
  read_str(name, out->function, sizeof out->function, false);
  read_str(file, out->file, sizeof out->file, true);
  return true;
}

// This thread's PyThreadState, or 0.
uintptr_t current_thread_state(bool* failed) {
  unsigned long self = uintptr_t(pthread_self());
  uintptr_t interp;
  *failed = !peek(runtime + layout->runtime_interpreters_head, &interp);
  for (int i = 0; !*failed && interp && i < 64; ++i) {
    uintptr_t tstate;
    if (!peek(interp + layout->interp_threads_head, &tstate)) break;
    for (int j = 0; tstate && j < 10000; ++j) {  // bounded: a list being changed may loop
      unsigned long id;
      if (!peek(tstate + layout->tstate_thread_id, &id)) return *failed = true, 0;
      if (id == self) return tstate;
      if (!peek(tstate + layout->tstate_next, &tstate)) return *failed = true, 0;
    }
    if (!peek(interp + layout->interp_next, &interp)) *failed = true;
  }
  return 0;
}

}  // namespace

void python_init() {
  runtime = uintptr_t(dlsym(RTLD_DEFAULT, "_PyRuntime"));
  code_type = uintptr_t(dlsym(RTLD_DEFAULT, "PyCode_Type"));
  if (!runtime || !code_type) return;
  uint32_t version = 0;
  if (const unsigned long* hex = static_cast<const unsigned long*>(dlsym(RTLD_DEFAULT, "Py_Version"))) {
    version = uint32_t(*hex) & 0xffff0000u;
  } else if (auto get_version = reinterpret_cast<const char* (*)()>(dlsym(RTLD_DEFAULT, "Py_GetVersion"))) {
    // Before 3.11: "3.10.13 (main, ...)", a static string.
    const char* text = get_version();
    char* end;
    unsigned long major = strtoul(text, &end, 10), minor = *end == '.' ? strtoul(end + 1, nullptr, 10) : 0;
    version = uint32_t(major << 24 | minor << 16);
  }
  for (const Layout& candidate : kLayouts)
    if (candidate.version == version) layout = &candidate;
}

void python_stack(ClipmemFailure* f) {
  f->py_version = layout ? layout->version : 0;
  f->py_status = CLIPMEM_PY_NONE;
  f->py_depth = f->py_more = 0;
  if (!layout) return;
  bool failed;
  uintptr_t tstate = current_thread_state(&failed);
  if (!tstate) {
    f->py_status = failed ? CLIPMEM_PY_UNREADABLE : CLIPMEM_PY_NO_THREAD;
    return;
  }
  uintptr_t frame;
  if (!peek(tstate + layout->tstate_frame, &frame) ||
      (layout->cframe_current >= 0 && frame && !peek(frame + uintptr_t(layout->cframe_current), &frame))) {
    f->py_status = CLIPMEM_PY_UNREADABLE;
    return;
  }
  // The innermost frames, then the outermost ones (where the program's own lines usually are): the frames
  // between are counted in py_more, and only their addresses are kept while walking.
  constexpr uint32_t kOuter = CLIPMEM_PY_DEPTH - CLIPMEM_PY_INNER;
  uintptr_t outer[kOuter];
  uint32_t past_inner = 0;  // code frames seen once the innermost ones were taken
  f->py_status = CLIPMEM_PY_CAPTURED;
  for (int steps = 0; frame && steps < 4096; ++steps) {  // bounded, as above
    if (f->py_depth < CLIPMEM_PY_INNER) {
      if (read_frame(frame, &f->py_frames[f->py_depth], &failed)) ++f->py_depth;
    } else if (code_of(frame, &failed)) {
      outer[past_inner++ % kOuter] = frame;
    }
    if (failed || !peek(frame + layout->frame_previous, &frame)) {
      f->py_status = CLIPMEM_PY_UNREADABLE;
      break;
    }
  }
  uint32_t kept = past_inner < kOuter ? past_inner : kOuter;
  f->py_more = past_inner - kept;
  for (uint32_t i = past_inner - kept; i < past_inner; ++i)
    if (read_frame(outer[i % kOuter], &f->py_frames[f->py_depth], &failed)) ++f->py_depth;
}

}  // namespace clipmem
