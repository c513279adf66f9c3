// Runs the embedder's hooks, each bounded by a timeout and the migration's AbortSignal, and each given
// an AbortSignal of its own that aborts when the migration stops waiting for it. A hook given up on may
// still be running: settled() lets its opposite (resume after pause) wait for it, never overlap it.
// Whatever a hook throws reaches the caller as a HookError naming the hook, with the thrown value as cause.
import { AbortedError, HookError, TimeoutError, type PagewireError } from '../errors.js';

export class HookRunner {
  /** Hooks given up on (timeout, abort) that may still be running. */
  private readonly straggling = new Set<Promise<void>>();

  /** `task` names what is aborted in messages: a migration, a snapshot. */
  constructor(private readonly timeoutMs: number, private readonly signal?: AbortSignal, private readonly task = 'migration') {}

  /**
   * Runs `hook`; fails after timeoutMs, or at once on the migration's abort when `abortable` (not for
   * the hooks that put things back after a failure).
   */
  async run<T>(name: string, hook: (signal: AbortSignal) => Promise<T> | T, abortable = true): Promise<T> {
    const { timeoutMs, signal } = this;
    const givenUp = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<never>((_, reject) => {
      const giveUp = (error: PagewireError) => {
        givenUp.abort(error);
        reject(error);
      };
      timer = setTimeout(() => giveUp(new TimeoutError(`the ${name} hook did not finish within ${timeoutMs} ms`)), timeoutMs);
      if (abortable && signal) {
        onAbort = () => giveUp(new AbortedError(`${this.task} aborted while the ${name} hook ran`, { cause: signal.reason }));
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    const running = Promise.resolve().then(() => hook(givenUp.signal)).catch((thrown: unknown) => {
      throw new HookError(name, thrown);
    });
    try {
      return await Promise.race([running, stop]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      if (givenUp.signal.aborted) this.awaitBeforeOpposite(running);
    }
  }

  /** A hook told to stop (not by this runner) that settled() must also wait for. */
  awaitBeforeOpposite(running: Promise<unknown>): void {
    const settled = running.then(() => undefined, () => undefined);
    this.straggling.add(settled);
    void settled.then(() => this.straggling.delete(settled));
  }

  /** Waits for the hooks given up on to settle, at most timeoutMs; false if one is still running. */
  async settled(): Promise<boolean> {
    if (this.straggling.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), this.timeoutMs); });
    try {
      return await Promise.race([Promise.all([...this.straggling]).then(() => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }
}
