import { InvalidArgumentError } from '../errors.js';
import type { NativePageEncoder } from '../native/binding.js';
import { binding } from '../native/engine.js';
import type { MemoryRegion } from '../memory/region.js';
import { maxRecordBytes } from './page-records.js';
import { newPageHashes } from './page-hashes.js';

/** Records of one batch, by encoding. */
export interface EncodingCounts {
  zeroRecords: number;
  deltaRecords: number;
  dupRecords: number;
  lz4Records: number;
  rawRecords: number;
  /** Zero pages left out because the target already holds zeros there. */
  zeroSkipped: number;
}

export interface EncodedBatch extends EncodingCounts {
  /** The records, ready to frame. Hand the batch back with release() once the socket has written it. */
  records: Buffer;
  recordCount: number;
}

/** QEMU's default xbzrle-cache-size. */
export const DEFAULT_PAGE_CACHE_BYTES = 64 * 1024 * 1024;

export interface PageBatchEncoderOptions {
  /** Pages per batch at most (default: about 1 MiB of pages). */
  batchPages?: number;
  /** Bytes of page cache for DELTA and DUP (default 64 MiB; 0 turns both off). */
  cacheBytes?: number;
  /** Shared with the encoders of the other streams, each writing only its own pages' entries. */
  sentHashes?: BigUint64Array;
}

/**
 * Turns batches of page indices into wire records, one native call per batch on a pool thread, and
 * remembers what it sent. Its page cache is state: batches must be sent in the order they are encoded.
 */
export class PageBatchEncoder {
  /** The xxHash64 of each page as last sent (the target's contents, once it has applied them). */
  readonly sentHashes: BigUint64Array;
  readonly batchPages: number;
  private readonly engine: NativePageEncoder;

  /**
   * Output buffers written by the socket and handed back. Reusing them matters: a fresh buffer per
   * batch costs a page fault per 4 KiB on first touch, which measured 6x slower than the encoding.
   */
  private readonly spare: Buffer[] = [];

  constructor(private readonly region: MemoryRegion, options: PageBatchEncoderOptions = {}) {
    this.batchPages = options.batchPages ?? defaultBatchPages(region.pageSize);
    const cacheBytes = options.cacheBytes ?? DEFAULT_PAGE_CACHE_BYTES;
    if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 0) {
      throw new InvalidArgumentError(`page cache size must be a non-negative integer of bytes, got ${cacheBytes}`);
    }
    this.sentHashes = options.sentHashes ?? newPageHashes(region.pageCount, region.pageSize);
    this.engine = new (binding().PageEncoder)(region.pageSize, region.pageCount, cacheBytes);
  }

  /** Pages the cache holds at most. */
  get cacheSlots(): number {
    return this.engine.cacheSlots;
  }

  /**
   * Encodes up to batchPages pages into a pooled buffer, off the JavaScript thread. `bulk` for a first
   * pass over the region: it fills the page cache once instead of streaming every page through it.
   * `lz4` false: pages that would go LZ4 go RAW, for when encoding rather than the link is the limit.
   */
  async encode(indices: Uint32Array, skipZero: boolean, bulk = false, lz4 = true): Promise<EncodedBatch> {
    if (indices.length > this.batchPages) {
      throw new InvalidArgumentError(`batch of ${indices.length} pages exceeds the encoder's ${this.batchPages}`);
    }
    this.engine.bulk = bulk;
    this.engine.lz4 = lz4;
    const out = this.spare.pop() ?? Buffer.allocUnsafeSlow(maxRecordBytes(this.batchPages, this.region.pageSize));
    try {
      const [bytes, recordCount, zeroRecords, deltaRecords, dupRecords, lz4Records, rawRecords, zeroSkipped] =
        await this.engine.encode(this.region.native, indices, skipZero, out, this.sentHashes);
      return {
        records: out.subarray(0, bytes), recordCount,
        zeroRecords, deltaRecords, dupRecords, lz4Records, rawRecords, zeroSkipped,
      };
    } catch (error) {
      this.spare.push(out);
      throw error;
    }
  }

  /** Returns a batch's buffer to the pool; the caller must not touch the batch afterwards. */
  release(batch: EncodedBatch): void {
    if (this.spare.length < MAX_SPARE_BUFFERS) {
      const records = batch.records;
      this.spare.push(Buffer.from(records.buffer, records.byteOffset, maxRecordBytes(this.batchPages, this.region.pageSize)));
    }
  }
}

const MAX_SPARE_BUFFERS = 8;
const DEFAULT_BATCH_BYTES = 1 << 20;

/** About 1 MiB of pages per batch (256 at 4 KiB), at least one. */
export function defaultBatchPages(pageSize: number): number {
  return Math.max(1, Math.floor(DEFAULT_BATCH_BYTES / pageSize));
}
