import * as os from 'node:os';

/** "ENOMEM" for 12: the symbolic name of an errno value, as the C library spells it. */
export function errnoName(errno: number): string {
  const entry = Object.entries(os.constants.errno).find(([, value]) => value === errno);
  return entry ? entry[0] : `errno ${errno}`;
}
