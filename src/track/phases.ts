// Phase labels of a record: which label was in force at a phase index. Pure, so the diagnosis can use it.
import type { AllocationRecord } from './record';

/**
 * The label in force at `index`: the latest phase marker at or before it. The record keeps the latest
 * markers only, so the exact index may be gone while an earlier marker still says what was running.
 */
export function phaseLabel(record: Pick<AllocationRecord, 'phases'>, index: number): string {
  return record.phases.filter((p) => p.index <= index).pop()?.label ?? '';
}
