// `trace --trace-events FILE`: the run as a Chrome trace / Perfetto JSON (the Trace Event Format's JSON
// object form), which chrome://tracing and ui.perfetto.dev open: a track per process named by its command
// line, counters for its RSS, VmSize and heap, the tree's summed RSS, a slice for its life and one per
// phase, and instants for its failed allocations and its kill.
import type { TraceReport } from './trace-report';

/** One event; `ts` and `dur` in microseconds since the run started. */
export interface TraceEvent {
  name: string;
  cat?: string;
  ph: 'M' | 'C' | 'X' | 'i';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  /** Instants: 'p', drawn across the process's track. */
  s?: 'p';
  args?: Record<string, string | number>;
}

export interface TraceEventFile {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms';
  otherData: Record<string, string>;
}

const us = (ms: number) => Math.round(ms * 1000);

export function traceEvents(report: TraceReport): TraceEventFile {
  const events: TraceEvent[] = [];
  for (const p of report.processes) {
    const at = { pid: p.pid, tid: p.pid };
    const label = `${p.command ?? p.exe} (pid ${p.pid})`;
    events.push({ name: 'process_name', ph: 'M', ts: 0, ...at, args: { name: label } });
    events.push({ name: 'thread_name', ph: 'M', ts: 0, ...at, args: { name: p.exe } });
    if (p.startMs !== null && p.endMs !== null)
      events.push({
        name: p.command ?? p.exe,
        cat: 'process',
        ph: 'X',
        ts: us(p.startMs),
        dur: Math.max(0, us(p.endMs - p.startMs)),
        ...at,
        args: { ending: p.ending.text, evidence: p.ending.evidence },
      });
    for (const sample of p.timeline) {
      const counter = (name: string, value: number | null) => {
        if (value !== null)
          events.push({ name, cat: 'memory', ph: 'C', ts: us(sample.tMs), ...at, args: { bytes: value } });
      };
      counter('RSS', sample.rss);
      counter('VmSize', sample.vmSize);
      counter('heap', sample.heap);
    }
    // Phases: from a sample whose label changed to the next change, or the process's end.
    const labelled = p.timeline.filter((s) => s.phase !== null);
    labelled.forEach((sample, i) => {
      if (!sample.phase || (i > 0 && labelled[i - 1]!.phase === sample.phase)) return;
      const next = labelled.slice(i + 1).find((s) => s.phase !== sample.phase);
      const end = next?.tMs ?? p.endMs ?? sample.tMs;
      events.push({
        name: sample.phase,
        cat: 'phase',
        ph: 'X',
        ts: us(sample.tMs),
        dur: Math.max(0, us(end - sample.tMs)),
        ...at,
      });
    });
    for (const f of p.latestFailures)
      events.push({
        name: `${f.fn} of ${f.size} bytes failed: ${f.errnoName}`,
        cat: 'failure',
        ph: 'i',
        s: 'p',
        ts: us(f.tMs),
        ...at,
        args: { fn: f.fn, size: f.size, errno: f.errnoName },
      });
    if (p.ending.how === 'killed' && p.endMs !== null)
      events.push({
        name: p.ending.text,
        cat: 'kill',
        ph: 'i',
        s: 'p',
        ts: us(p.endMs),
        ...at,
        args: { signal: p.ending.signal ?? '', by: p.ending.by ?? 'not known', evidence: p.ending.evidence },
      });
  }
  for (const sample of report.tree.timeline)
    events.push({
      name: 'tree RSS (summed)',
      cat: 'memory',
      ph: 'C',
      ts: us(sample.tMs),
      pid: report.pid,
      tid: report.pid,
      args: { bytes: sample.rss },
    });
  return {
    traceEvents: events,
    displayTimeUnit: 'ms',
    otherData: { command: report.command.join(' '), ending: report.ending, diagnosis: report.diagnosis.cause },
  };
}
