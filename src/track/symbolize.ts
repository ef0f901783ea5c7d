// Stack frames to names: the tracker resolved each return address to its module and offset (dladdr in
// the traced process). A frame is named only by a symbol whose range covers the byte before the return
// address (elf-symbols.ts): the debug file's or the module's .symtab, else its .dynsym; otherwise it stays
// `module+0xoffset`. With debug info, addr2line adds file:line (and the function, static or inlined).
import { execFileSync } from 'node:child_process';
import { loadAddon } from '../core/native';
import { containingFunction, elfSymbols } from './elf-symbols';
import { elfLoadAddress } from './program';
import { RecordFrame } from './record';

export interface SymbolizedFrame extends RecordFrame {
  /** "file.c:42" when the debug info knows it. */
  location?: string;
}

function addr2line(module: string, offsets: string[]): string[] | undefined {
  try {
    const output = execFileSync('addr2line', ['-f', '-C', '-e', module, ...offsets], {
      encoding: 'utf8',
      timeout: 30000,
      maxBuffer: 16 << 20,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return output.split('\n');
  } catch {
    return undefined; // no addr2line (binutils), or a module it cannot read
  }
}

/** Adds true names and, with debug info, file:line to every frame of the given stacks. */
export function symbolize(stacks: RecordFrame[][]): SymbolizedFrame[][] {
  const result = stacks.map((stack) => stack.map((frame) => ({ ...frame }) as SymbolizedFrame));
  const byModule = new Map<string, SymbolizedFrame[]>();
  for (const frame of result.flat()) {
    if (!frame.module || !frame.offset) continue;
    const list = byModule.get(frame.module) ?? [];
    list.push(frame);
    byModule.set(frame.module, list);
  }
  const { demangle } = loadAddon<{ demangle(name: string): string }>();
  for (const [module, frames] of byModule) {
    // A module gone or unreadable keeps dladdr's names (glibc's dladdr checks the symbol's range too).
    const symbols = elfSymbols(module);
    if (!symbols) continue;
    let loadAddress: bigint;
    try {
      loadAddress = elfLoadAddress(module);
    } catch {
      continue;
    }
    // The file's own address of a byte inside the call: return address minus one.
    const addresses = frames.map((frame) => BigInt(frame.offset!) + loadAddress - 1n);
    frames.forEach((frame, i) => {
      const name = containingFunction(symbols, Number(addresses[i]!));
      if (name) frame.symbol = demangle(name);
      else delete frame.symbol;
    });
    if (!symbols.debugInfo) continue;
    const lines = addr2line(
      symbols.file,
      addresses.map((address) => `0x${address.toString(16)}`),
    );
    if (!lines) continue;
    frames.forEach((frame, i) => {
      const name = lines[2 * i];
      const location = lines[2 * i + 1];
      if (name && name !== '??') frame.symbol = name;
      if (location && !location.startsWith('??')) frame.location = location.replace(/ \(discriminator \d+\)$/, '');
    });
  }
  return result;
}

/** One line per frame: "name (file:line)" or "name (module+0xoffset)", or "module+0xoffset" unnamed. */
export function formatFrame(frame: SymbolizedFrame): string {
  const where = frame.location ?? (frame.module ? `${frame.module}+${frame.offset}` : frame.address);
  return frame.symbol ? `${frame.symbol} (${where})` : where;
}

/**
 * A C++ name for the terminal: template arguments elided (`std::vector<…>::push_back`), the rest kept.
 * `operator<`, `operator<<` and `operator<=>` are not template brackets.
 */
export function elideTemplates(text: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (text.startsWith('operator', i) && /^operator(<=>|<<=|<<|<=|<|>>=|>>|>=|>|->)/.test(text.slice(i))) {
      const op = /^operator(<=>|<<=|<<|<=|<|>>=|>>|>=|>|->)/.exec(text.slice(i))![0];
      if (depth === 0) out += op;
      i += op.length - 1;
    } else if (c === '<') {
      if (depth++ === 0) out += '<…>';
    } else if (c === '>' && depth > 0) depth--;
    else if (depth === 0) out += c;
  }
  return out;
}
