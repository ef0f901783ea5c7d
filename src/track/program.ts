// What a command really runs, so that a program the interposer could not enter is named as such: a
// static binary (no ELF interpreter, so LD_PRELOAD is never read) or a script whose interpreter is one.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ProgramKind {
  /** The file executed after following PATH and #! lines. */
  file: string;
  kind: 'dynamic' | 'static' | 'not-elf' | 'not-found';
  /**
   * The address space exec maps before the program's first instruction: its PT_LOAD segments and, for a
   * dynamic program, its interpreter's (ld.so), page-rounded. Under an RLIMIT_AS below it the kernel kills
   * the new image with SIGSEGV; undefined when not known (not ELF, unreadable).
   */
  imageBytes?: number;
}

function findInPath(command: string): string | undefined {
  if (command.includes('/')) return fs.existsSync(command) ? path.resolve(command) : undefined;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir || '.', command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

interface ProgramHeader {
  type: number;
  offset: number;
  vaddr: bigint;
  fileSize: number;
  memorySize: number;
}

/** The program headers of an ELF file from its first bytes; undefined if not ELF or cut short. */
function programHeaders(bytes: Buffer): ProgramHeader[] | undefined {
  if (bytes.length < 52 || bytes.readUInt32BE(0) !== 0x7f454c46) return undefined;
  const is64 = bytes[4] === 2;
  const little = bytes[5] === 1;
  const u16 = (at: number) => (little ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at));
  const u32 = (at: number) => (little ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at));
  const u64 = (at: number) => (little ? bytes.readBigUInt64LE(at) : bytes.readBigUInt64BE(at));
  const phoff = is64 ? Number(u64(32)) : u32(28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  const headers: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + (is64 ? 24 : 12) > bytes.length) return undefined;
    headers.push(
      is64
        ? {
            type: u32(at),
            offset: Number(u64(at + 8)),
            vaddr: u64(at + 16),
            fileSize: Number(u64(at + 32)),
            memorySize: Number(u64(at + 40)),
          }
        : {
            type: u32(at),
            offset: u32(at + 4),
            vaddr: BigInt(u32(at + 8)),
            fileSize: u32(at + 16),
            memorySize: u32(at + 20),
          },
    );
  }
  return headers;
}

/** True if an ELF file has a PT_INTERP program header (it is dynamically linked). */
export function elfHasInterpreter(bytes: Buffer): boolean | undefined {
  const headers = programHeaders(bytes);
  return headers && headers.some((header) => header.type === 3); // PT_INTERP
}

/**
 * The lowest PT_LOAD address of an ELF file, page-aligned: a run-time address minus the load base
 * (dladdr's dli_fbase) plus this is the address addr2line wants (0 for shared objects and PIE).
 */
export function elfLoadAddress(file: string): bigint {
  const head = Buffer.alloc(4096);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  const loads = (programHeaders(head) ?? []).filter((header) => header.type === 1); // PT_LOAD
  if (!loads.length) return 0n;
  const lowest = loads.reduce((min, header) => (header.vaddr < min ? header.vaddr : min), loads[0]!.vaddr);
  return lowest & ~0xfffn;
}

const PAGE = 4096;

/** The page-rounded span of an ELF file's PT_LOAD segments, as exec or ld.so maps them. */
function loadSpan(headers: ProgramHeader[]): number {
  let total = 0;
  for (const h of headers.filter((header) => header.type === 1)) {
    const start = Number(h.vaddr) % PAGE;
    total += Math.ceil((start + h.memorySize) / PAGE) * PAGE;
  }
  return total;
}

/** What exec maps for an ELF file: its segments and its interpreter's (named by PT_INTERP). */
function imageBytes(bytes: Buffer): number | undefined {
  const headers = programHeaders(bytes);
  if (!headers) return undefined;
  let total = loadSpan(headers);
  const interp = headers.find((header) => header.type === 3);
  if (interp) {
    const name = bytes
      .subarray(interp.offset, interp.offset + interp.fileSize)
      .toString('latin1')
      .replace(/\0.*$/s, '');
    try {
      const head = Buffer.alloc(4096);
      const fd = fs.openSync(name, 'r');
      const length = fs.readSync(fd, head, 0, head.length, 0);
      fs.closeSync(fd);
      const loader = programHeaders(head.subarray(0, length));
      if (!loader) return undefined;
      total += loadSpan(loader);
    } catch {
      return undefined;
    }
  }
  return total;
}

export function programKind(command: string): ProgramKind {
  let file = findInPath(command);
  for (let depth = 0; file && depth < 4; depth++) {
    const head = Buffer.alloc(4096);
    const fd = fs.openSync(file, 'r');
    const length = fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    const bytes = head.subarray(0, length);
    if (bytes.subarray(0, 2).toString() === '#!') {
      const words = bytes.toString('utf8').split('\n')[0]!.slice(2).trim().split(/\s+/);
      const interpreter = path.basename(words[0] ?? '') === 'env' ? words[1] : words[0];
      file = interpreter ? findInPath(interpreter) : undefined;
      continue;
    }
    const dynamic = elfHasInterpreter(bytes);
    return {
      file,
      kind: dynamic === undefined ? 'not-elf' : dynamic ? 'dynamic' : 'static',
      imageBytes: dynamic === undefined ? undefined : imageBytes(bytes),
    };
  }
  return { file: file ?? command, kind: 'not-found' };
}
