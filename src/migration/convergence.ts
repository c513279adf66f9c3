// The stop rule, as a pure function of measured figures, so it can be tested alone with a table.
// Like QEMU: stop iterating once the pages still dirty could be sent within the downtime budget at the
// bandwidth just measured. Unlike QEMU, also stop when the rounds stop converging (the dirty set has
// not shrunk by a tenth for a few rounds, as CRIU's P.Haul judges growth) or at a round cap, so a
// workload that dirties memory faster than it can be moved still finishes, with a longer pause that
// the metrics report. (Throttling the workload instead is a later step.)

export interface ConvergenceInput {
  /** Rounds completed so far (round 1 is the full copy). */
  round: number;
  /** Pages dirtied since the last round began, not yet sent. */
  pendingPages: number;
  /** pendingPages as measured after each earlier round, oldest first (this round's not included). */
  pendingHistory: readonly number[];
  pageSize: number;
  /**
   * Bytes of pages per second over the last round (delivered and acknowledged): pages × pageSize,
   * not wire bytes, since pendingPages will travel encoded just as those did.
   */
  bandwidthBytesPerSec: number;
  maxDowntimeMs: number;
  maxRounds: number;
}

export type ConvergenceDecision =
  | { action: 'iterate'; expectedDowntimeMs: number }
  | { action: 'stop-and-copy'; expectedDowntimeMs: number; reason: StopReason };

export type StopReason = 'converged' | 'no-dirty-pages' | 'not-converging' | 'round-cap';

/** Rounds in a row without the dirty set shrinking below 90% of its smallest size so far. */
export const STALLED_ROUNDS = 3;
const SHRINK_FACTOR = 0.9;

export function expectedDowntimeMs(pendingPages: number, pageSize: number, bandwidthBytesPerSec: number): number {
  if (pendingPages === 0) return 0;
  if (!(bandwidthBytesPerSec > 0)) return Infinity;
  return (pendingPages * pageSize * 1000) / bandwidthBytesPerSec;
}

export function decideNextRound(input: ConvergenceInput): ConvergenceDecision {
  const downtime = expectedDowntimeMs(input.pendingPages, input.pageSize, input.bandwidthBytesPerSec);
  if (input.pendingPages === 0) return { action: 'stop-and-copy', expectedDowntimeMs: 0, reason: 'no-dirty-pages' };
  if (downtime <= input.maxDowntimeMs) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'converged' };
  if (stalledRounds([...input.pendingHistory, input.pendingPages]) >= STALLED_ROUNDS) {
    return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'not-converging' };
  }
  if (input.round >= input.maxRounds) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'round-cap' };
  return { action: 'iterate', expectedDowntimeMs: downtime };
}

/** How many of the latest rounds in a row failed to bring the dirty set below 90% of its best. */
export function stalledRounds(pendingAfterEachRound: readonly number[]): number {
  let best = Infinity;
  let stalled = 0;
  for (const pending of pendingAfterEachRound) {
    if (pending < best * SHRINK_FACTOR) {
      best = pending;
      stalled = 0;
    } else {
      stalled += 1;
      best = Math.min(best, pending);
    }
  }
  return stalled;
}

/** Bytes per second of a round; a round too short to time is measured as at least 1 ms. */
export function roundBandwidth(bytesSent: number, durationMs: number): number {
  return (bytesSent * 1000) / Math.max(durationMs, 1);
}
