// Stack frames to names: the tracker resolved each return address to its module, offset and nearest
// exported symbol (dladdr in the traced process); addr2line adds the function (static ones too) and
// file:line where the module has the symbols or debug info.
import { execFileSync } from 'node:child_process';
import { elfLoadAddress } from './program';
import { RecordFrame } from './record';

export interface SymbolizedFrame extends RecordFrame {
  /** "file.c:42" when addr2line knows it. */
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

/** Adds names and file:line to every frame of the given stacks (one addr2line run per module). */
export function symbolize(stacks: RecordFrame[][]): SymbolizedFrame[][] {
  const result = stacks.map((stack) => stack.map((frame) => ({ ...frame }) as SymbolizedFrame));
  const byModule = new Map<string, SymbolizedFrame[]>();
  for (const frame of result.flat()) {
    if (!frame.module || !frame.offset) continue;
    const list = byModule.get(frame.module) ?? [];
    list.push(frame);
    byModule.set(frame.module, list);
  }
  for (const [module, frames] of byModule) {
    let loadAddress: bigint;
    try {
      loadAddress = elfLoadAddress(module);
    } catch {
      continue; // the module is gone or unreadable: keep dladdr's names
    }
    // addr2line wants the file's own address of a byte inside the call: return address minus one.
    const offsets = frames.map((frame) => `0x${(BigInt(frame.offset!) + loadAddress - 1n).toString(16)}`);
    const lines = addr2line(module, offsets);
    if (!lines) continue;
    frames.forEach((frame, i) => {
      const name = lines[2 * i];
      const location = lines[2 * i + 1];
      // dladdr's name is truncated to 63 bytes in the record: prefer addr2line's whenever it has one.
      if (name && name !== '??') frame.symbol = name;
      if (location && !location.startsWith('??')) frame.location = location.replace(/ \(discriminator \d+\)$/, '');
    });
  }
  return result;
}

/** One line per frame: "name (file:line)" or "name (module+0xoffset)". */
export function formatFrame(frame: SymbolizedFrame): string {
  const where = frame.location ?? (frame.module ? `${frame.module}+${frame.offset}` : frame.address);
  return frame.symbol ? `${frame.symbol} (${where})` : where;
}
