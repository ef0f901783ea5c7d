// clip-mem's environment variables share one prefix, CLIPMEM_ (CLIPMEM_CACHE, CLIPMEM_FAIL, ...). The
// names that used CLIP_MEM_ before keep working.

export const ENV_PREFIX = 'CLIPMEM_';
const OLD_PREFIX = 'CLIP_MEM_';

/** The value of CLIPMEM_<name>, else of its old spelling CLIP_MEM_<name>; undefined when neither is set. */
export function envValue(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[ENV_PREFIX + name] || env[OLD_PREFIX + name] || undefined;
}
