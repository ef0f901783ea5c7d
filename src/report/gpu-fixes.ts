// Fixes for a gpu-memory diagnosis, each from the device's figures at the failure: what the culprit
// (diagnose/gpu.ts) says would make room. Used by `trace` (trace-report.ts) and by `run`'s fixes
// (fixes.ts); kept apart from fixes.ts so that the trace report does not depend on the scenario results.
import type { GpuDiagnosis } from '../diagnose';
import { formatBytes } from '../core/units';

export interface GpuFix {
  /** batch, dtype, allocator-config, free-gpu, memory-fraction. */
  kind: string;
  text: string;
  command?: string;
}

/** `command`: the program's command line as a shell takes it (quoted where needed). */
export function gpuFixes(g: GpuDiagnosis, command: string): GpuFix[] {
  const gpu = g.device === null ? 'the GPU' : `GPU ${g.device}`;
  const lacking = g.totalBytes !== null && g.usedBytes !== null ? g.usedBytes + g.requestedBytes - g.totalBytes : null;
  const need = lacking !== null && lacking > 0 ? `${formatBytes(lacking)} less` : 'less';
  switch (g.culprit) {
    case 'fragmentation':
      return [
        {
          kind: 'allocator-config',
          text:
            `PyTorch's cache holds ${formatBytes(g.framework!.reservedUnallocatedBytes!)} reserved but unallocated, in blocks ` +
            `too small for ${formatBytes(g.requestedBytes)}: expandable segments let it grow blocks instead of splitting them`,
          command: `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ${command}`,
        },
      ];
    case 'framework-limit':
      return [
        {
          kind: 'memory-fraction',
          text:
            `torch.cuda.set_per_process_memory_fraction allows ${formatBytes(g.framework!.allowedBytes!)}: raise the ` +
            `fraction (or remove the call) to let the ${formatBytes(g.requestedBytes)} request reach the device`,
        },
      ];
    case 'other-processes':
      return [
        {
          kind: 'free-gpu',
          text: `free ${gpu}: ${g.otherProcesses
            .map(
              (p) =>
                `pid ${p.pid}${p.name ? ` (${p.name})` : ''} holds ${p.bytes === null ? 'an unknown amount' : formatBytes(p.bytes)}`,
            )
            .join(', ')}; stop it, or run on another GPU (CUDA_VISIBLE_DEVICES)`,
        },
      ];
    case 'own-use': {
      const holds = g.processBytes !== null ? `this process holds ${formatBytes(g.processBytes)} of ${gpu}; ` : '';
      return [
        {
          kind: 'batch',
          text: `a smaller batch: ${holds}the run needs ${need} on ${gpu}, and activations grow with the batch`,
        },
        {
          kind: 'dtype',
          text:
            'float16 or bfloat16 weights and activations take half the bytes of float32 ' +
            '(model.half(), or torch.autocast(device_type="cuda", dtype=torch.bfloat16))' +
            (g.processBytes !== null ? `: up to ${formatBytes(g.processBytes / 2)} of ${gpu} back` : ''),
        },
      ];
    }
  }
}
