// Runs many clip-mem command lines in one Node process, as bin/clip-mem.js would run each (same main(), same
// error printing), so that a test can check hundreds of them without a 0.3 s start per spawn.
//
//   runCliBatch(cases, { env }) -> one CliResult per case, from a child `node cli-batch.js CASES RESULTS`
//
// In the child, process.exit throws (the case ends there, with that status), standard output and error are
// captured per case, and a case that has not ended after its timeout is reported as hung.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot } from './paths';

export interface CliCase {
  argv: string[];
  /** Working directory of the case (outputs named relative to it land there). */
  cwd?: string;
}

export interface CliResult {
  argv: string[];
  status: number;
  stdout: string;
  stderr: string;
  ms: number;
  hung: boolean;
}

class Exit extends Error {
  constructor(readonly code: number) {
    super(`process.exit(${code})`);
  }
}

/** Runs `cases` in a child process; each case gets `caseTimeoutMs` before it counts as hung. */
export function runCliBatch(
  cases: CliCase[],
  options: { env?: NodeJS.ProcessEnv; caseTimeoutMs?: number; timeoutMs?: number } = {},
): CliResult[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-mem-cli-batch-'));
  try {
    const input = path.join(dir, 'cases.json');
    const output = path.join(dir, 'results.json');
    fs.writeFileSync(input, JSON.stringify({ cases, caseTimeoutMs: options.caseTimeoutMs ?? 20_000 }));
    const child = spawnSync(process.execPath, [__filename, input, output], {
      encoding: 'utf8',
      env: options.env ?? process.env,
      timeout: options.timeoutMs ?? 300_000,
    });
    if (!fs.existsSync(output))
      throw new Error(
        `the batch child ended (status ${child.status}, signal ${child.signal}) without results:\n${child.stdout}${child.stderr}`,
      );
    return JSON.parse(fs.readFileSync(output, 'utf8')) as CliResult[];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function runCase(
  main: (argv: string[]) => Promise<void>,
  c: CliCase,
  caseTimeoutMs: number,
  uncaught: { error?: unknown },
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  const exit = process.exit;
  const cwd = process.cwd();
  const started = Date.now();
  process.stdout.write = ((chunk: unknown) => ((stdout += String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown) => ((stderr += String(chunk)), true)) as typeof process.stderr.write;
  process.exit = ((code?: number) => {
    throw new Exit(code ?? Number(process.exitCode ?? 0));
  }) as typeof process.exit;
  process.exitCode = undefined;
  if (c.cwd) process.chdir(c.cwd);
  let status: number;
  let hung = false;
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), caseTimeoutMs)));
    const ended = await Promise.race([main(c.argv).then(() => 'ended' as const), timeout]);
    hung = ended === 'hung';
    status = hung ? -1 : Number(process.exitCode ?? 0);
  } catch (error) {
    if (error instanceof Exit) status = error.code;
    else {
      // What bin/clip-mem.js does with an error main() throws.
      const e = error as Error;
      stderr += `clip-mem: ${e && e.message ? e.message : String(error)}\n`;
      status = Number(process.exitCode || 1);
    }
  } finally {
    clearTimeout(timer);
    process.stdout.write = out;
    process.stderr.write = err;
    process.exit = exit;
    process.exitCode = undefined;
    process.chdir(cwd);
  }
  if (uncaught.error !== undefined) {
    const e = uncaught.error as Error;
    stderr += `UNCAUGHT: ${e && e.stack ? e.stack : String(e)}\n`;
    uncaught.error = undefined;
    if (!(e instanceof Exit)) status = 1;
  }
  return { argv: c.argv, status, stdout, stderr, ms: Date.now() - started, hung };
}

async function child(input: string, output: string): Promise<void> {
  const { cases, caseTimeoutMs } = JSON.parse(fs.readFileSync(input, 'utf8')) as {
    cases: CliCase[];
    caseTimeoutMs: number;
  };
  const uncaught: { error?: unknown } = {};
  process.on('uncaughtException', (error) => (uncaught.error = error));
  process.on('unhandledRejection', (error) => (uncaught.error = error));
  const { main } = require(path.join(repoRoot, 'dist', 'src', 'cli', 'main.js')) as {
    main: (argv: string[]) => Promise<void>;
  };
  const results: CliResult[] = [];
  for (const c of cases) results.push(await runCase(main, c, caseTimeoutMs, uncaught));
  fs.writeFileSync(output, JSON.stringify(results));
  process.exit(0);
}

if (require.main === module) {
  void child(process.argv[2]!, process.argv[3]!);
}
