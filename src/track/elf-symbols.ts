// The function that truly contains an address, from an ELF file's symbol tables: a symbol names an
// address only when its range [st_value, st_value + st_size) covers it. (addr2line and a nearest-symbol
// lookup name any address after an exported function by that function, which on a stripped library is
// usually false.) The separate debug file (/usr/lib/debug/.build-id/xx/yyyy.debug) is used when installed.
import * as fs from 'node:fs';

interface Section {
  name: string;
  type: number;
  offset: number;
  size: number;
  link: number;
  entsize: number;
}

interface FunctionSymbol {
  start: number;
  end: number;
  name: string;
}

export interface ElfSymbols {
  /** The file whose tables were read (the debug file when there is one). */
  file: string;
  /** Function symbols sorted by start, with a size. */
  functions: FunctionSymbol[];
  /** .debug_info is present: addr2line can give file:line (and the function, inlining included). */
  debugInfo: boolean;
}

const SHT_SYMTAB = 2;
const SHT_DYNSYM = 11;
const SHT_NOTE = 7;
const STT_FUNC = 2;
const STT_GNU_IFUNC = 10;

function readAt(fd: number, offset: number, size: number): Buffer {
  const buffer = Buffer.alloc(size);
  const got = fs.readSync(fd, buffer, 0, size, offset);
  return buffer.subarray(0, got);
}

/** Section headers of a little-endian 64-bit ELF file (the only kind the tracker runs in), named. */
function sections(fd: number): Section[] | undefined {
  const head = readAt(fd, 0, 64);
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return undefined;
  const shoff = Number(head.readBigUInt64LE(40));
  const shentsize = head.readUInt16LE(58);
  const shnum = head.readUInt16LE(60);
  const shstrndx = head.readUInt16LE(62);
  if (!shoff || shentsize < 64 || !shnum) return undefined;
  const table = readAt(fd, shoff, shnum * shentsize);
  if (table.length < shnum * shentsize) return undefined;
  const raw = Array.from({ length: shnum }, (_, i) => {
    const at = i * shentsize;
    return {
      nameOffset: table.readUInt32LE(at),
      type: table.readUInt32LE(at + 4),
      offset: Number(table.readBigUInt64LE(at + 24)),
      size: Number(table.readBigUInt64LE(at + 32)),
      link: table.readUInt32LE(at + 40),
      entsize: Number(table.readBigUInt64LE(at + 56)),
    };
  });
  const names = raw[shstrndx] ? readAt(fd, raw[shstrndx].offset, raw[shstrndx].size) : Buffer.alloc(0);
  return raw.map(({ nameOffset, ...rest }) => ({
    ...rest,
    name: names.toString('latin1', nameOffset, Math.max(nameOffset, names.indexOf(0, nameOffset))),
  }));
}

function functionSymbols(fd: number, all: Section[], table: Section): FunctionSymbol[] {
  const strings = all[table.link];
  if (!strings || table.entsize < 24) return [];
  const symbols = readAt(fd, table.offset, table.size);
  const names = readAt(fd, strings.offset, strings.size);
  const found: FunctionSymbol[] = [];
  for (let at = 0; at + 24 <= symbols.length; at += table.entsize) {
    const type = symbols[at + 4]! & 0xf;
    const shndx = symbols.readUInt16LE(at + 6);
    const size = Number(symbols.readBigUInt64LE(at + 16));
    if ((type !== STT_FUNC && type !== STT_GNU_IFUNC) || shndx === 0 || size === 0) continue;
    const nameOffset = symbols.readUInt32LE(at);
    const start = Number(symbols.readBigUInt64LE(at + 8));
    found.push({ start, end: start + size, name: names.toString('latin1', nameOffset, names.indexOf(0, nameOffset)) });
  }
  return found.sort((a, b) => a.start - b.start);
}

/** The GNU build ID (hex) from the file's .note.gnu.build-id. */
function buildId(fd: number, all: Section[]): string | undefined {
  const note = all.find((s) => s.type === SHT_NOTE && s.name === '.note.gnu.build-id');
  if (!note) return undefined;
  const bytes = readAt(fd, note.offset, note.size);
  if (bytes.length < 16) return undefined;
  const nameSize = bytes.readUInt32LE(0);
  const descSize = bytes.readUInt32LE(4);
  const descAt = 12 + ((nameSize + 3) & ~3);
  return bytes.subarray(descAt, descAt + descSize).toString('hex') || undefined;
}

function tables(file: string): { all: Section[]; fd: number } | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const all = sections(fd);
    if (all) return { all, fd };
  } catch {
    // cut short or not ELF
  }
  fs.closeSync(fd);
  return undefined;
}

/** The symbols of an ELF file: the debug file's .symtab if installed, else its own .symtab, else .dynsym. */
export function elfSymbols(file: string): ElfSymbols | undefined {
  const own = tables(file);
  if (!own) return undefined;
  try {
    const id = buildId(own.fd, own.all);
    const debugFile = id && `/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug`;
    const debug = debugFile ? tables(debugFile) : undefined;
    if (debug) {
      try {
        const symtab = debug.all.find((s) => s.type === SHT_SYMTAB);
        if (symtab)
          return {
            file: debugFile!,
            functions: functionSymbols(debug.fd, debug.all, symtab),
            debugInfo: debug.all.some((s) => s.name === '.debug_info'),
          };
      } finally {
        fs.closeSync(debug.fd);
      }
    }
    const table = own.all.find((s) => s.type === SHT_SYMTAB) ?? own.all.find((s) => s.type === SHT_DYNSYM);
    return {
      file,
      functions: table ? functionSymbols(own.fd, own.all, table) : [],
      debugInfo: own.all.some((s) => s.name === '.debug_info'),
    };
  } catch {
    return undefined;
  } finally {
    fs.closeSync(own.fd);
  }
}

/** The name of the function whose range covers `address` (the file's own address), or undefined. */
export function containingFunction(symbols: ElfSymbols, address: number): string | undefined {
  const list = symbols.functions;
  let low = 0;
  let high = list.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (list[mid]!.start <= address) low = mid + 1;
    else high = mid;
  }
  // Aliases share a start: any of those just before the insertion point that covers the address names it.
  for (let i = low - 1; i >= 0 && list[i]!.start === list[low - 1]!.start; i--)
    if (address < list[i]!.end) return list[i]!.name;
  return undefined;
}
