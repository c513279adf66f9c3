import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';
import { ChecksumError, MemoryRegion, ProtocolError } from '../dist/src/index.js';
import { PageBatchEncoder } from '../dist/src/codec/page-batch-encoder.js';
import { PageBatchDecoder } from '../dist/src/codec/page-batch-decoder.js';
import { RECORD_HEADER_BYTES } from '../dist/src/codec/page-records.js';
import { FilePageStore, RegionPageStore } from '../dist/src/memory/page-store.js';
import { regionDigest } from '../dist/src/codec/page-hashes.js';

const PAGE = 4096;

function mixedRegion(pages: number): MemoryRegion {
  const bytes = Buffer.alloc(pages * PAGE);
  for (let p = 0; p < pages; p++) if (p % 3 !== 0) randomFillSync(bytes, p * PAGE, PAGE);
  return MemoryRegion.fromMemory(bytes);
}

function all(n: number): Uint32Array {
  return Uint32Array.from({ length: n }, (_, i) => i);
}

describe('page batch codec', () => {
  it('round-trips a batch and agrees on the region digest', () => {
    const source = mixedRegion(64);
    const target = MemoryRegion.fromMemory(Buffer.alloc(64 * PAGE));
    const encoder = new PageBatchEncoder(source);
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    const batch = encoder.encode(all(64), true);
    expect(batch.zeroSkipped).toBe(22);
    expect(batch.rawRecords).toBe(42);
    decoder.apply(batch.records, batch.recordCount);
    expect(Buffer.from(target.view(0, 64 * PAGE)).equals(Buffer.from(source.view(0, 64 * PAGE)))).toBe(true);
    expect(regionDigest(decoder.heldHashes)).toBe(regionDigest(encoder.sentHashes));
  });

  it('writes verified pages into a file store: runs, gaps and zero records land at their offsets', () => {
    const source = mixedRegion(40);
    const dir = tempDir();
    try {
      const path = join(dir.dir, 'pages.img');
      writeFileSync(join(dir.dir, 'taken.img'), 'x');
      expect(() => FilePageStore.create(join(dir.dir, 'taken.img'), 40 * PAGE, PAGE)).toThrow(/cannot create/);
      const store = FilePageStore.create(path, 40 * PAGE, PAGE);
      const decoder = new PageBatchDecoder(store);
      const encoder = new PageBatchEncoder(source);
      // Out of order and with gaps, zero pages as ZERO records over pages that held data.
      for (const pages of [[5, 6, 7, 8, 20, 2, 3, 39, 0], [1, 4, 9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38], [0, 3, 6]]) {
        const batch = encoder.encode(Uint32Array.from(pages), false);
        decoder.apply(batch.records, batch.recordCount);
        encoder.release(batch);
      }
      store.sync();
      store.close();
      expect(readFileSync(path).equals(Buffer.from(source.view(0, 40 * PAGE)))).toBe(true);
      expect(regionDigest(decoder.heldHashes)).toBe(regionDigest(encoder.sentHashes));
    } finally {
      dir.cleanup();
    }
  });

  it('sends a page that became zero as a ZERO record when not skipping', () => {
    const source = mixedRegion(4);
    const target = MemoryRegion.fromMemory(Buffer.alloc(4 * PAGE, 0xff));
    const batch = new PageBatchEncoder(source).encode(all(4), false);
    expect(batch.zeroRecords).toBe(2);
    new PageBatchDecoder(new RegionPageStore(target)).apply(batch.records, batch.recordCount);
    expect(Buffer.from(target.view(0, 4 * PAGE)).equals(Buffer.from(source.view(0, 4 * PAGE)))).toBe(true);
  });

  it('names the page whose bytes were corrupted and never writes it', () => {
    const source = mixedRegion(8);
    const targetBytes = Buffer.alloc(8 * PAGE);
    const target = MemoryRegion.fromMemory(targetBytes);
    const batch = new PageBatchEncoder(source).encode(all(8), true);
    // Records: pages 1,2,4,5,7 (0,3,6 are zero and skipped). Flip a byte inside page 4's payload.
    const third = 2 * (RECORD_HEADER_BYTES + PAGE) + RECORD_HEADER_BYTES + 100;
    batch.records[third] ^= 1;
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    let error: unknown;
    try { decoder.apply(batch.records, batch.recordCount); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(ChecksumError);
    expect((error as ChecksumError).pageIndex).toBe(4);
    expect(decoder.pagesApplied).toBe(2);
    expect(targetBytes.subarray(4 * PAGE, 5 * PAGE).every((b) => b === 0)).toBe(true);
  });

  it('rejects an out-of-range page index, a bad encoding, a truncated batch and trailing bytes', () => {
    const source = mixedRegion(4);
    const target = MemoryRegion.fromMemory(Buffer.alloc(2 * PAGE));
    const batch = new PageBatchEncoder(source).encode(Uint32Array.of(1), false);
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    const outOfRange = Buffer.from(batch.records);
    outOfRange.writeUInt32LE(2, 0);
    expect(() => decoder.apply(outOfRange, 1)).toThrow(/page index 2 is outside/);
    const badEncoding = Buffer.from(batch.records);
    badEncoding.writeUInt8(77, 4);
    expect(() => decoder.apply(badEncoding, 1)).toThrow(ProtocolError);
    expect(() => decoder.apply(batch.records.subarray(0, 100), 1)).toThrow(/truncated/);
    expect(() => decoder.apply(batch.records.subarray(0, 10), 1)).toThrow(/truncated/);
    expect(() => decoder.apply(Buffer.concat([batch.records, Buffer.alloc(3)]), 1)).toThrow(/after its last record/);
    expect(() => decoder.apply(batch.records, 2)).toThrow(/truncated/);
  });

  it('survives random mutations of a valid batch: each either applies with verified bytes or fails cleanly', () => {
    const source = mixedRegion(16);
    const batch = new PageBatchEncoder(source).encode(all(16), false);
    let seed = 7;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    for (let trial = 0; trial < 500; trial++) {
      const mutated = Buffer.from(batch.records.subarray(0, rnd(batch.records.length + 1)));
      for (let k = 0; k < 1 + rnd(4); k++) if (mutated.length) mutated[rnd(mutated.length)] = rnd(256);
      const targetBytes = Buffer.alloc(16 * PAGE);
      const decoder = new PageBatchDecoder(new RegionPageStore(MemoryRegion.fromMemory(targetBytes)));
      try {
        decoder.apply(mutated, batch.recordCount);
      } catch (e) {
        expect(e instanceof ProtocolError || e instanceof ChecksumError).toBe(true);
      }
      // Whatever was applied matches the source page it claims to be.
      for (let p = 0; p < 16; p++) {
        const got = targetBytes.subarray(p * PAGE, (p + 1) * PAGE);
        if (got.some((b) => b !== 0)) expect(got.equals(Buffer.from(source.view(p * PAGE, PAGE)))).toBe(true);
      }
    }
  });
});
