import { native } from '../native/binding.js';
import type { MemoryRegion } from '../memory/region.js';
import { maxRecordBytes } from './page-records.js';
import { newPageHashes } from './page-hashes.js';

export interface EncodedBatch {
  /** The records, ready to frame. */
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

  constructor(private readonly region: MemoryRegion) {
    this.sentHashes = newPageHashes(region.pageCount, region.pageSize);
  }

  encode(indices: Uint32Array, skipZero: boolean): EncodedBatch {
    const { region } = this;
    // Allocated per batch: the socket keeps it until written, and the allocator pools these sizes.
    const out = Buffer.allocUnsafe(maxRecordBytes(indices.length, region.pageSize));
    const [bytes, recordCount, zeroRecords, rawRecords, zeroSkipped] = native().encodePages(
      region.native, region.pageSize, region.pageCount, indices, skipZero, out, this.sentHashes);
    return { records: out.subarray(0, bytes), recordCount, zeroRecords, rawRecords, zeroSkipped };
  }
}
