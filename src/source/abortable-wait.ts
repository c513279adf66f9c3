// The source's deliberate waits (the bandwidth cap, a resume's backoff) end early when the migration is
// aborted, so that an abort never waits for a timer.
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError } from '../errors.js';
import type { PhaseState } from './source-phase.js';

/** Waits `ms`; an abort cuts the wait short with an AbortedError naming the phase it struck in. */
export async function waitUnlessAborted(ms: number, signal: AbortSignal | undefined, phases: PhaseState): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch {
    throw new AbortedError(`migration aborted during ${phases.current}`, { cause: signal?.reason });
  }
}
