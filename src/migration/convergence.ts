// The stop rule, as a pure function of measured figures, so it can be tested alone with a table.
// Like QEMU: stop iterating once the pages still dirty could be sent within the downtime budget at the
// bandwidth just measured; unlike QEMU, also stop at a round cap, so a workload that dirties memory
// faster than the link can carry it still finishes (with a longer pause, which the metrics report).

export interface RoundFigures {
  /** Pages the round just finished carried, and the bytes and time that took. */
  pagesSent: number;
  bytesSent: number;
  durationMs: number;
}

export interface ConvergenceInput {
  /** Rounds completed so far (round 1 is the full copy). */
  round: number;
  /** Pages dirtied since the last round began, not yet sent. */
  pendingPages: number;
  pageSize: number;
  /** Bytes per second measured over the last round (delivered and acknowledged). */
  bandwidthBytesPerSec: number;
  maxDowntimeMs: number;
  maxRounds: number;
}

export type ConvergenceDecision =
  | { action: 'iterate'; expectedDowntimeMs: number }
  | { action: 'stop-and-copy'; expectedDowntimeMs: number; reason: 'converged' | 'no-dirty-pages' | 'round-cap' };

export function expectedDowntimeMs(pendingPages: number, pageSize: number, bandwidthBytesPerSec: number): number {
  if (pendingPages === 0) return 0;
  if (!(bandwidthBytesPerSec > 0)) return Infinity;
  return (pendingPages * pageSize * 1000) / bandwidthBytesPerSec;
}

export function decideNextRound(input: ConvergenceInput): ConvergenceDecision {
  const downtime = expectedDowntimeMs(input.pendingPages, input.pageSize, input.bandwidthBytesPerSec);
  if (input.pendingPages === 0) return { action: 'stop-and-copy', expectedDowntimeMs: 0, reason: 'no-dirty-pages' };
  if (downtime <= input.maxDowntimeMs) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'converged' };
  if (input.round >= input.maxRounds) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'round-cap' };
  return { action: 'iterate', expectedDowntimeMs: downtime };
}

/** Bytes per second of a round; a round too short to time is measured as at least 1 ms. */
export function roundBandwidth(round: RoundFigures): number {
  return (round.bytesSent * 1000) / Math.max(round.durationMs, 1);
}
