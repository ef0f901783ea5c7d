// The disk the record files hold during a run. A record reserves its whole size when its process starts
// (so that a full filesystem refuses it then, instead of killing the program with SIGBUS at a later write);
// once the process is gone, what it never wrote is given back. A loop of short processes then holds a few
// pages per process, not 4 MiB each.
import * as fs from 'node:fs';
import { listRecords, releaseRecordSpace } from './record';
import { isAlive } from './stale';

export class RecordSpace {
  private readonly held = new Map<string, number>();
  private readonly released = new Set<string>();
  private total = 0;
  /** The most the record files held at once (allocated bytes on disk). */
  peak = 0;

  constructor(private readonly dir: string) {}

  /** Notes new records, and gives back the unwritten blocks of those whose process has ended or exec'd. */
  pass(): void {
    let entries: ReturnType<typeof listRecords>;
    try {
      entries = listRecords(this.dir);
    } catch {
      return;
    }
    const lastGeneration = new Map<number, number>();
    for (const entry of entries) lastGeneration.set(entry.pid, entry.generation);
    for (const entry of entries) {
      if (this.released.has(entry.file)) continue;
      // Read again until released: a record being made may not have its blocks yet.
      this.hold(entry.file, allocatedBytes(entry.file));
      this.peak = Math.max(this.peak, this.total);
      // An earlier generation's image is gone (it exec'd, or the pid was reused); a pid still alive may
      // be a zombie whose record is done, but waiting for its parent to reap it is harmless.
      if (entry.generation < lastGeneration.get(entry.pid)! || !isAlive(entry.pid)) {
        this.released.add(entry.file);
        this.hold(entry.file, releaseRecordSpace(entry.file));
      }
    }
  }

  private hold(file: string, bytes: number): void {
    this.total += bytes - (this.held.get(file) ?? 0);
    this.held.set(file, bytes);
  }
}

function allocatedBytes(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}
