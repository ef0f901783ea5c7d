import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { renderHtml } from '../src/report/html';
import { renderMarkdown } from '../src/report/markdown';
import { readResults, ResultWriter } from '../src/report/result';
import { renderTerminal, seconds } from '../src/report/terminal';
import { formatBytes } from '../src/core/units';
import sharp from 'sharp';
import { sampleResults } from './helpers/run-results';
import { scratchDir } from './helpers/scratch';
import { requireProgram } from './helpers/require-program';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');

function tempDir(): string {
  return scratchDir('clip-mem-report-');
}

function writeResults(file: string, results = sampleResults(), finished = true): void {
  const writer = new ResultWriter(file, results.header);
  for (const s of results.scenarios) writer.append(s);
  if (finished) writer.close(results.end!);
}

test('the JSONL round-trips, and a killed run (no end line, a torn last line) keeps its finished scenarios', (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'run.json');
  writeResults(file);
  t.deepEqual(readResults(file), sampleResults());
  writeResults(file, sampleResults(), false);
  fs.appendFileSync(file, '{"kind":"scenario","schema":"clip-mem-run/1","na');
  const partial = readResults(file);
  t.is(partial.end, null);
  t.deepEqual(
    partial.scenarios.map((s) => s.name),
    ['basic-ops', 'clip-load-copy'],
  );
  fs.writeFileSync(file, '{"kind":"run","schema":"clip-mem-run/0"}\n');
  t.throws(() => readResults(file), {
    message: /run\.json:1: schema is "clip-mem-run\/0", this clip-mem reads clip-mem-run\/1/,
  });
});

test('terminal report: passing and failing lines with exact bytes, cause, evidence and fix', (t) => {
  const { header, scenarios } = sampleResults();
  const text = renderTerminal(header, scenarios);
  t.regex(text, /PASS basic-ops .*0\.90 s {2}RSS peak {4}75 MiB {2}increase {4}10 MiB {2}VmSize peak {3}920 MiB/);
  t.regex(text, /FAIL clip-load-copy/);
  t.regex(
    text,
    /malloc\(101,187,584 B \(97 MiB\)\) failed with ENOMEM during "load text_model\.embeddings\.token_embedding\.weight"/,
  );
  t.regex(text, /cause: address-space\n {9}VmSize 1\.22 GiB \+ 96\.5 MiB > RLIMIT_AS 1\.27 GiB/);
  t.regex(text, /fix: load by mmap/);
  t.regex(text, /1 passed, 1 failed\n$/);
});

test('report headers give --large-batch where the large-batch scenario ran, and only there', (t) => {
  const { header, scenarios } = sampleResults();
  t.regex(renderTerminal(header, scenarios), /^clip-mem run: vit-b-32 fp32, batch 2, backend onnxruntime,/);
  const withLarge = { ...header, options: { ...header.options, scenarios: ['clip-forward', 'large-batch'] } };
  const results = { header: withLarge, scenarios, end: null };
  t.regex(
    renderTerminal(withLarge, scenarios),
    /^clip-mem run: vit-b-32 fp32, batch 2, large batch 32, backend onnxruntime,/,
  );
  t.regex(renderMarkdown(results), /fp32, batch 2, large batch 32, backend onnxruntime/);
  t.regex(renderHtml(results), /fp32, batch 2, large batch 32, backend onnxruntime/);
});

test('terminal report: a pass that survived refused allocations says so, and which runtime it ran on', (t) => {
  const { header, scenarios } = sampleResults();
  const refused =
    'VmSize 1.04 GiB + 10.00 GiB > RLIMIT_AS 1.27 GiB: mmap64 of a read-only anonymous mapping, 10737479680 bytes (10.00 GiB) needs address space the limit does not leave';
  const survived = {
    ...scenarios[0],
    failureCount: 30,
    figures: { backend: 'cpu' },
    diagnosis: { cause: 'none' as const, evidence: [refused, '30 allocations failed in all'] },
  };
  const text = renderTerminal(header, [survived]);
  t.true(
    text.includes(
      `  [tfjs cpu]\n       fits: VmSize peak 920 MiB of address space (RLIMIT_AS) 1.27 GiB\n       recovered from 30 refused allocation(s), and ran on tfjs cpu; the first:\n         ${refused}\n\n`,
    ),
    text,
  );
});

