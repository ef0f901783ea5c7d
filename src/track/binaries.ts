// The tracker's native pieces, built next to the addon by the same CMake project (native/preload), or shipped
// with it in prebuilds/ (src/core/native.ts): the LD_PRELOAD interposer and clipmem-exec (sets limits, then
// execs the traced command).
import { nativeFile } from '../core/native';

/** The interposer library to put in LD_PRELOAD. */
export function preloadLibrary(): string {
  return nativeFile('libclipmem_preload.so', 'allocation tracker (libclipmem_preload.so)');
}

/** The exec helper that applies rlimits and cgroup membership before exec. */
export function execHelper(): string {
  return nativeFile('clipmem-exec', 'exec helper (clipmem-exec)');
}
