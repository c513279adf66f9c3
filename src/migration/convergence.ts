// The stop rule, as a pure function of measured figures, so it can be tested alone with a table.
// Like QEMU: stop iterating once the pages still dirty could be sent within the downtime budget at the
// bandwidth just measured; unlike QEMU, the pause's fixed cost (the switch-over's round trips, and finding
// the dirty pages again) counts against the budget too, so a budget holds on a link with latency. When the dirty set stops shrinking by a tenth (as CRIU's P.Haul judges
// growth) for two rounds in a row, throttle the workload as QEMU's auto-converge does (20%, then +10%
// per step, at most 99%), or give up cleanly, or stop and copy with a longer pause that the metrics
// report; also stop at a round cap, so every migration ends.

export interface ConvergenceInput {
  /** Rounds completed so far (round 1 is the full copy). */
  round: number;
  /** Pages dirtied since the last round began, not yet sent. */
  pendingPages: number;
  /**
   * pendingPages as measured after each earlier round, oldest first (this round's not included), since
   * the throttle last changed: the round that changed it is the first entry.
   */
  pendingHistory: readonly number[];
  pageSize: number;
  /**
   * Bytes of pages per second over the last round (delivered and acknowledged): pages × pageSize,
   * not wire bytes, since pendingPages will travel encoded just as those did.
   */
  bandwidthBytesPerSec: number;
  maxDowntimeMs: number;
  /**
   * What the pause costs beyond moving pages: the round trips of the last ROUND_ACK and of FINAL and
   * READY (the target's fsync waits for GO, outside the pause). 0 when unknown.
   */
  switchoverMs: number;
  /**
   * How long finding the dirty pages took after this round (hashing the whole region, without a dirty
   * bitmap): the final round finds them again inside the pause.
   */
  finalSyncMs: number;
  maxRounds: number;
  /** What to do once the rounds stop converging ('throttle' only if the workload can be throttled). */
  onStall: StallPolicy;
  /** The workload's throttle now, in percent (0 = unthrottled). */
  throttlePercent: number;
}

/**
 * throttle: slow the workload down step by step, then stop and copy if even 99% does not help;
 * stop: stop and copy now, with a longer pause; fail: give up, the workload keeps running here.
 */
export const STALL_POLICIES = ['throttle', 'stop', 'fail'] as const;
/**
 * What the source does once the rounds stop converging (each is described above).
 * @useDeclaredType
 */
export type StallPolicy = typeof STALL_POLICIES[number];

export type ConvergenceDecision =
  | { action: 'iterate'; expectedDowntimeMs: number }
  | { action: 'throttle'; expectedDowntimeMs: number; throttlePercent: number }
  | { action: 'stop-and-copy'; expectedDowntimeMs: number; reason: StopReason }
  | { action: 'fail'; expectedDowntimeMs: number };

export type StopReason = 'converged' | 'no-dirty-pages' | 'not-converging' | 'round-cap';

/** Rounds in a row without the dirty set shrinking below 90% of its smallest size so far. */
export const STALLED_ROUNDS = 2;
const SHRINK_FACTOR = 0.9;
/** QEMU's cpu-throttle-initial, cpu-throttle-increment and max-cpu-throttle. */
export const THROTTLE_INITIAL_PERCENT = 20;
export const THROTTLE_STEP_PERCENT = 10;
export const THROTTLE_MAX_PERCENT = 99;

/** The next auto-converge step after `percent`. */
export function nextThrottlePercent(percent: number): number {
  return percent <= 0 ? THROTTLE_INITIAL_PERCENT : Math.min(THROTTLE_MAX_PERCENT, percent + THROTTLE_STEP_PERCENT);
}

/** fixedMs: what the pause costs whatever the pages (round trips, finding the dirty pages). */
export function expectedDowntimeMs(pendingPages: number, pageSize: number, bandwidthBytesPerSec: number, fixedMs = 0): number {
  if (pendingPages === 0) return fixedMs;
  if (!(bandwidthBytesPerSec > 0)) return Infinity;
  return (pendingPages * pageSize * 1000) / bandwidthBytesPerSec + fixedMs;
}

/** The switch-over's round trips inside the pause: the last ROUND_ACK, then FINAL out and READY back. */
export const SWITCHOVER_ROUND_TRIPS = 2;

export function decideNextRound(input: ConvergenceInput): ConvergenceDecision {
  const downtime = expectedDowntimeMs(input.pendingPages, input.pageSize, input.bandwidthBytesPerSec,
    input.switchoverMs + input.finalSyncMs);
  if (input.pendingPages === 0) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'no-dirty-pages' };
  if (downtime <= input.maxDowntimeMs) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'converged' };
  if (input.round >= input.maxRounds) return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'round-cap' };
  if (stalledRounds([...input.pendingHistory, input.pendingPages]) >= STALLED_ROUNDS) {
    if (input.onStall === 'fail') return { action: 'fail', expectedDowntimeMs: downtime };
    if (input.onStall === 'throttle' && input.throttlePercent < THROTTLE_MAX_PERCENT) {
      return { action: 'throttle', expectedDowntimeMs: downtime, throttlePercent: nextThrottlePercent(input.throttlePercent) };
    }
    return { action: 'stop-and-copy', expectedDowntimeMs: downtime, reason: 'not-converging' };
  }
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
