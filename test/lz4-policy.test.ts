// The adaptive LZ4 policy: a pure function of the batch timings it is fed.
import { describe, expect, it } from 'vitest';
import { Lz4Policy, type BatchTiming } from '../dist/src/codec/lz4-policy.js';

const MIB = 2 ** 20;

/**
 * A stream of 1 MiB batches over a link of linkMBps (per ms: 1000 bytes per MB/s) whose encoder moves
 * encodeOnMBps of pages with LZ4 and encodeOffMBps without, and whose pages shrink to ratioOn / ratioOff
 * of their size: each batch waits on the link for what its wire bytes take there.
 */
function link(linkMBps: number, encodeOnMBps: number, encodeOffMBps: number, ratioOn = 0.35, ratioOff = 0.55) {
  return (lz4: boolean): BatchTiming => {
    const wireBytes = MIB * (lz4 ? ratioOn : ratioOff);
    return {
      pageBytes: MIB, wireBytes, lz4,
      encodeMs: MIB / ((lz4 ? encodeOnMBps : encodeOffMBps) * 1000),
      linkMs: wireBytes / (linkMBps * 1000),
    };
  };
}

/** Feeds n batches as the sender would, each tried with LZ4 if the policy says so; returns those choices. */
function feed(policy: Lz4Policy, n: number, batch: (lz4: boolean) => BatchTiming): boolean[] {
  const tried: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const lz4 = policy.enabled;
    tried.push(lz4);
    policy.record(batch(lz4));
  }
  return tried;
}

const share = (tried: boolean[]) => tried.filter(Boolean).length / tried.length;

describe('Lz4Policy', () => {
  it('keeps LZ4 on behind a slow link: a 60 MB/s share against an encoder of 200 MB/s', () => {
    const tried = feed(new Lz4Policy('adaptive'), 400, link(60, 200, 1000));
    expect(tried.slice(0, 8).every(Boolean)).toBe(true);
    // One window without LZ4 to measure it, then not again for 32 windows: even an unbounded encoder
    // could not make 55% of the bytes beat 35% over this link. Then one forced probe, in case that
    // estimate went stale.
    expect(tried.slice(8, 16).some(Boolean)).toBe(false);
    expect(tried.slice(16, 16 + 32 * 8).every(Boolean)).toBe(true);
    expect(share(tried)).toBeGreaterThan(0.95);
  });

  it('keeps LZ4 on when other processes slow the encoder, as long as the link is still the limit', () => {
    // Encoding at 120 MB/s with LZ4 still beats what the link takes without it: 60 / 0.55 = 109 MB/s of pages.
    expect(share(feed(new Lz4Policy('adaptive'), 400, link(60, 120, 400)))).toBeGreaterThan(0.85);
  });

  it('turns LZ4 off where the encoder is the limit, and probes it again now and then', () => {
    const tried = feed(new Lz4Policy('adaptive'), 400, link(2000, 200, 1000));
    expect(tried.slice(8, 16).some(Boolean)).toBe(false);
    expect(share(tried)).toBeLessThan(0.2);
    expect(tried.slice(100).some(Boolean)).toBe(true);
  });

  it('follows a link that gets slower', () => {
    const policy = new Lz4Policy('adaptive');
    expect(share(feed(policy, 200, link(2000, 200, 1000)))).toBeLessThan(0.2);
    const later = feed(policy, 400, link(50, 200, 1000));
    expect(share(later.slice(100))).toBeGreaterThan(0.85);
  });

  it('probes LZ4 again now and then where it looked useless, and takes it up once the content compresses', () => {
    const policy = new Lz4Policy('adaptive');
    // Incompressible pages: LZ4 saves nothing (its records are a little larger), so it cannot win over the link and is left off.
    expect(share(feed(policy, 200, link(60, 200, 1000, 0.56, 0.55)).slice(16))).toBeLessThan(0.2);
    // Compressible pages: the next forced probe finds it, and LZ4 stays.
    const later = feed(policy, 600, link(60, 200, 1000, 0.3, 0.55));
    expect(share(later.slice(400))).toBeGreaterThan(0.9);
  });

  it('ignores a batch encoded under the other setting, and never changes in the fixed modes', () => {
    const policy = new Lz4Policy('adaptive');
    for (let i = 0; i < 100; i++) policy.record(link(2000, 200, 1000)(false));
    expect(policy.enabled).toBe(true);
    expect(feed(new Lz4Policy('always'), 100, link(5000, 100, 1000)).every(Boolean)).toBe(true);
    expect(feed(new Lz4Policy('off'), 100, link(10, 1000, 1000)).some(Boolean)).toBe(false);
  });
});
