// The adaptive LZ4 policy: a pure function of the waits it is fed.
import { describe, expect, it } from 'vitest';
import { Lz4Policy } from '../dist/src/codec/lz4-policy.js';

/** Feeds n batches with the given waits, as the sender would: each tried with LZ4 if the policy says so. */
function feed(policy: Lz4Policy, n: number, encoderWaitMs: number, linkWaitMs: number): boolean[] {
  const tried: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const lz4 = policy.enabled;
    tried.push(lz4);
    policy.record(encoderWaitMs, linkWaitMs, lz4);
  }
  return tried;
}

describe('Lz4Policy', () => {
  it('keeps LZ4 while the link is the limit', () => {
    const policy = new Lz4Policy('adaptive');
    expect(feed(policy, 200, 0.1, 3).every(Boolean)).toBe(true);
  });

  it('turns LZ4 off for 64 batches once a window of 8 waited longer on the encoder, then tries again', () => {
    const policy = new Lz4Policy('adaptive');
    const tried = feed(policy, 8 + 64 + 8, 2, 0.5);
    expect(tried.slice(0, 8).every(Boolean)).toBe(true);
    expect(tried.slice(8, 72).some(Boolean)).toBe(false);
    expect(tried.slice(72).every(Boolean)).toBe(true);
    // That probe was encoder-bound again: off for 64 more. Then the link is slow: LZ4 comes back to stay.
    const later = feed(policy, 164, 0.1, 5);
    expect(later.slice(0, 64).some(Boolean)).toBe(false);
    expect(later.slice(64).every(Boolean)).toBe(true);
  });

  it('judges a window by its sums, so one slow start does not turn LZ4 off', () => {
    const policy = new Lz4Policy('adaptive');
    policy.record(5, 0, true);
    expect(feed(policy, 7, 0.2, 1.5).every(Boolean)).toBe(true);
    expect(policy.enabled).toBe(true);
  });

  it('never changes in the fixed modes', () => {
    const always = new Lz4Policy('always');
    const off = new Lz4Policy('off');
    expect(feed(always, 100, 5, 0).every(Boolean)).toBe(true);
    expect(feed(off, 100, 0, 5).some(Boolean)).toBe(false);
  });
});
