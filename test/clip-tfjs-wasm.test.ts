// The tfjs CLIP model on the wasm backend against the PyTorch reference; how the backend is chosen; the
// wasm heap's 4 GiB limit and the address space wasm needs, each named when hit.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { AdamW } from '../src/clip/tfjs/adamw';
import { TfjsMemoryError, selectTfjsBackend } from '../src/clip/tfjs/backend';
import { ClipTfjs } from '../src/clip/tfjs/model';
import { referenceBatch, referenceConfig, referenceTests, referenceWeights } from './helpers/clip-tfjs-reference';
import { requireProgram } from './helpers/require-program';

test.serial('the default order skips the tfjs-node packages that do not load and runs wasm with SIMD', async (t) => {
  const choice = await selectTfjsBackend();
  t.is(choice.name, 'wasm');
  t.is(choice.package, '@tensorflow/tfjs-backend-wasm');
  t.is(choice.detail, 'SIMD, single-threaded (tfjs-backend-wasm has no threads in Node), heap at most 4 GiB');
  t.deepEqual(
    choice.skipped.map((s) => s.name),
    ['tensorflow-gpu', 'tensorflow'],
  );
  // npm drops them when their install script cannot fetch libtensorflow; with --ignore-scripts they stay, unbuilt.
  t.regex(choice.skipped[0].reason, /^@tensorflow\/tfjs-node-gpu (is not installed$|failed to load: )/);
  t.regex(choice.skipped[1].reason, /^@tensorflow\/tfjs-node (is not installed$|failed to load: )/);
});

referenceTests(test, 'wasm');

test.serial('under ulimit -v 6 GiB wasm cannot reserve its memory: the choice falls back to cpu and says why', (t) => {
  requireProgram(t, 'prlimit', 'apt-get install util-linux');
  const backendModule = path.resolve(__dirname, '..', 'src', 'clip', 'tfjs', 'backend.js');
  const script = `require(${JSON.stringify(backendModule)}).selectTfjsBackend().then((c) => process.stdout.write(JSON.stringify(c)))`;
  const output = execFileSync('prlimit', [`--as=${6 * 2 ** 30}`, process.execPath, '-e', script], { encoding: 'utf8' });
  const choice = JSON.parse(output);
  t.is(choice.name, 'cpu');
  t.is(choice.skipped[2].name, 'wasm');
  t.is(
    choice.skipped[2].reason,
    'no address space for WebAssembly memory (WebAssembly.Memory(): could not allocate memory): V8 reserves about ' +
      '10 GiB of virtual address space for each wasm memory, so the wasm backend needs RLIMIT_AS (ulimit -v) of more than ~10.5 GiB',
  );
});

test.serial(
  'AdamW updates in place in the wasm heap: no tf op at all, only the moments are allocated, once',
  async (t) => {
    const initial = tf.tensor1d([1, -2, 3]);
    const parameter = tf.variable(initial);
    initial.dispose();
    const optimizer = new AdamW({ lr: 0.1 });
    const step = (gradient: number[]) =>
      tf.profile(() => void optimizer.step([{ name: 'p', parameter, gradient: tf.tensor1d(gradient) }]));
    const first = await step([0.5, 0.5, -1]);
    t.deepEqual(
      first.kernels.map((k) => k.name),
      ['ZerosLike', 'ZerosLike'],
    );
    t.is(first.newTensors, 2); // the moments; the gradient is freed after its update
    // PyTorch's first AdamW step: p * (1 - lr * wd) - lr * g / (|g| + eps)
    t.deepEqual(
      [...parameter.dataSync()].map((v) => v.toFixed(6)),
      ['0.899000', '-2.098000', '3.097000'],
    );
    const second = await step([0.5, 0.5, -1]);
    t.deepEqual(second.kernels, []);
    t.is(second.newTensors, 0);
    t.is(optimizer.stateBytes, 24);
    optimizer.dispose();
    parameter.dispose();
    t.is(tf.memory().numTensors, 0);
  },
);

test.serial(
  'a batch too large for the 4 GiB wasm heap is a TfjsMemoryError naming the limit, and the model keeps working',
  async (t) => {
    const model = await ClipTfjs.create(referenceWeights(), referenceConfig, { backends: ['wasm'] });
    const before = model.embedTexts(referenceBatch.texts);
    const count = 2_200_000; // its token embeddings alone: 2.2M x 16 tokens x 32 floats = 4,505,600,000 bytes
    const error = t.throws(() => model.embedTexts({ data: new Int32Array(count * 16), shape: [count, 16] }), {
      instanceOf: TfjsMemoryError,
    });
    t.is(error?.failure, 'wasm-heap');
    t.is(error?.diagnosisCause, 'js-heap');
    t.is(error?.requestedBytes, 4_505_600_000);
    t.regex(
      error?.message ?? '',
      /^the tfjs wasm heap cannot grow to allocate 4505600000 bytes \(4\.20 GiB\) for a tensor: wasm32 memory stops at 4 GiB/,
    );
    t.deepEqual(model.embedTexts(referenceBatch.texts), before);
    t.is(tf.memory().numTensors, model.parameterNames.length, 'nothing of the failed pass is left');
    model.dispose();
  },
);
