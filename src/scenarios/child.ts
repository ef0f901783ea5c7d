// The child process of `clip-mem run`: runs one scenario and writes what it measured to the file the
// parent named. It is started through the tracker's launcher, so its limits are already in force and the
// tracker records every allocation; what the child reports here is what only it can see (memory just
// before and after the work, its own figures, the error it caught). A child that dies in the scenario
// leaves the report it wrote before starting, and the parent falls back on the tracker's record for the rest.
import * as fs from 'node:fs';
import { writeFileAtomic } from '../core/files';
import { known } from '../core/field';
import { readProcessStatus } from '../probe/proc';
import {
  ARENA_HEAP_BYTES,
  CHILD_REQUEST_ENV,
  CHILD_RESULT_ENV,
  type ChildReport,
  type ChildRequest,
} from './child-protocol';
import { scenarioByName } from './index';

/**
 * glibc's per-thread arena heaps in /proc/self/maps: an anonymous read-write mapping at a 64 MiB-aligned
 * address whose PROT_NONE remainder completes the 64 MiB reservation.
 */
function countArenaHeaps(): number {
  const maps = fs
    .readFileSync('/proc/self/maps', 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [range, perms, , , inode, file] = line.split(/\s+/);
      const [start, end] = range.split('-').map((hex) => BigInt(`0x${hex}`));
      return { start, end, perms, anonymous: inode === '0' && !file };
    });
  let heaps = 0;
  maps.forEach((m, i) => {
    if (!m.anonymous || m.perms !== 'rw-p' || m.start % BigInt(ARENA_HEAP_BYTES) !== 0n) return;
    const next = maps[i + 1];
    const end = next && next.start === m.end && next.perms === '---p' && next.anonymous ? next.end : m.end;
    if (end - m.start === BigInt(ARENA_HEAP_BYTES)) heaps += 1;
  });
  return heaps;
}

/** VmRSS, VmSize and the kernel's high-water marks (VmHWM, VmPeak) of this process, in bytes. */
function readProcessMemory(): { rss: number; vmSize: number; rssPeak: number; vmSizePeak: number } {
  const status = readProcessStatus();
  return {
    rss: known(status.vmRss) ?? -1,
    vmSize: known(status.vmSize) ?? -1,
    rssPeak: known(status.vmHwm) ?? -1,
    vmSizePeak: known(status.vmPeak) ?? -1,
  };
}

async function main(): Promise<void> {
  const request = JSON.parse(process.env[CHILD_REQUEST_ENV] ?? 'null') as ChildRequest | null;
  const resultFile = process.env[CHILD_RESULT_ENV];
  if (!request || !resultFile)
    throw new Error(
      `clip-mem's scenario child needs ${CHILD_REQUEST_ENV} and ${CHILD_RESULT_ENV}: it is started by \`clip-mem run\``,
    );
  const scenario = scenarioByName(request.name);
  const before = readProcessMemory();
  const heapsBefore = countArenaHeaps();
  const otherThreadsBefore = fs.readdirSync('/proc/self/task').length - 1;
  const unfinished: ChildReport = {
    finished: false,
    rssBefore: before.rss,
    vmSizeBefore: before.vmSize,
    rssAfter: -1,
    vmSizeAfter: -1,
    rssPeak: -1,
    vmSizePeak: -1,
    workMs: -1,
    mallocArenaHeaps: heapsBefore,
    mallocArenaHeapsBefore: heapsBefore,
    otherThreadsBefore,
    figures: {},
    error: null,
  };
  writeFileAtomic(resultFile, JSON.stringify(unfinished));
  const started = performance.now();
  let figures: Record<string, number | string> = {};
  let error: string | null = null;
  try {
    figures = await scenario.run(request.options);
  } catch (thrown) {
    const e = thrown as NodeJS.ErrnoException;
    error = (e instanceof Error ? `${e.code ? `${e.code}: ` : ''}${e.message}` : String(thrown)).slice(0, 2000);
  }
  const workMs = performance.now() - started;
  const after = readProcessMemory();
  const report: ChildReport = {
    finished: true,
    rssBefore: before.rss,
    vmSizeBefore: before.vmSize,
    rssAfter: after.rss,
    vmSizeAfter: after.vmSize,
    rssPeak: after.rssPeak,
    vmSizePeak: after.vmSizePeak,
    workMs,
    mallocArenaHeaps: countArenaHeaps(),
    mallocArenaHeapsBefore: heapsBefore,
    otherThreadsBefore,
    figures,
    error,
  };
  writeFileAtomic(resultFile, JSON.stringify(report));
  // Exit at once: a scenario's runtime may keep threads or handles alive that are not ours to wait for.
  process.exit(error ? 1 : 0);
}

main().catch((error) => {
  process.stderr.write(`clip-mem scenario child: ${(error as Error).stack ?? error}\n`);
  process.exit(70);
});
