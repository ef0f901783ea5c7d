// Byte counts for people: formatBytes for reports, parseBytes for command-line sizes.
// Units are binary (1 K = 1 KiB = 1024 bytes), as in ulimit, prlimit, Slurm and cgroups; the SI
// spellings KB/MB/GB/TB are decimal so that "1GB" means what a disk vendor means.

const binaryUnits = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/**
 * "3.91 GiB", "92 MiB", "512 B": the largest binary unit with a value >= 1; GiB and above with two
 * decimals (limits that differ by a few MiB must look different), smaller units with one decimal below 10.
 */
export function formatBytes(bytes: number | bigint): string {
  const negative = bytes < 0;
  let value = Math.abs(Number(bytes));
  if (!Number.isFinite(value)) throw new RangeError(`formatBytes: ${bytes} is not a byte count`);
  let unit = 0;
  while (value >= 1024 && unit < binaryUnits.length - 1) {
    value /= 1024;
    unit += 1;
  }
  let text: string;
  if (unit === 0) text = String(Math.round(value));
  else if (unit >= 3) text = value.toFixed(2);
  else text = value < 10 ? value.toFixed(1) : value.toFixed(0);
  return `${negative ? '-' : ''}${text} ${binaryUnits[unit]}`;
}

const multipliers: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  kib: 2 ** 10,
  m: 2 ** 20,
  mib: 2 ** 20,
  g: 2 ** 30,
  gib: 2 ** 30,
  t: 2 ** 40,
  tib: 2 ** 40,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

const sizePattern = /^\s*([+-]?)(\d+(?:\.\d+)?(?:e[+-]?\d+)?|\.\d+)\s*([a-z]*)\s*$/i;

/** The accepted spellings, for every message about a size. */
export const SIZE_FORMS =
  'a number of bytes with an optional unit: B, K/KiB, M/MiB, G/GiB, T/TiB (binary) or KB, MB, GB, TB (decimal), e.g. 600M, 1.5G, 700MiB, 2147483648';

export interface ByteBounds {
  /** The smallest size accepted (default 1: a size of 0 bytes, or a fraction that rounds to 0, is refused). */
  min?: number;
  /** The largest size accepted (default Number.MAX_SAFE_INTEGER). */
  max?: number;
  /** Says what min is, e.g. "one page". */
  minReason?: string;
  /** Says what max is, e.g. "the 128 TiB user address space". */
  maxReason?: string;
}

/**
 * Parses "600M", "1.5G", "700MiB", "2147483648", "64 KiB", "2GB" into a whole number of bytes
 * (fractions round down). `what` names the value in the error, e.g. "--limit-as". Negative sizes, sizes
 * that round to fewer than `bounds.min` bytes (default 1) and sizes above `bounds.max` are refused with a
 * message naming `what`, the value and the accepted forms.
 */
export function parseBytes(text: string, what = 'size', bounds: ByteBounds = {}): number {
  const shown = `${what}: ${JSON.stringify(String(text))}`;
  const match = sizePattern.exec(String(text));
  const unit = match?.[3]?.toLowerCase();
  if (!match || unit === undefined || !(unit in multipliers)) {
    throw new Error(`${shown} is not a byte size. Write ${SIZE_FORMS}.`);
  }
  if (match[1] === '-') throw new Error(`${shown} is not a byte size: a size cannot be negative. Write ${SIZE_FORMS}.`);
  const min = bounds.min ?? 1;
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  const bytes = Math.floor(Number(match[2]) * multipliers[unit]!);
  if (!Number.isSafeInteger(bytes) || bytes > max) {
    const limit = `${formatBytes(max)}${bounds.maxReason ? `, ${bounds.maxReason}` : ''}`;
    throw new Error(`${shown} is too large: at most ${max} bytes (${limit}).`);
  }
  if (bytes < min) {
    const floor =
      min === 1
        ? 'at least 1 byte'
        : `at least ${min} bytes (${formatBytes(min)}${bounds.minReason ? `, ${bounds.minReason}` : ''})`;
    throw new Error(
      `${shown} is too small: ${bytes === 0 && min > 0 ? 'it rounds to 0 bytes; ' : ''}a size must be ${floor}. Write ${SIZE_FORMS}.`,
    );
  }
  return bytes;
}
