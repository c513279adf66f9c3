import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';
import { ChecksumError, MemoryRegion, ProtocolError } from '../dist/src/index.js';
import { PageBatchEncoder, type EncodedBatch } from '../dist/src/codec/page-batch-encoder.js';
import { PageBatchDecoder } from '../dist/src/codec/page-batch-decoder.js';
import { RECORD_HEADER_BYTES } from '../dist/src/codec/page-records.js';
import { FilePageStore, RegionPageStore } from '../dist/src/target/page-stores.js';
import { regionDigest } from '../dist/src/codec/page-hashes.js';
import { mixedImage } from '../dist/src/workload/mixed-image.js';
import { twin } from '../dist/src/native/twin/index.js';

const PAGE = 4096;

function mixedRegion(pages: number): MemoryRegion {
  const bytes = Buffer.alloc(pages * PAGE);
  for (let p = 0; p < pages; p++) if (p % 3 !== 0) randomFillSync(bytes, p * PAGE, PAGE);
  return MemoryRegion.fromMemory(bytes);
}

/** Blocks a file system (ext4) may add to a sparse file's allocation for its extent tree. */
const EXTENT_BLOCKS = 2;

/** Bytes the file system allocated to a file (st_blocks are 512 bytes). */
function allocatedBytes(path: string): number {
  return statSync(path).blocks * 512;
}

function all(n: number): Uint32Array {
  return Uint32Array.from({ length: n }, (_, i) => i);
}

function bytesOf(region: MemoryRegion): Buffer {
  return Buffer.from(region.view(0, region.byteLength));
}

async function applyOnce(decoder: PageBatchDecoder, records: Uint8Array, count: number): Promise<void> {
  decoder.enqueue(records, count);
  await decoder.settled();
}

async function migrateBatch(encoder: PageBatchEncoder, decoder: PageBatchDecoder, pages: Uint32Array, skipZero: boolean): Promise<EncodedBatch> {
  const batch = await encoder.encode(pages, skipZero);
  await applyOnce(decoder, batch.records, batch.recordCount);
  return batch;
}

/** Changes `count` bytes of every page at a page-dependent offset. */
function editEveryPage(bytes: Buffer, count: number): void {
  for (let p = 0; p < bytes.length / PAGE; p++) {
    const at = p * PAGE + ((p * 131) % (PAGE - count));
    for (let i = 0; i < count; i++) bytes[at + i] = bytes[at + i]! ^ 0xa5;
  }
}

