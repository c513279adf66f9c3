// The TypeScript twin's LZ4 block compressor is a port of the lz4 package's (a dev dependency only, so its
// install script never runs for an embedder). Both must emit the same bytes for any page.
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { HASH_TABLE_SIZE, compressBlock, compressBound } from '../dist/src/native/twin/lz4-block-compressor.js';

const original = createRequire(import.meta.url)('lz4/lib/binding.js') as {
  compressBound(length: number): number;
  compress(src: Uint8Array, dst: Uint8Array, sIdx?: number, eIdx?: number): number;
};

/** Pages of every kind the encoder meets: random, zero, text, runs, structured, and mixes of them. */
function pages(): Buffer[] {
  const out: Buffer[] = [];
  let seed = 7;
  const rnd = (n: number) => Math.floor(((seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 2 ** 32) * n);
  for (let i = 0; i < 200; i++) {
    const page = Buffer.alloc([512, 4096, 65536][i % 3]!);
    switch (i % 5) {
      case 0: randomFillSync(page); break;
      case 1: page.fill('the quick brown fox jumps over the lazy dog '.repeat(3).slice(rnd(40))); break;
      case 2: for (let at = 0; at < page.length; at += 4) page.writeUInt32LE(rnd(16) * 0x01000193, at); break;
      case 3: for (let k = 0; k < 20; k++) randomFillSync(page, rnd(page.length - 64), 1 + rnd(63)); break;
      default: break; // all zeros
    }
    out.push(page);
  }
  return out;
}

describe('the twin\'s LZ4 block compressor', () => {
  it('emits the lz4 package\'s bytes for every kind of page', () => {
    for (const page of pages()) {
      expect(compressBound(page.length)).toBe(original.compressBound(page.length));
      const ours = Buffer.alloc(compressBound(page.length));
      const theirs = Buffer.alloc(original.compressBound(page.length));
      const n = compressBlock(page, ours, 0, new Uint32Array(HASH_TABLE_SIZE), 0, ours.length);
      const m = original.compress(page, theirs);
      expect(n).toBe(m);
      expect(ours.subarray(0, n).equals(theirs.subarray(0, m))).toBe(true);
    }
  });
});