test('Markdown report: the seed structure, with the memory analysis table', (t) => {
  const md = renderMarkdown(sampleResults());
  const headings = md.split('\n').filter((l) => l.startsWith('## '));
  t.deepEqual(headings, [
    '## Summary',
    '## Environment',
    '## Scenarios',
    '## Memory analysis',
    '## Reproducible commands',
    '## Recommendations',
  ]);
  t.regex(md, /1 of 2 scenarios passed/);
  t.regex(
    md,
    /\| clip-load-copy \| address space \(RLIMIT_AS\) \| 1,411,907,584 B \(1\.31 GiB\) \| 1,363,148,800 B \(1\.27 GiB\) \| 48,758,784 B \(47 MiB\) \|/,
  );
  t.regex(md, /clip-mem run clip-load-copy --limit-as 1300M/);
  t.regex(md, /- \*\*clip-load-copy\*\* \(load-path\): load by mmap/);
});

test('HTML report: self-contained, and headless Chromium renders each timeline with the failure marked', (t) => {
  requireProgram(t, 'chromium', 'apt-get install chromium');
  const dir = tempDir();
  const html = renderHtml(sampleResults());
  t.notRegex(html, /<script|<link|src=|url\(/, 'no external resource and no script');
  const file = path.join(dir, 'report.html');
  fs.writeFileSync(file, html);
  const chromium = (extra: string[]) =>
    spawnSync(
      'chromium',
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${fs.mkdtempSync(path.join(dir, 'profile-'))}`,
        ...extra,
        `file://${file}`,
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
  const dom = chromium(['--dump-dom']);
  t.is(dom.status, 0, dom.stderr);
  t.is((dom.stdout.match(/<svg /g) ?? []).length, 2, 'one timeline per scenario');
  t.is((dom.stdout.match(/class="series-rss"/g) ?? []).length, 2);
  t.is((dom.stdout.match(/class="failure"/g) ?? []).length, 1, 'the failure is marked once, on clip-load-copy');
  t.regex(dom.stdout, /malloc\(97 MiB\) failed/);
  t.regex(dom.stdout, /RLIMIT_AS 1\.27 GiB/);
  const png = path.join(dir, 'report.png');
  const shot = chromium([`--screenshot=${png}`, '--window-size=1000,1400']);
  t.is(shot.status, 0, shot.stderr);
  t.deepEqual([...fs.readFileSync(png).subarray(1, 4)], [...Buffer.from('PNG')]);
});

/** Headless Debian chromium on a file, with a new empty profile each time. */
function chromium(file: string, extra: string[]) {
  return spawnSync(
    'chromium',
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${scratchDir('clip-mem-chromium-')}`,
      ...extra,
      `file://${file}`,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
}

test('HTML of a real tiny run, one scenario failing under RLIMIT_AS: Chromium shows a timeline per scenario, the failure marked on it, the measured figures', async (t) => {
  requireProgram(t, 'chromium', 'apt-get install chromium');
  const dir = tempDir();
  const json = path.join(dir, 'run.json');
  const file = path.join(dir, 'run.html');
  // tiny's load and batch-2 forward peak near 1.2 GiB of VmSize; its forward at batch 4096 near 2.2 GiB.
  const run = spawnSync(
    process.execPath,
    [
      bin,
      'run',
      'clip-load',
      'clip-forward',
      'large-batch',
      '--model',
      'tiny',
      '--large-batch',
      '4096',
      '--limit-as',
      '1700M',
      '--json',
      json,
      '--html',
      file,
    ],
    { encoding: 'utf8', timeout: 600_000 },
  );
  t.is(run.status, 1, run.stdout + run.stderr);
  const results = readResults(json);
  t.deepEqual(
    results.scenarios.map((s) => `${s.name} ${s.status}`),
    ['clip-load passed', 'clip-forward passed', 'large-batch failed'],
  );
  const failed = results.scenarios[2];
  t.is(failed.diagnosis.cause, 'address-space');

  const dom = chromium(file, ['--dump-dom']);
  t.is(dom.status, 0, dom.stderr);
  const sections = [
    ...dom.stdout.matchAll(/<section class="scenario (\w+)" id="scenario-([\w-]+)">([^]*?)<\/section>/g),
  ];
  t.deepEqual(
    sections.map((m) => `${m[2]} ${m[1]}`),
    ['clip-load passed', 'clip-forward passed', 'large-batch failed'],
  );
  for (const [, , name, body] of sections) {
    t.is((body.match(/<svg /g) ?? []).length, 1, `one timeline for ${name}`);
    const samples = results.scenarios.find((s) => s.name === name)!.timeline.length;
    t.is(
      /class="series-rss"[^>]* points="([^"]*)"/.exec(body)![1].split(' ').length,
      samples,
      `every RSS sample of ${name} is drawn`,
    );
    t.regex(body, /RLIMIT_AS 1\.66 GiB/);
    t.is(
      (body.match(/class="failure"/g) ?? []).length,
      name === 'large-batch' ? 1 : 0,
      `the failure is marked on ${name} only`,
    );
  }
  const large = sections[2][3];
  t.true(large.includes(`${failed.failure!.fn}(${formatBytes(failed.failure!.size)}) failed`));
  // The marker sits where the failed request would have taken VmSize: above the limit line, inside the plot.
  const limitY = Number(/class="limit"[^>]* y1="([\d.]+)"/.exec(large)![1]);
  const point = /class="failure-point" cx="([\d.]+)" cy="([\d.]+)"/.exec(large)!;
  t.true(Number(point[2]) <= limitY && Number(point[2]) >= 16, `${point[2]} vs the limit at ${limitY}`);
  // The figures a person reads: the summary row and the scenario table, as measured.
  t.regex(
    dom.stdout,
    new RegExp(
      `scenario-large-batch">large-batch</a></td><td>failed</td><td>${seconds(failed.wallMs)}</td><td>${formatBytes(failed.memory.rssPeak!)}</td><td>${formatBytes(failed.memory.vmSizePeak!).replace('.', '\\.')}</td><td>address-space</td>`,
    ),
  );
  t.true(
    large.includes(
      `VmSize ${formatBytes(failed.failure!.vmSize!)} + ${formatBytes(failed.failure!.size)} &gt; RLIMIT_AS 1.66 GiB`,
    ),
  );
  t.true(
    large.includes(
      '<pre>clip-mem run large-batch --model tiny --dtype fp32 --batch 2 --large-batch 4096 --backend auto --threads ',
    ),
  );
  t.regex(large, /--limit-as 1700M<\/pre>/, 'the limit as it was typed');

  // The screenshot shows the series and the red failure line (colours of the SVG, counted in the pixels).
  const png = path.join(dir, 'run.png');
  const shot = chromium(file, [`--screenshot=${png}`, '--window-size=1000,2600']);
  t.is(shot.status, 0, shot.stderr);
  const { data } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const count = (r: number, g: number, b: number) => {
    let n = 0;
    for (let i = 0; i < data.length; i += 3)
      if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 30) n++;
    return n;
  };
  t.true(count(0x1f, 0x77, 0xb4) > 500, 'RSS lines drawn');
  t.true(count(0xff, 0x7f, 0x0e) > 500, 'VmSize lines drawn');
  t.true(count(0xd6, 0x27, 0x28) > 300, 'limit lines and the failure marker drawn in red');
});

