import { InvalidArgumentError } from '../errors.js';
import { native } from '../native/binding.js';
import type { MemoryRegion } from '../memory/region.js';
import { maxRecordBytes } from './page-records.js';
import { newPageHashes } from './page-hashes.js';

export interface EncodedBatch {
  /** The records, ready to frame. Hand the batch back with release() once the socket has written it. */
  records: Buffer;
  recordCount: number;
  zeroRecords: number;
  rawRecords: number;
  /** Zero pages left out because the target already holds zeros there. */
  zeroSkipped: number;
}

/** Turns batches of page indices into wire records in one native call each, and remembers what it sent. */
export class PageBatchEncoder {
  /** The xxHash64 of each page as last sent (the target's contents, once it has applied them). */
  readonly sentHashes: BigUint64Array;

  /**
   * Output buffers written by the socket and handed back. Reusing them matters: a fresh buffer per
   * batch costs a page fault per 4 KiB on first touch, which measured 6x slower than the encoding.
   */
  private readonly spare: Buffer[] = [];

  constructor(private readonly region: MemoryRegion, private readonly batchPages = defaultBatchPages(region.pageSize)) {
    this.sentHashes = newPageHashes(region.pageCount, region.pageSize);
  }

  /** Encodes up to batchPages pages into a pooled buffer. */
  encode(indices: Uint32Array, skipZero: boolean): EncodedBatch {
    const { region } = this;
    if (indices.length > this.batchPages) {
      throw new InvalidArgumentError(`batch of ${indices.length} pages exceeds the encoder's ${this.batchPages}`);
    }
    const out = this.spare.pop() ?? Buffer.allocUnsafeSlow(maxRecordBytes(this.batchPages, region.pageSize));
    const [bytes, recordCount, zeroRecords, rawRecords, zeroSkipped] = native().encodePages(
      region.native, region.pageSize, region.pageCount, indices, skipZero, out, this.sentHashes);
    return { records: out.subarray(0, bytes), recordCount, zeroRecords, rawRecords, zeroSkipped };
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
