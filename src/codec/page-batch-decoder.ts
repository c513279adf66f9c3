import { ApplyStatus } from '../native/binding.js';
import { ChecksumError, ProtocolError } from '../errors.js';
import type { PageStore } from '../memory/page-store.js';
import { newPageHashes } from './page-hashes.js';

/** Verifies and applies batches of wire records to the target's pages, one native call per batch. */
export class PageBatchDecoder {
  /** The xxHash64 of each page the store holds, as verified on arrival. */
  readonly heldHashes: BigUint64Array;
  pagesApplied = 0;

  constructor(private readonly store: PageStore) {
    this.heldHashes = newPageHashes(store.pageCount, store.pageSize);
  }

  /** Throws ProtocolError or ChecksumError naming the page; a bad page is never written. */
  apply(records: Uint8Array, recordCount: number): void {
    const [status, where, applied] = this.store.applyRecords(records, recordCount, this.heldHashes);
    this.pagesApplied += applied;
    switch (status) {
      case ApplyStatus.Ok: return;
      case ApplyStatus.ChecksumMismatch:
        throw new ChecksumError(`page ${where} does not match its xxHash64: corrupted in transit`, where);
      case ApplyStatus.Truncated:
        throw new ProtocolError('page batch is truncated: a record runs past the end of its frame');
      case ApplyStatus.IndexOutOfRange:
        throw new ProtocolError(`page index ${where} is outside the region of ${this.store.pageCount} pages`);
      case ApplyStatus.BadEncoding:
        throw new ProtocolError(`page ${where} has an unknown encoding`);
      case ApplyStatus.BadLength:
        throw new ProtocolError(`page ${where} has a payload length its encoding does not allow`);
      case ApplyStatus.TrailingBytes:
        throw new ProtocolError('page batch has bytes after its last record');
      default:
        throw new ProtocolError(`page batch rejected with status ${status as number}`);
    }
  }
}
