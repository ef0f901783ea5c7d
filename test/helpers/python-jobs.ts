// Small Python jobs the tests trace, written once.

/**
 * A concurrent.futures pool of 2 workers: one touches 1 MiB, the other `mib` MiB page by page. Killed,
 * the second worker breaks the pool, and the parent exits 1 with BrokenProcessPool.
 */
export function poolWithWorkerTouching(mib: number): string {
  return [
    'from concurrent.futures import ProcessPoolExecutor',
    'def work(n):',
    '    b = bytearray(n << 20)',
    '    for i in range(0, len(b), 4096): b[i] = 1',
    '    return n',
    "if __name__ == '__main__':",
    `    with ProcessPoolExecutor(2) as pool: print(list(pool.map(work, [1, ${mib}])))`,
  ].join('\n');
}
