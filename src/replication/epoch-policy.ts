// How long the next epoch runs. The primary captures an epoch only once the one before is committed,
// so when capture, send and acknowledgement together (a cycle) take longer than the epoch, the epoch
// length follows the cycle: longer epochs carry fewer pages per millisecond (hot pages are sent once),
// which is what lets a cycle catch up. When cycles are quick again, it comes back to the configured
// length in steps. A pure function, so a table of cases pins it (test/epoch-policy.test.ts).

/** The longest an epoch may grow, as a multiple of the configured length. */
export const MAX_EPOCH_STRETCH = 20;
/** Headroom over the last cycle when stretching. */
const STRETCH_HEADROOM = 1.25;

export interface EpochTiming {
  /** The configured length (`--epoch-ms`). */
  configuredMs: number;
  /** The length the last epoch ran with. */
  currentMs: number;
  /** The last cycle: capture begun to the standby's acknowledgement. */
  lastCycleMs: number;
}

export interface EpochDecision {
  /** The next epoch's length: from the last capture's start to the next one's. */
  intervalMs: number;
  /** The last cycle did not fit its epoch. */
  behind: boolean;
}

export function nextEpoch({ configuredMs, currentMs, lastCycleMs }: EpochTiming): EpochDecision {
  const longest = configuredMs * MAX_EPOCH_STRETCH;
  if (lastCycleMs > currentMs) {
    return { intervalMs: Math.min(longest, Math.ceil(lastCycleMs * STRETCH_HEADROOM)), behind: true };
  }
  if (currentMs > configuredMs && lastCycleMs <= currentMs / 2) {
    // Half the stretch back per quick cycle.
    return { intervalMs: Math.max(configuredMs, Math.floor((currentMs + configuredMs) / 2)), behind: false };
  }
  return { intervalMs: currentMs, behind: false };
}