describe('page batch codec', () => {
  it('round-trips a batch and agrees on the region digest', async () => {
    const source = mixedRegion(64);
    const target = MemoryRegion.fromMemory(Buffer.alloc(64 * PAGE));
    const encoder = new PageBatchEncoder(source);
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    const batch = await migrateBatch(encoder, decoder, all(64), true);
    expect(batch.zeroSkipped).toBe(22);
    expect(batch.rawRecords).toBe(42);
    expect(bytesOf(target).equals(bytesOf(source))).toBe(true);
    expect(regionDigest(decoder.heldHashes)).toBe(regionDigest(encoder.sentHashes));
  });

  it('writes verified pages into a file store: runs, gaps, zero and delta records land at their offsets', async () => {
    const sourceBytes = Buffer.from(mixedImage({ size: 40 * PAGE, seed: 3 }));
    const source = MemoryRegion.fromMemory(sourceBytes);
    const dir = tempDir();
    try {
      const path = join(dir.dir, 'pages.img');
      writeFileSync(join(dir.dir, 'taken.img'), 'x');
      await expect(FilePageStore.create(join(dir.dir, 'taken.img'), 40 * PAGE, PAGE)).rejects.toThrow(/cannot create/);
      const store = await FilePageStore.create(path, 40 * PAGE, PAGE);
      const decoder = new PageBatchDecoder(store);
      const encoder = new PageBatchEncoder(source);
      // Out of order and with gaps, zero pages as ZERO records over pages that held data.
      for (const pages of [[5, 6, 7, 8, 20, 2, 3, 39, 0], [1, 4, 9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38], [0, 3, 6]]) {
        encoder.release(await migrateBatch(encoder, decoder, Uint32Array.from(pages), false));
      }
      // Then DELTA records, which the file store reads back before writing.
      editEveryPage(sourceBytes, 64);
      const second = await migrateBatch(encoder, decoder, all(40), false);
      expect(second.deltaRecords).toBeGreaterThan(20);
      await store.sync();
      store.close();
      expect(readFileSync(path).equals(sourceBytes)).toBe(true);
      expect(regionDigest(decoder.heldHashes)).toBe(regionDigest(encoder.sentHashes));
    } finally {
      dir.cleanup();
    }
  });

  it('allocates nothing for ZERO records in a file store: never-written pages stay holes, a page that became zero is punched out', async () => {
    const dir = tempDir();
    try {
      const sourceBytes = Buffer.alloc(64 * PAGE);
      for (let p = 0; p < 64; p += 4) randomFillSync(sourceBytes, p * PAGE, PAGE); // 16 data pages, 48 zero
      const source = MemoryRegion.fromMemory(sourceBytes);
      const path = join(dir.dir, 'sparse.img');
      const store = await FilePageStore.create(path, 64 * PAGE, PAGE);
      const decoder = new PageBatchDecoder(store);
      const encoder = new PageBatchEncoder(source);
      const first = await migrateBatch(encoder, decoder, all(64), false);
      expect(first.zeroRecords).toBe(48);
      await store.sync();
      // The data pages, and at most a couple of blocks of the file system's extent tree for 16 extents.
      expect(allocatedBytes(path)).toBeLessThanOrEqual((16 + EXTENT_BLOCKS) * PAGE);
      // Half the data pages become zero and go again as ZERO records: their blocks are released.
      for (let p = 0; p < 64; p += 8) sourceBytes.fill(0, p * PAGE, (p + 1) * PAGE);
      const second = await migrateBatch(encoder, decoder, all(64), false);
      expect(second.zeroRecords).toBe(56);
      await store.sync();
      store.close();
      expect(allocatedBytes(path)).toBeLessThanOrEqual((8 + EXTENT_BLOCKS) * PAGE);
      expect(readFileSync(path).equals(sourceBytes)).toBe(true);
    } finally {
      dir.cleanup();
    }
  });

  it('the twin leaves never-written pages of a file as holes for ZERO records too', async () => {
    const dir = tempDir();
    try {
      const path = join(dir.dir, 'twin-sparse.img');
      const zeroHash = twin.xxh64(new Uint8Array(PAGE));
      const records = Buffer.alloc(32 * RECORD_HEADER_BYTES);
      for (let k = 0; k < 32; k++) {
        records.writeUInt32LE(k, k * RECORD_HEADER_BYTES);
        records.writeBigUInt64LE(zeroHash, k * RECORD_HEADER_BYTES + 12);
      }
      writeFileSync(path, '');
      truncateSync(path, 32 * PAGE);
      const fd = openSync(path, 'r+');
      try {
        const [status, , applied] = await twin.applyPages(fd, PAGE, 32, records, 32, new BigUint64Array(32));
        expect([status, applied]).toEqual([0, 32]);
      } finally {
        closeSync(fd);
      }
      expect(allocatedBytes(path)).toBe(0);
      expect(readFileSync(path).equals(Buffer.alloc(32 * PAGE))).toBe(true);
    } finally {
      dir.cleanup();
    }
  });

  it('sends a page that became zero as a ZERO record when not skipping', async () => {
    const source = mixedRegion(4);
    const target = MemoryRegion.fromMemory(Buffer.alloc(4 * PAGE, 0xff));
    const batch = await migrateBatch(new PageBatchEncoder(source), new PageBatchDecoder(new RegionPageStore(target)), all(4), false);
    expect(batch.zeroRecords).toBe(2);
    expect(bytesOf(target).equals(bytesOf(source))).toBe(true);
  });

  it('sends a mixed image in at most 55% of its bytes, and a round with 64 changed bytes per page in at most 10%', async () => {
    const size = 8 * 2 ** 20;
    const sourceBytes = mixedImage({ size, zero: 0.4, text: 0.3, seed: 11 });
    const source = MemoryRegion.fromMemory(sourceBytes);
    const target = MemoryRegion.fromMemory(Buffer.alloc(size));
    const encoder = new PageBatchEncoder(source);
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    const sent = async (skipZero: boolean) => {
      let bytes = 0;
      const counts = { zero: 0, delta: 0, dup: 0, lz4: 0, raw: 0 };
      for (let first = 0; first < size / PAGE; first += encoder.batchPages) {
        const pages = all(encoder.batchPages).map((i) => i + first);
        const batch = await migrateBatch(encoder, decoder, pages, skipZero);
        bytes += batch.records.length;
        counts.zero += batch.zeroRecords + batch.zeroSkipped;
        counts.delta += batch.deltaRecords;
        counts.dup += batch.dupRecords;
        counts.lz4 += batch.lz4Records;
        counts.raw += batch.rawRecords;
        encoder.release(batch);
      }
      return { bytes, counts };
    };
    const first = await sent(true);
    expect(first.bytes / size).toBeLessThanOrEqual(0.55);
    expect(first.counts.lz4).toBeGreaterThan(0);
    expect(bytesOf(target).equals(sourceBytes)).toBe(true);

    editEveryPage(sourceBytes, 64);
    const second = await sent(false);
    expect(second.bytes / size).toBeLessThanOrEqual(0.10);
    // Every page the first round sent is in the cache; pages sent as skipped zeros are not, and the
    // 64 new bytes in them go as LZ4.
    expect(second.counts.delta).toBe(size / PAGE - first.counts.zero);
    expect(second.counts.lz4).toBe(first.counts.zero);
    expect(bytesOf(target).equals(sourceBytes)).toBe(true);
    expect(regionDigest(decoder.heldHashes)).toBe(regionDigest(encoder.sentHashes));
  });

  it('sends a page equal to one already sent as a DUP reference, and never with the cache off', async () => {
    const bytes = Buffer.alloc(8 * PAGE);
    randomFillSync(bytes, 0, PAGE);
    for (const p of [3, 5, 6]) bytes.copy(bytes, p * PAGE, 0, PAGE);
    const target = MemoryRegion.fromMemory(Buffer.alloc(8 * PAGE));
    const region = MemoryRegion.fromMemory(bytes);
    const batch = await migrateBatch(new PageBatchEncoder(region), new PageBatchDecoder(new RegionPageStore(target)), all(8), true);
    expect(batch.dupRecords).toBe(3);
    expect(batch.records.length).toBe(4 * RECORD_HEADER_BYTES + PAGE + 3 * 4);
    expect(bytesOf(target).equals(bytes)).toBe(true);

    const noCache = await new PageBatchEncoder(region, { cacheBytes: 0 }).encode(all(8), true);
    expect(noCache.dupRecords).toBe(0);
    expect(noCache.rawRecords).toBe(4);
  });

  it('fails naming the page when a DELTA meets contents the source did not send', async () => {
    const bytes = Buffer.alloc(4 * PAGE);
    randomFillSync(bytes);
    const targetBytes = Buffer.alloc(4 * PAGE);
    const encoder = new PageBatchEncoder(MemoryRegion.fromMemory(bytes));
    const decoder = new PageBatchDecoder(new RegionPageStore(MemoryRegion.fromMemory(targetBytes)));
    await migrateBatch(encoder, decoder, all(4), false);
    targetBytes[2 * PAGE + 9] ^= 1; // the target's copy of page 2 drifts
    editEveryPage(bytes, 8);
    const batch = await encoder.encode(all(4), false);
    expect(batch.deltaRecords).toBe(4);
    const error = await applyOnce(decoder, batch.records, batch.recordCount).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChecksumError);
    expect((error as ChecksumError).pageIndex).toBe(2);
    expect(targetBytes.subarray(2 * PAGE, 3 * PAGE).equals(bytes.subarray(2 * PAGE, 3 * PAGE))).toBe(false);
  });

  it('names the page whose bytes were corrupted and never writes it', async () => {
    const source = mixedRegion(8);
    const targetBytes = Buffer.alloc(8 * PAGE);
    const target = MemoryRegion.fromMemory(targetBytes);
    const batch = await new PageBatchEncoder(source).encode(all(8), true);
    // Records: pages 1,2,4,5,7 (0,3,6 are zero and skipped). Flip a byte inside page 4's payload.
    const third = 2 * (RECORD_HEADER_BYTES + PAGE) + RECORD_HEADER_BYTES + 100;
    batch.records[third] ^= 1;
    const decoder = new PageBatchDecoder(new RegionPageStore(target));
    const error = await applyOnce(decoder, batch.records, batch.recordCount).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChecksumError);
    expect((error as ChecksumError).pageIndex).toBe(4);
    expect(decoder.pagesApplied).toBe(2);
    expect(targetBytes.subarray(4 * PAGE, 5 * PAGE).every((b) => b === 0)).toBe(true);
  });

  it('rejects an out-of-range page index, a bad encoding, a truncated batch and trailing bytes', async () => {
    const source = mixedRegion(4);
    const target = MemoryRegion.fromMemory(Buffer.alloc(2 * PAGE));
    const batch = await new PageBatchEncoder(source).encode(Uint32Array.of(1), false);
    const apply = (records: Uint8Array, count: number) =>
      applyOnce(new PageBatchDecoder(new RegionPageStore(target)), records, count);
    const outOfRange = Buffer.from(batch.records);
    outOfRange.writeUInt32LE(2, 0);
    await expect(apply(outOfRange, 1)).rejects.toThrow(/page index 2 is outside/);
    const badEncoding = Buffer.from(batch.records);
    badEncoding.writeUInt8(77, 4);
    await expect(apply(badEncoding, 1)).rejects.toThrow(ProtocolError);
    await expect(apply(batch.records.subarray(0, 100), 1)).rejects.toThrow(/truncated/);
    await expect(apply(batch.records.subarray(0, 10), 1)).rejects.toThrow(/truncated/);
    await expect(apply(Buffer.concat([batch.records, Buffer.alloc(3)]), 1)).rejects.toThrow(/after its last record/);
    await expect(apply(batch.records, 2)).rejects.toThrow(/truncated/);
  });

  it('refuses a batch that writes or copies a page of another stream, naming both streams, before applying any of it', async () => {
    // 3 streams, stripes of 256 pages: stream 1 owns pages 256..511, stream 2 owns 512..767.
    const pages = 3 * 256;
    const source = mixedRegion(pages);
    const own = await new PageBatchEncoder(source).encode(Uint32Array.of(256, 257), false);
    const other = await new PageBatchEncoder(source).encode(Uint32Array.of(600), false);
    const dupHeader = Buffer.alloc(RECORD_HEADER_BYTES + 4);
    dupHeader.writeUInt32LE(258, 0);
    dupHeader.writeUInt8(3, 4); // DUP
    dupHeader.writeUInt32LE(4, 8);
    dupHeader.writeUInt32LE(600, RECORD_HEADER_BYTES);
    const refusals: [Uint8Array, number, RegExp][] = [
      [Buffer.concat([own.records, other.records]), 3, /^page 600 arrived on stream 1; it belongs to stream 2$/],
      [Buffer.concat([own.records, dupHeader]), 3, /^page 258 on stream 1 copies page 600 of stream 2$/],
    ];
    const dir = tempDir();
    try {
      for (const [n, [records, count, message]] of refusals.entries()) {
        const memory = Buffer.alloc(pages * PAGE);
        const file = await FilePageStore.create(join(dir.dir, `${n}.img`), pages * PAGE, PAGE);
        for (const store of [new RegionPageStore(MemoryRegion.fromMemory(memory)), file]) {
          const decoder = new PageBatchDecoder(store);
          const held = decoder.heldHashes.slice();
          decoder.enqueue(records, count, undefined, 1, 3);
          const error = await decoder.settled().catch((e: unknown) => e);
          expect(error).toBeInstanceOf(ProtocolError);
          expect((error as ProtocolError).message).toMatch(message);
          expect(decoder.pagesApplied).toBe(0);
          expect(decoder.heldHashes).toEqual(held);
        }
        file.close();
        expect(memory.every((b) => b === 0)).toBe(true);
        expect(readFileSync(join(dir.dir, `${n}.img`)).every((b) => b === 0)).toBe(true);
        // The same records as stream 1 of 1, or on the streams that own them, go through the checks.
        const alone = new PageBatchDecoder(new RegionPageStore(MemoryRegion.fromMemory(Buffer.alloc(pages * PAGE))));
        alone.enqueue(own.records, 2, undefined, 1, 3);
        alone.enqueue(other.records, 1, undefined, 2, 3);
        await alone.settled();
        expect(alone.pagesApplied).toBe(3);
      }
    } finally {
      dir.cleanup();
    }
  });

  it('stops a queue of batches at the first bad one and applies none after it', async () => {
    const source = mixedRegion(12);
    const encoder = new PageBatchEncoder(source);
    const batches = [];
    for (const first of [0, 4, 8]) batches.push(Buffer.from((await encoder.encode(all(4).map((i) => i + first), false)).records));
    batches[1]![RECORD_HEADER_BYTES + 5] ^= 1; // page 4 is random: RAW; corrupt it
    const targetBytes = Buffer.alloc(12 * PAGE);
    const decoder = new PageBatchDecoder(new RegionPageStore(MemoryRegion.fromMemory(targetBytes)));
    for (const records of batches) decoder.enqueue(records, 4);
    await expect(decoder.settled()).rejects.toBeInstanceOf(ChecksumError);
    expect(decoder.pagesApplied).toBe(4);
    expect(targetBytes.subarray(8 * PAGE).every((b) => b === 0)).toBe(true);
  });
});
