// The kernel's own word on who its OOM killer killed: /dev/kmsg, read from a cursor taken before the run,
// so only kills during the run count. Each kill is logged as
//   oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/a/b,task_memcg=/a/b,task=touch,pid=123,uid=0
//   Memory cgroup out of memory: Killed process 123 (touch) total-vm:...kB, anon-rss:...kB, file-rss:...kB, shmem-rss:...kB, ...
// Reading /dev/kmsg needs CAP_SYSLOG or kernel.dmesg_restrict=0; without it the caller says so.
import * as fs from 'node:fs';
import { describeError } from '../core/field';

export interface KernelOomKill {
  /** As the kernel logged it (the host's pid namespace). */
  pid: number;
  /** The task's name (comm, at most 15 characters). */
  comm: string;
  /** The cgroup whose limit was hit (oom_memcg), and the task's own (task_memcg); '' when not logged. */
  memcg: string;
  taskMemcg: string;
  /** Resident bytes at the kill: anon-rss + file-rss + shmem-rss; null when not logged. */
  rss: number | null;
  anonRss: number | null;
  /** True for a kill inside a memory cgroup's limit ("Memory cgroup out of memory"). */
  cgroupLimit: boolean;
}

/** Where reading starts: the sequence number of the last record present, or why the log cannot be read. */
export type KernelLogCursor = { seq: number } | { unreadable: string };

interface KmsgRecord {
  seq: number;
  message: string;
}

function readKmsg(): KmsgRecord[] {
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const records: KmsgRecord[] = [];
  const buffer = Buffer.alloc(16384); // one record per read; longer ones fail with EINVAL
  try {
    for (let reads = 0; reads < 1_000_000; reads++) {
      let length: number;
      try {
        length = fs.readSync(fd, buffer, 0, buffer.length, null);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break; // the end
        if (code === 'EPIPE') continue; // records overwritten while reading: go on from the oldest left
        throw error;
      }
      if (length === 0) break;
      const text = buffer.toString('utf8', 0, length);
      const semicolon = text.indexOf(';');
      const seq = Number(text.slice(0, semicolon).split(',')[1]);
      if (semicolon < 0 || !Number.isFinite(seq)) continue;
      records.push({ seq, message: text.slice(semicolon + 1).split('\n')[0]! });
    }
  } finally {
    fs.closeSync(fd);
  }
  return records;
}

/** Takes the cursor before the run. */
export function kernelLogCursor(): KernelLogCursor {
  try {
    const records = readKmsg();
    return { seq: records.length ? records[records.length - 1]!.seq : -1 };
  } catch (error) {
    return { unreadable: `the kernel log /dev/kmsg could not be read (${describeError(error)})` };
  }
}

const kb = (text: string | undefined): number | null => (text === undefined ? null : Number(text) * 1024);

/** Parses the OOM-kill lines of the kernel log (the "oom-kill:" line and the "Killed process" line). */
export function parseOomKills(messages: string[]): KernelOomKill[] {
  const kills: KernelOomKill[] = [];
  let context: { memcg: string; taskMemcg: string; pid: number } | undefined;
  for (const message of messages) {
    if (message.startsWith('oom-kill:')) {
      const field = (name: string) => new RegExp(`[:,]${name}=([^,]*)`).exec(message)?.[1];
      context = { memcg: field('oom_memcg') ?? '', taskMemcg: field('task_memcg') ?? '', pid: Number(field('pid')) };
      continue;
    }
    const killed = /(Memory cgroup out of memory|Out of memory)[^:]*: Killed process (\d+) \((.*?)\)(.*)$/.exec(
      message,
    );
    if (!killed) continue;
    const pid = Number(killed[2]);
    const rest = killed[4] ?? '';
    const anonRss = kb(/anon-rss:(\d+)kB/.exec(rest)?.[1]);
    const fileRss = kb(/file-rss:(\d+)kB/.exec(rest)?.[1]);
    const shmemRss = kb(/shmem-rss:(\d+)kB/.exec(rest)?.[1]);
    const matching = context && context.pid === pid ? context : undefined;
    kills.push({
      pid,
      comm: killed[3]!,
      memcg: matching?.memcg ?? '',
      taskMemcg: matching?.taskMemcg ?? '',
      rss: anonRss !== null ? anonRss + (fileRss ?? 0) + (shmemRss ?? 0) : null,
      anonRss,
      cgroupLimit: killed[1] === 'Memory cgroup out of memory',
    });
    context = undefined;
  }
  return kills;
}

/** The OOM kills logged since the cursor; an error sentence when the log cannot be read. */
export function oomKillsSince(cursor: KernelLogCursor): KernelOomKill[] | { unreadable: string } {
  if ('unreadable' in cursor) return cursor;
  try {
    return parseOomKills(
      readKmsg()
        .filter((record) => record.seq > cursor.seq)
        .map((record) => record.message),
    );
  } catch (error) {
    return { unreadable: `the kernel log /dev/kmsg could not be read (${describeError(error)})` };
  }
}

/**
 * True when this process sees the host's pid numbers (the kernel logs those): its NSpid line has one
 * entry. In a pid namespace (a container) the logged pids are not ours.
 */
export function inHostPidNamespace(): boolean {
  try {
    const line = /^NSpid:\s+(.*)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    return line === undefined || line.trim().split(/\s+/).length === 1;
  } catch {
    return false;
  }
}
