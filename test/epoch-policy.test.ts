import { describe, expect, it } from 'vitest';
import { MAX_EPOCH_STRETCH, nextEpoch } from '../dist/src/replication/epoch-policy.js';

describe('nextEpoch (the adaptive epoch length)', () => {
  it('stretches at most 20 times the configured length', () => {
    expect(MAX_EPOCH_STRETCH).toBe(20);
  });

  it.each([
    // configured, current, last cycle (ms) -> next interval, behind
    // on time: the length stays
    { configured: 50, current: 50, cycle: 10, interval: 50, behind: false },
    { configured: 50, current: 50, cycle: 49.9, interval: 50, behind: false },
    { configured: 50, current: 50, cycle: 50, interval: 50, behind: false }, // exactly the epoch: not behind
    { configured: 50, current: 50, cycle: 0, interval: 50, behind: false },
    // behind: the next epoch is the cycle plus a quarter, rounded up
    { configured: 50, current: 50, cycle: 50.1, interval: 63, behind: true }, // 62.625
    { configured: 50, current: 50, cycle: 80, interval: 100, behind: true },
    { configured: 50, current: 50, cycle: 41 + 40, interval: 102, behind: true }, // 101.25
    { configured: 50, current: 100, cycle: 120, interval: 150, behind: true },
    { configured: 10, current: 10, cycle: 10.004, interval: 13, behind: true }, // 12.505
    // behind, capped at 20x the configured length
    { configured: 50, current: 50, cycle: 800, interval: 1000, behind: true }, // 1000 exactly: the cap
    { configured: 50, current: 50, cycle: 800.1, interval: 1000, behind: true }, // 1000.125 -> capped
    { configured: 50, current: 1000, cycle: 5000, interval: 1000, behind: true },
    { configured: 10, current: 200, cycle: 201, interval: 200, behind: true }, // already at the cap
    // stretched and quick again: halfway back per cycle, never below the configured length
    { configured: 50, current: 1000, cycle: 100, interval: 525, behind: false },
    { configured: 50, current: 525, cycle: 10, interval: 287, behind: false }, // 287.5 rounded down
    { configured: 50, current: 100, cycle: 50, interval: 75, behind: false }, // exactly half the epoch: quick
    { configured: 50, current: 51, cycle: 1, interval: 50, behind: false }, // 50.5 -> 50
    { configured: 50, current: 52, cycle: 0, interval: 51, behind: false },
    // stretched, neither behind nor quick: the length stays
    { configured: 50, current: 100, cycle: 50.1, interval: 100, behind: false },
    { configured: 50, current: 100, cycle: 100, interval: 100, behind: false }, // exactly the epoch: not behind
  ])('configured $configured, current $current, cycle $cycle -> $interval (behind $behind)', ({ configured, current, cycle, interval, behind }) => {
    expect(nextEpoch({ configuredMs: configured, currentMs: current, lastCycleMs: cycle })).toEqual({ intervalMs: interval, behind });
  });

  it('comes back to the configured length in steps, and stays there', () => {
    const configuredMs = 50;
    let currentMs = nextEpoch({ configuredMs, currentMs: configuredMs, lastCycleMs: 5000 }).intervalMs;
    expect(currentMs).toBe(1000);
    const steps = [currentMs];
    while (currentMs > configuredMs) {
      currentMs = nextEpoch({ configuredMs, currentMs, lastCycleMs: 1 }).intervalMs;
      steps.push(currentMs);
    }
    expect(steps).toEqual([1000, 525, 287, 168, 109, 79, 64, 57, 53, 51, 50]);
    expect(nextEpoch({ configuredMs, currentMs, lastCycleMs: 1 })).toEqual({ intervalMs: 50, behind: false });
  });

  it('never goes below the configured length nor above the cap, whatever the cycles', () => {
    let seed = 7;
    const random = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    for (const configuredMs of [10, 50, 333]) {
      let currentMs = configuredMs;
      for (let i = 0; i < 500; i++) {
        const lastCycleMs = random() * configuredMs * (random() < 0.2 ? 40 : 1.5);
        const { intervalMs, behind } = nextEpoch({ configuredMs, currentMs, lastCycleMs });
        expect(behind).toBe(lastCycleMs > currentMs);
        expect(intervalMs).toBeGreaterThanOrEqual(configuredMs);
        expect(intervalMs).toBeLessThanOrEqual(configuredMs * MAX_EPOCH_STRETCH);
        expect(Number.isInteger(intervalMs)).toBe(true);
        currentMs = intervalMs;
      }
    }
  });
});
