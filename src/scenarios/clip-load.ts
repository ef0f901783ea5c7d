// clip-load: the checkpoint loaded by mmap, tensors as zero-copy views over a read-only file mapping
// (safetensors' way). The mapping's length is the file's: under RLIMIT_AS it must fit whole.
import { loadSafetensors } from '../clip/safetensors';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const clipLoad: Scenario = {
  ...catalogEntry('clip-load'),
  async run(options) {
    const loaded = loadSafetensors(options.checkpoint, { mode: 'mmap' });
    let bytes = 0;
    for (const tensor of loaded.tensors.values()) bytes += tensor.data.byteLength;
    const figures = {
      tensors: loaded.tensors.size,
      weightBytes: bytes,
      copiedForAlignment: loaded.copiedForAlignment.length,
    };
    loaded.close();
    return figures;
  },
};
