// clip-load-copy: the checkpoint loaded without mmap: each tensor allocated, then read into. This is the
// path where the seed's 101187584-byte allocation (the token embedding) failed.
import { loadSafetensors } from '../clip/safetensors';
import { catalogEntry } from './catalog';
import type { Scenario } from './scenario';

export const clipLoadCopy: Scenario = {
  ...catalogEntry('clip-load-copy'),
  async run(options) {
    const loaded = loadSafetensors(options.checkpoint, { mode: 'copy' });
    let bytes = 0;
    let largest = { name: '', bytes: 0 };
    for (const tensor of loaded.tensors.values()) {
      bytes += tensor.data.byteLength;
      if (tensor.data.byteLength > largest.bytes) largest = { name: tensor.name, bytes: tensor.data.byteLength };
    }
    return {
      tensors: loaded.tensors.size,
      weightBytes: bytes,
      largestTensor: largest.name,
      largestTensorBytes: largest.bytes,
    };
  },
};
