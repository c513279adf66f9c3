import { ApplyStatus } from '../native/binding.js';
import { streamOfPage } from '../native/twin/stream-ownership.js';
import { ChecksumError, ProtocolError } from '../errors.js';
import type { PageStore } from './page-store.js';
import { newPageHashes } from './page-hashes.js';
import { RECORD_HEADER_BYTES } from './page-records.js';

/**
 * Verifies and applies batches of wire records to the target's pages, one native call per batch on a
 * pool thread. Batches queue up and are applied strictly in arrival order (DELTA and DUP records read
 * what earlier ones wrote), while the caller goes on reading the socket.
 */
export class PageBatchDecoder {
  /** The xxHash64 of each page the store holds, as verified on arrival. */
  readonly heldHashes: BigUint64Array;
  pagesApplied = 0;
  private queue: Promise<void> = Promise.resolve();
  /** One promise per queued batch, oldest first; none of them rejects (failures land in `failure`). */
  private readonly inflight: Promise<void>[] = [];
  private failure: Error | undefined;
  private noteFailure!: (error: Error) => void;
  /** Resolves with the first batch's failure, as it happens (never rejects): a reader can stop waiting for frames. */
  readonly failed = new Promise<Error>((resolve) => { this.noteFailure = resolve; });

  /** heldHashes may be shared with the decoders of other streams, each writing only its own pages' entries. */
  constructor(private readonly store: PageStore, heldHashes?: BigUint64Array) {
    this.heldHashes = heldHashes ?? newPageHashes(store.pageCount, store.pageSize);
  }

  /**
   * Queues a batch behind the others. The records buffer must stay untouched until settled() resolves,
   * or until `done` is called: once the batch is applied, or skipped after an earlier failure.
   * The batch came on `stream` of `streams` parallel streams: it may write and copy only that stream's
   * pages (docs/PROTOCOL.md section 2). Throws the error of an earlier batch, if one failed.
   */
  enqueue(records: Uint8Array, recordCount: number, done?: () => void, stream = 0, streams = 1): void {
    if (this.failure) throw this.failure;
    this.queue = this.queue.then(async () => {
      try {
        if (!this.failure) await this.apply(records, recordCount, stream, streams);
      } catch (error) {
        this.failure = error as Error;
        this.noteFailure(this.failure);
      } finally {
        done?.();
      }
    });
    this.inflight.push(this.queue);
  }

  /** Waits until at most `max` batches are still queued; throws the first failure, if any. */
  async drainTo(max: number): Promise<void> {
    while (this.inflight.length > max) await this.inflight.shift();
    if (this.failure) throw this.failure;
  }

  /** Resolves once every queued batch is applied; throws ProtocolError, ChecksumError or StorageError otherwise. */
  settled(): Promise<void> {
    return this.drainTo(0);
  }

  private async apply(records: Uint8Array, recordCount: number, stream: number, streams: number): Promise<void> {
    const [status, where, applied] = await this.store.applyRecords(records, recordCount, this.heldHashes, stream, streams);
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
      case ApplyStatus.BadPayload:
        throw new ProtocolError(`page ${where} has a malformed DELTA or LZ4 payload`);
      case ApplyStatus.TrailingBytes:
        throw new ProtocolError('page batch has bytes after its last record');
      case ApplyStatus.WrongStream:
        throw wrongStream(records, where, stream, streams);
      default:
        throw new ProtocolError(`page batch rejected with status ${status as number}`);
    }
  }
}

/** The refusal of a record that writes (or copies) a page of another stream, read from the record at `offset`. */
function wrongStream(records: Uint8Array, offset: number, stream: number, streams: number): ProtocolError {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const page = view.getUint32(offset, true);
  const owner = streamOfPage(page, streams);
  if (owner !== stream) return new ProtocolError(`page ${page} arrived on stream ${stream}; it belongs to stream ${owner}`);
  const base = view.getUint32(offset + RECORD_HEADER_BYTES, true);
  return new ProtocolError(`page ${page} on stream ${stream} copies page ${base} of stream ${streamOfPage(base, streams)}`);
}
