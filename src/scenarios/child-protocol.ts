// What `clip-mem run` and its scenario child (child.ts) hand each other.
import type { ScenarioOptions } from './scenario';

/** The environment variables through which the parent hands the request to the child. */
export const CHILD_REQUEST_ENV = 'CLIPMEM_SCENARIO';
export const CHILD_RESULT_ENV = 'CLIPMEM_SCENARIO_RESULT';

export interface ChildRequest {
  name: string;
  options: ScenarioOptions;
}

export interface ChildReport {
  /**
   * False in the report the child writes before the scenario starts, which the final one replaces: a child
   * that dies in the scenario (V8's fatal out-of-memory, a kill) still hands over where it started.
   */
  finished: boolean;
  rssBefore: number;
  vmSizeBefore: number;
  rssAfter: number;
  vmSizeAfter: number;
  /** The kernel's high-water marks for the whole child: VmHWM and VmPeak. */
  rssPeak: number;
  vmSizePeak: number;
  workMs: number;
  /** glibc arena heaps (64 MiB reservations) at the end (at the start, unfinished): what MALLOC_ARENA_MAX could give back. */
  mallocArenaHeaps: number;
  /**
   * Before the scenario: glibc arena heaps, and the threads besides the main one. Each of those threads
   * that allocates later reserves a heap of its own: what a load may add besides its weights.
   */
  mallocArenaHeapsBefore: number;
  otherThreadsBefore: number;
  figures: Record<string, number | string>;
  /** The error the scenario threw, with its errno code when it has one. */
  error: string | null;
}

/** glibc's per-thread arena heaps are reserved 64 MiB at a time (HEAP_MAX_SIZE on 64-bit). */
export const ARENA_HEAP_BYTES = 64 * 1024 * 1024;
