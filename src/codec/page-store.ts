// What PageBatchDecoder applies batches to. The stores themselves (a region in memory, a file, an
// embedder's VerifiedPageStore) belong to the target, in src/target/.
import type { ApplyResult } from '../native/binding.js';

export interface PageStore {
  readonly pageSize: number;
  readonly pageCount: number;
  /**
   * Verifies and stores a batch of wire records on a pool thread; resolves [status,
   * pageIndexOrRecordNo, recordsApplied]. Batches must be applied one after another, in stream order.
   * The batch came on `stream` of `streams` parallel streams (left out: 0 of 1): a record of another
   * stream's page, or a DUP of one, must refuse the whole batch with ApplyStatus.WrongStream before
   * anything is applied, as the native applyPages does when given both.
   */
  applyRecords(records: Uint8Array, recordCount: number, heldHashes: BigUint64Array, stream?: number,
    streams?: number): Promise<ApplyResult>;
}
