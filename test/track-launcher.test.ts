// The launcher's process handling: the whole process group killed at the timeout; the record read live.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { traceCommand } from '../src/track/launcher';
import type { AllocationRecord } from '../src/track/record';

const root = path.resolve(__dirname, '..', '..');
// Gone, or a zombie waiting for init to reap it: either way no longer running.
function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const phaseModule = path.join(root, 'dist', 'src', 'core', 'phase.js');

test('at the timeout the whole process group is killed, grandchildren included', async (t) => {
  const run = await traceCommand({
    command: ['sh', '-c', 'sleep 60 & echo "grandchild $!"; wait'],
    timeoutMs: 1500,
    onStdout: () => {},
  });
  t.true(run.timedOut);
  t.deepEqual(run.exit, { code: null, signal: 'SIGKILL' });
  const grandchild = Number(/grandchild (\d+)/.exec(run.stdoutTail)![1]);
  // SIGKILL is sent; the grandchild may still be inside exit for a moment: allowed 2 s to be gone.
  const deadline = Date.now() + 2000;
  while (isRunning(grandchild) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.false(isRunning(grandchild));
  t.truthy(run.record);
});

test('the record is read live while the child runs', async (t) => {
  const seen: AllocationRecord[] = [];
  const run = await traceCommand({
    command: ['node', '-e', `require(${JSON.stringify(phaseModule)}).setPhase('waiting'); setTimeout(() => {}, 1500);`],
    onRecord: (record) => seen.push(record),
    pollMs: 100,
  });
  t.is(run.exit.code, 0);
  const live = seen.filter((record) => record.state === 'running' && record.phases.some((p) => p.label === 'waiting'));
  t.true(live.length > 0);
  t.is(run.record!.state, 'exited');
});
