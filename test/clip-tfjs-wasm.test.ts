// The tfjs CLIP model on the wasm backend against the PyTorch reference, and how the backend is chosen.
import test from 'ava';
import { referenceTests } from './helpers/clip-tfjs-reference';
import { selectTfjsBackend } from '../src/clip/tfjs/backend';

test.serial('the default order skips the tfjs-node packages that are not installed and runs wasm with SIMD', async (t) => {
  const choice = await selectTfjsBackend();
  t.deepEqual(choice, {
    name: 'wasm',
    package: '@tensorflow/tfjs-backend-wasm',
    detail: 'SIMD, single-threaded (tfjs-backend-wasm has no threads in Node), heap at most 4 GiB',
    skipped: [
      { name: 'tensorflow-gpu', reason: '@tensorflow/tfjs-node-gpu is not installed' },
      { name: 'tensorflow', reason: '@tensorflow/tfjs-node is not installed' },
    ],
  });
});

referenceTests(test, 'wasm');
