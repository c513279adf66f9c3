import { describe, expect, it } from 'vitest';
import { decideNextRound, expectedDowntimeMs, nextThrottlePercent, stalledRounds } from '../dist/src/index.js';

const base = {
  pageSize: 4096, maxDowntimeMs: 300, maxRounds: 30, pendingHistory: [] as number[], onStall: 'stop' as const, throttlePercent: 0,
  switchoverMs: 0, finalSyncMs: 0,
};

describe('decideNextRound (the stop rule)', () => {
  it.each([
    // round, pending pages, bandwidth B/s -> action, reason
    { round: 1, pending: 0, bw: 1e9, action: 'stop-and-copy', reason: 'no-dirty-pages' },
    { round: 1, pending: 1000, bw: 100e6, action: 'stop-and-copy', reason: 'converged' }, // 41 ms
    { round: 1, pending: 10_000, bw: 100e6, action: 'iterate' }, // 410 ms
    { round: 5, pending: 7324, bw: 100e6, action: 'stop-and-copy', reason: 'converged' }, // 299.99 ms
    { round: 5, pending: 7325, bw: 100e6, action: 'iterate' }, // 300.03 ms
    { round: 30, pending: 1e6, bw: 100e6, action: 'stop-and-copy', reason: 'round-cap' },
    { round: 29, pending: 1e6, bw: 100e6, action: 'iterate' },
    { round: 2, pending: 10, bw: 0, action: 'iterate' }, // unknown bandwidth: infinite downtime
  ])('round $round, $pending pages at $bw B/s -> $action', ({ round, pending, bw, action, reason }) => {
    const decision = decideNextRound({ ...base, round, pendingPages: pending, bandwidthBytesPerSec: bw });
    expect(decision.action).toBe(action);
    if (reason) expect(decision).toMatchObject({ reason });
  });

  it.each([
    // the switch-over's round trips count against the budget: 7000 pages at 100 MB/s take 286.7 ms
    { switchoverMs: 0, action: 'stop-and-copy', expected: 286.72 },
    { switchoverMs: 13.2, action: 'stop-and-copy', expected: 299.92 },
    { switchoverMs: 13.3, action: 'iterate', expected: 300.02 },
    { switchoverMs: 400, action: 'iterate', expected: 686.72 }, // a budget below the round trips is never met by pages alone
  ])('with $switchoverMs ms of round trips, 7000 pages -> $action', ({ switchoverMs, action, expected }) => {
    const decision = decideNextRound({ ...base, round: 3, pendingPages: 7000, bandwidthBytesPerSec: 100e6, switchoverMs });
    expect(decision.action).toBe(action);
    expect(decision.expectedDowntimeMs).toBeCloseTo(expected, 1);
  });

  it.each([
    // finding the dirty pages again inside the pause (hashing the region) counts too: 7000 pages and 10 ms of round trips
    { finalSyncMs: 0, action: 'stop-and-copy', expected: 296.72 },
    { finalSyncMs: 3.2, action: 'stop-and-copy', expected: 299.92 },
    { finalSyncMs: 3.3, action: 'iterate', expected: 300.02 },
  ])('with $finalSyncMs ms to find the dirty pages, 7000 pages -> $action', ({ finalSyncMs, action, expected }) => {
    const decision = decideNextRound({
      ...base, round: 3, pendingPages: 7000, bandwidthBytesPerSec: 100e6, switchoverMs: 10, finalSyncMs,
    });
    expect(decision.action).toBe(action);
    expect(decision.expectedDowntimeMs).toBeCloseTo(expected, 1);
  });

  it('counts the time to find the dirty pages when none are pending', () => {
    expect(decideNextRound({ ...base, round: 2, pendingPages: 0, bandwidthBytesPerSec: 1e9, switchoverMs: 1, finalSyncMs: 4 }))
      .toMatchObject({ action: 'stop-and-copy', reason: 'no-dirty-pages', expectedDowntimeMs: 5 });
  });

  it.each([
    // pending pages after each round (oldest first) -> rounds in a row without shrinking below 90% of the best
    { history: [], stalled: 0 },
    { history: [1000], stalled: 0 },
    { history: [1000, 950], stalled: 1 },
    { history: [1000, 950, 990, 920], stalled: 3 },
    { history: [1000, 950, 890], stalled: 2 }, // 890 is not below 90% of the best so far (950)
    { history: [1000, 950, 850], stalled: 0 }, // 850 < 855: progress
    { history: [1000, 1200, 1500, 2000], stalled: 3 }, // growing
    { history: [1000, 800, 790, 780, 700], stalled: 0 }, // 700 < 720
  ])('counts stalled rounds in $history as $stalled', ({ history, stalled }) => {
    expect(stalledRounds(history)).toBe(stalled);
  });

  it('stops when the dirty set has not shrunk for two rounds in a row, before the round cap', () => {
    const input = { ...base, round: 4, pendingPages: 980, bandwidthBytesPerSec: 1e6 };
    expect(decideNextRound({ ...input, pendingHistory: [1000, 990] })).toMatchObject({ action: 'stop-and-copy', reason: 'not-converging' });
    expect(decideNextRound({ ...input, pendingHistory: [1000] }).action).toBe('iterate');
    expect(decideNextRound({ ...input, pendingHistory: [2000, 1500, 1200] }).action).toBe('iterate');
  });

  it.each([
    // policy, throttle now -> decision when two rounds in a row did not shrink the dirty set
    { onStall: 'throttle', throttle: 0, expected: { action: 'throttle', throttlePercent: 20 } },
    { onStall: 'throttle', throttle: 20, expected: { action: 'throttle', throttlePercent: 30 } },
    { onStall: 'throttle', throttle: 90, expected: { action: 'throttle', throttlePercent: 99 } },
    { onStall: 'throttle', throttle: 99, expected: { action: 'stop-and-copy', reason: 'not-converging' } },
    { onStall: 'stop', throttle: 0, expected: { action: 'stop-and-copy', reason: 'not-converging' } },
    { onStall: 'fail', throttle: 0, expected: { action: 'fail' } },
  ] as const)('on a stall with onStall=$onStall at $throttle% -> $expected.action', ({ onStall, throttle, expected }) => {
    const decision = decideNextRound({
      ...base, onStall, throttlePercent: throttle, round: 5, pendingPages: 1000, pendingHistory: [1000, 1000], bandwidthBytesPerSec: 1e6,
    });
    expect(decision).toMatchObject(expected);
    // Without a stall, nothing changes: keep iterating at the same throttle.
    expect(decideNextRound({
      ...base, onStall, throttlePercent: throttle, round: 5, pendingPages: 800, pendingHistory: [1000, 1000], bandwidthBytesPerSec: 1e6,
    }).action).toBe('iterate');
  });

  it('steps the throttle as QEMU\'s auto-converge does: 20%, +10% per step, at most 99%', () => {
    const steps = [0];
    while (steps.at(-1)! < 99) steps.push(nextThrottlePercent(steps.at(-1)!));
    expect(steps).toEqual([0, 20, 30, 40, 50, 60, 70, 80, 90, 99]);
  });

  it('computes the expected downtime as pending bytes over bandwidth', () => {
    expect(expectedDowntimeMs(256, 4096, 1_048_576)).toBe(1000);
    expect(expectedDowntimeMs(0, 4096, 0)).toBe(0);
    expect(expectedDowntimeMs(1, 4096, 0)).toBe(Infinity);
  });

  it('honours a custom budget and round cap', () => {
    expect(decideNextRound({ ...base, maxDowntimeMs: 10, round: 1, pendingPages: 1000, bandwidthBytesPerSec: 100e6 }).action).toBe('iterate');
    expect(decideNextRound({ ...base, maxRounds: 1, round: 1, pendingPages: 1e6, bandwidthBytesPerSec: 1 }).action).toBe('stop-and-copy');
  });
});
