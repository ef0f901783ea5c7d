// How a process ended, as waitpid tells it: an exit code or a signal.

export interface Ending {
  code: number | null;
  signal: string | null;
}

/**
 * Ended by SIGKILL or SIGTERM from some process, or a shell's 137 or 143 passing such an ending on: the
 * endings that an OOM killer, the kernel's or one in user space, leaves.
 */
export function killedOrTerminated(exit: Ending): boolean {
  return exit.signal === 'SIGKILL' || exit.signal === 'SIGTERM' || exit.code === 137 || exit.code === 143;
}
