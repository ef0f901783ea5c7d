// JavaScript frames of a failed allocation in a Node process. The tracker reads native frames only: its
// unwinder stops at V8's generated code, and naming a JS frame needs V8's own heap. What Node does print,
// when an ArrayBuffer's memory cannot be had, is a RangeError with the JS stack of the `new` that asked
// for it ("Array buffer allocation failed", uncaught). That stack is read here from the program's stderr,
// and said to come from there: a program that catches the error prints none, and then there is none.

/** One frame of a V8 stack trace: "at fn (file:line:column)" or "at file:line:column". */
export interface JsFrame {
  function: string | null;
  file: string;
  line: number;
  column: number;
}

const rangeError = 'RangeError: Array buffer allocation failed';
const frameLine = /^\s+at (?:(.+?) \((.+):(\d+):(\d+)\)|(.+):(\d+):(\d+))$/;

/**
 * The JS frames under the first "RangeError: Array buffer allocation failed" in `output`, innermost first,
 * without V8's own `new ArrayBuffer (<anonymous>)` frames and from Node's module loader on (the frames a
 * user did not write); null when there is no such error.
 */
export function arrayBufferFailureStack(output: string): JsFrame[] | null {
  const lines = output.split('\n');
  const at = lines.findIndex((line) => line.startsWith(rangeError));
  if (at < 0) return null;
  const frames: JsFrame[] = [];
  for (const line of lines.slice(at + 1)) {
    if (!/^\s+at /.test(line)) break;
    const match = frameLine.exec(line);
    if (!match) continue; // "(<anonymous>)", "(native)": no place in a file
    const [, name, file, row, column, bareFile, bareRow, bareColumn] = match;
    const frame: JsFrame = {
      function: name ?? null,
      file: (file ?? bareFile)!,
      line: Number(row ?? bareRow),
      column: Number(column ?? bareColumn),
    };
    if (frame.file.startsWith('node:internal/modules/')) break;
    frames.push(frame);
  }
  return frames;
}