test('compare: an identical rerun passes, a 10% regression of one figure fails with exit 1', (t) => {
  const dir = tempDir();
  const base = path.join(dir, 'base.json');
  const same = path.join(dir, 'same.json');
  const worse = path.join(dir, 'worse.json');
  writeResults(base);
  writeResults(same);
  const regressed = sampleResults();
  regressed.scenarios[0].memory.rssPeak = Math.round(regressed.scenarios[0].memory.rssPeak! * 1.1);
  writeResults(worse, regressed);
  const ok = spawnSync(process.execPath, [bin, 'compare', base, same, '--max-growth', '5%'], { encoding: 'utf8' });
  t.is(ok.status, 0, ok.stdout + ok.stderr);
  t.regex(ok.stdout, /OK: no figure grew more than 5\.0%/);
  const bad = spawnSync(process.execPath, [bin, 'compare', base, worse, '--max-growth', '5%'], { encoding: 'utf8' });
  t.is(bad.status, 1, bad.stdout + bad.stderr);
  t.regex(bad.stdout, /basic-ops +rssPeak +75 MiB +83 MiB +\+10\.0% +REGRESSION/);
  t.regex(bad.stdout, /FAIL: 1 regression\(s\) past 5\.0%/);
  const lenient = spawnSync(process.execPath, [bin, 'compare', base, worse, '--max-growth', '15%', '--json'], {
    encoding: 'utf8',
  });
  t.is(lenient.status, 0);
  t.deepEqual(JSON.parse(lenient.stdout).regressions, []);
});
