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

const sizePattern = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i;

/**
 * Parses "600M", "1.5G", "700MiB", "2147483648", "64 KiB", "2GB" into a whole number of bytes
 * (fractions round down). `what` names the value in the error, e.g. "--memory".
 */
export function parseBytes(text: string, what = 'size'): number {
  const match = sizePattern.exec(String(text));
  const unit = match?.[2]?.toLowerCase();
  if (!match || unit === undefined || !(unit in multipliers)) {
    throw new Error(
      `${what}: "${text}" is not a byte size. Write a number with an optional unit: ` +
        'B, K/KiB, M/MiB, G/GiB, T/TiB (binary) or KB, MB, GB, TB (decimal), e.g. 600M, 1.5G, 700MiB, 2147483648.',
    );
  }
  const bytes = Math.floor(Number(match[1]) * multipliers[unit]!);
  if (!Number.isSafeInteger(bytes)) {
    throw new Error(`${what}: "${text}" is too large (more than ${Number.MAX_SAFE_INTEGER} bytes).`);
  }
  return bytes;
}
