// Transparent huge pages for the children that run clip-mem's own models (training steps, forwards).
// A fresh 4 KiB page costs ~14 us to fault in on the machine clip-mem is developed on (a VM), so a
// training step that touches 1.7 GiB of new memory (float32 parameters, AdamW's moments, activations)
// spent most of its setup in the kernel. glibc's `glibc.malloc.hugetlb=1` makes malloc advise its large
// blocks (MADV_HUGEPAGE), so the kernel faults them 2 MiB at a time where transparent huge pages are in
// `madvise` or `always` mode. It is a tunable read at exec, hence set in the child's environment. A
// user's own command never gets it: clip-mem measures that as it is.
//
// API:
//   hugePageMallocEnv(env = process.env): NodeJS.ProcessEnv   env with the tunable added (unless switched off)
//   HUGE_PAGES_ENV                                            CLIPMEM_HUGE_PAGES: on (default) or off
import { ENV_PREFIX, envValue } from './env';

export const HUGE_PAGES_ENV = `${ENV_PREFIX}HUGE_PAGES`;
const TUNABLE = 'glibc.malloc.hugetlb';

/**
 * `env` for a child that runs one of clip-mem's models: GLIBC_TUNABLES gains glibc.malloc.hugetlb=1,
 * unless CLIPMEM_HUGE_PAGES=off or GLIBC_TUNABLES already sets hugetlb (the user's choice stands).
 */
export function hugePageMallocEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const setting = envValue('HUGE_PAGES', env) ?? 'on';
  if (setting !== 'on' && setting !== 'off') throw new Error(`${HUGE_PAGES_ENV}=${setting}: expected on or off`);
  const tunables = env.GLIBC_TUNABLES ?? '';
  if (setting === 'off' || tunables.split(':').some((t) => t.startsWith(`${TUNABLE}=`))) return env;
  return { ...env, GLIBC_TUNABLES: tunables ? `${tunables}:${TUNABLE}=1` : `${TUNABLE}=1` };
}
