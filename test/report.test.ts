import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { renderHtml } from '../src/report/html';
import { renderMarkdown } from '../src/report/markdown';
import { readResults, ResultWriter } from '../src/report/result';
import { renderTerminal } from '../src/report/terminal';
import { sampleResults } from './helpers/run-results';

const bin = path.resolve(__dirname, '..', '..', 'bin', 'clip-mem.js');

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-report-'));
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
  t.deepEqual(partial.scenarios.map((s) => s.name), ['basic-ops', 'clip-load-copy']);
  fs.writeFileSync(file, '{"kind":"run","schema":"clip-mem-run/0"}\n');
  t.throws(() => readResults(file), { message: /run\.json:1: schema is "clip-mem-run\/0", this clip-mem reads clip-mem-run\/1/ });
});

test('terminal report: passing and failing lines with exact bytes, cause, evidence and fix', (t) => {
  const { header, scenarios } = sampleResults();
  const text = renderTerminal(header, scenarios);
  t.regex(text, /PASS basic-ops .*0\.90 s {2}RSS peak {4}75 MiB {2}increase {4}10 MiB {2}VmSize peak {3}920 MiB/);
  t.regex(text, /FAIL clip-load-copy/);
  t.regex(text, /malloc\(101,187,584 B \(97 MiB\)\) failed with ENOMEM during "load text_model\.embeddings\.token_embedding\.weight"/);
  t.regex(text, /cause: address-space\n {9}VmSize 1\.22 GiB \+ 96\.5 MiB > RLIMIT_AS 1\.27 GiB/);
  t.regex(text, /fix: load by mmap/);
  t.regex(text, /1 passed, 1 failed\n$/);
});

test('Markdown report: the seed structure, with the memory analysis table', (t) => {
  const md = renderMarkdown(sampleResults());
  const headings = md.split('\n').filter((l) => l.startsWith('## '));
  t.deepEqual(headings, ['## Summary', '## Environment', '## Scenarios', '## Memory analysis', '## Reproducible commands', '## Recommendations']);
  t.regex(md, /1 of 2 scenarios passed/);
  t.regex(md, /\| clip-load-copy \| address space \(RLIMIT_AS\) \| 1,411,907,584 B \(1\.31 GiB\) \| 1,363,148,800 B \(1\.27 GiB\) \| 48,758,784 B \(47 MiB\) \|/);
  t.regex(md, /clip-mem run clip-load-copy --limit-as 1300M/);
  t.regex(md, /- \*\*clip-load-copy\*\* \(load-path\): load by mmap/);
});

test('HTML report: self-contained, and headless Chromium renders each timeline with the failure marked', (t) => {
  const dir = tempDir();
  const html = renderHtml(sampleResults());
  t.notRegex(html, /<script|<link|src=|url\(/, 'no external resource and no script');
  const file = path.join(dir, 'report.html');
  fs.writeFileSync(file, html);
  const chromium = (extra: string[]) =>
    spawnSync('chromium', [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${fs.mkdtempSync(path.join(dir, 'profile-'))}`, ...extra, `file://${file}`,
    ], { encoding: 'utf8', timeout: 120_000 });
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
  const lenient = spawnSync(process.execPath, [bin, 'compare', base, worse, '--max-growth', '15%', '--json'], { encoding: 'utf8' });
  t.is(lenient.status, 0);
  t.deepEqual(JSON.parse(lenient.stdout).regressions, []);
});
