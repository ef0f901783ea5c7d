// The limits a traced process runs under: one type for `trace`, `run`, `estimate`, `fit` and the diagnosis.
import { formatBytes } from './units';

/** Limits in bytes; an absent one is not set (the process may still inherit one: see the record's rlimits). */
export interface Limits {
  /** RLIMIT_AS (`ulimit -v`): the most VmSize may reach. */
  as?: number;
  /** RLIMIT_DATA (`ulimit -d`): heap plus private writable mappings. */
  data?: number;
  /** Memory cgroup hard limit (memory.limit_in_bytes / memory.max): RSS + page cache; OOM kill above it. */
  mem?: number;
}

export type LimitKind = keyof Limits;

export const LIMIT_KINDS: readonly LimitKind[] = ['as', 'data', 'mem'];

/** Each limit set, in words: "RLIMIT_AS 4.00 GiB", "RLIMIT_DATA ...", "cgroup memory ...". */
export function limitTexts(limits: Limits): string[] {
  const parts: string[] = [];
  if (limits.as !== undefined) parts.push(`RLIMIT_AS ${formatBytes(limits.as)}`);
  if (limits.data !== undefined) parts.push(`RLIMIT_DATA ${formatBytes(limits.data)}`);
  if (limits.mem !== undefined) parts.push(`cgroup memory ${formatBytes(limits.mem)}`);
  return parts;
}

/** The command-line option that sets each limit, in every command. */
export const LIMIT_OPTIONS: Record<LimitKind, string> = { as: '--limit-as', data: '--limit-data', mem: '--limit-mem' };

/** A limit as the command line takes it back, exact: "1700M" when it is whole MiB, else bytes. */
export function limitText(bytes: number): string {
  return bytes % 2 ** 20 === 0 ? `${bytes / 2 ** 20}M` : String(bytes);
}
