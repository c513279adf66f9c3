// The page decoders (addon and twin) fed mutated and truncated batches carrying every encoding. After
// each one, every page must hold the bytes its verified hash names: nothing unverified is ever written.
// npm test runs PAGEWIRE_FUZZ_RUNS (default 2000) batches per decoder; by hand, as many as you like.
import { describe, expect, it } from 'vitest';
import { loadAddon, type NativeBinding } from '../../dist/src/native/binding.js';
import { twin } from '../../dist/src/native/twin/index.js';
import { randomWorkload } from '../helpers.js';

const TRIALS = Number(process.env.PAGEWIRE_FUZZ_RUNS ?? 2000);
const addon = loadAddon();
const implementations: [string, NativeBinding][] = [['addon', addon], ['twin', twin]];

describe('page decoders against hostile batches', () => {
  it.each(implementations)(`%s survives ${TRIALS} mutated and truncated batches: an error or verified pages, never a crash`, (_, engine) => {
    const pageSize = 1024;
    const pageCount = 48;
    const work = randomWorkload(99, pageSize, pageCount);
    for (let e = 0; e < 200; e++) work.edit();
    const encoder = new addon.PageEncoder(pageSize, pageCount, 16 * pageSize);
    const sent = new BigUint64Array(pageCount);
    const first = new Uint8Array(pageCount * (pageSize + 20));
    const all = Uint32Array.from({ length: pageCount }, (_, i) => i);
    const [firstLength, firstCount] = encoder.encodeSync(new DataView(work.region.buffer), all, false, first, sent);
    const before = work.region.slice();
    for (let e = 0; e < 60; e++) work.edit();
    const second = new Uint8Array(pageCount * (pageSize + 20));
    const [length, count] = encoder.encodeSync(new DataView(work.region.buffer), all, false, second, sent);
    const valid = second.subarray(0, length);
    let failures = 0;
    for (let trial = 0; trial < TRIALS; trial++) {
      // The target holds the first round; the second round's batch arrives mutated.
      const target = before.slice();
      const held = new BigUint64Array(pageCount);
      expect(engine.applyPagesSync(target, pageSize, pageCount, first.subarray(0, firstLength), firstCount, held)[0]).toBe(0);
      const mutated = valid.slice(0, trial % 5 === 0 ? work.rnd(valid.length + 1) : valid.length);
      for (let k = 0; k < 1 + work.rnd(4); k++) if (mutated.length) mutated[work.rnd(mutated.length)] = work.rnd(256);
      const [status] = engine.applyPagesSync(target, pageSize, pageCount, mutated, count, held);
      if (status !== 0) failures++;
      // Every page holds the bytes its verified hash names: nothing unverified was written.
      for (let p = 0; p < pageCount; p++) {
        expect(engine.xxh64(target.subarray(p * pageSize, (p + 1) * pageSize))).toBe(held[p]);
      }
    }
    expect(failures).toBeGreaterThan(TRIALS * 0.75);
  });
});
