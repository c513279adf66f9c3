// One bit per page on a SharedArrayBuffer, so writers in worker threads can mark pages with Atomics.
// The source syncs it as KVM's dirty log: an atomic fetch-and-clear per word, then a native scan of the
// snapshot. A writer must write the page first and mark it second; then a write that races a send is
// always seen by the next sync and sent again.
import { InvalidArgumentError } from '../errors.js';
import { binding } from '../native/engine.js';

const BITS_PER_WORD = 32;

export class DirtyBitmap {
  readonly pageCount: number;
  /** The shared words; hand `buffer` to a worker and rebuild it there with DirtyBitmap.attach(). */
  readonly words: Int32Array;
  private snapshot: Uint32Array | undefined;

  constructor(pageCount: number, buffer?: SharedArrayBuffer) {
    if (!Number.isSafeInteger(pageCount) || pageCount <= 0 || pageCount > 2 ** 32 - 1) {
      throw new InvalidArgumentError(`dirty bitmap needs 1 to 2^32-1 pages, got ${pageCount}`);
    }
    const wordCount = Math.ceil(pageCount / BITS_PER_WORD);
    const shared = buffer ?? new SharedArrayBuffer(wordCount * 4);
    if (shared.byteLength < wordCount * 4) {
      throw new InvalidArgumentError(`dirty bitmap buffer holds ${shared.byteLength} bytes, needs ${wordCount * 4}`);
    }
    this.pageCount = pageCount;
    this.words = new Int32Array(shared, 0, wordCount);
  }

  /** The same bitmap over a buffer received from another thread. */
  static attach(buffer: SharedArrayBuffer, pageCount: number): DirtyBitmap {
    return new DirtyBitmap(pageCount, buffer);
  }

  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  /** Marks one page written. Safe from any thread. */
  mark(page: number): void {
    if (!(page >= 0 && page < this.pageCount)) {
      throw new InvalidArgumentError(`page ${page} is outside the bitmap of ${this.pageCount} pages`);
    }
    Atomics.or(this.words, page >>> 5, 1 << (page & 31));
  }

  /** Marks every page in [first, first + count). */
  markRange(first: number, count: number): void {
    for (let page = first; page < first + count; page++) this.mark(page);
  }

  /** Pages marked since the last sync, without clearing them. */
  count(): number {
    return binding().dirtyCount(this.words, 0, this.words.length);
  }

  /** Atomically takes and clears every mark; returns the pages that were marked. */
  sync(): DirtyPages {
    this.snapshot ??= new Uint32Array(this.words.length);
    const count = binding().dirtySync(this.words, this.snapshot, 0, this.words.length);
    return new DirtyPages(this.snapshot, count);
  }
}

/** A synced snapshot of the bitmap: `count` pages, listed in ascending batches by the native scanner. */
export class DirtyPages {
  constructor(private readonly snapshot: Uint32Array, readonly count: number) {}

  /**
   * Yields the page indices in ascending order, at most `batchPages` at a time. Each batch is a view of
   * one reused array: consume it before asking for the next.
   */
  *batches(batchPages: number): Generator<Uint32Array> {
    const out = new Uint32Array(Math.max(batchPages, BITS_PER_WORD));
    let word = 0;
    while (word < this.snapshot.length) {
      const [written, next] = binding().dirtyScan(this.snapshot, word, this.snapshot.length, out);
      word = next;
      // The scanner fills whole words: below 32 pages a batch, split what it found.
      for (let at = 0; at < written; at += batchPages) yield out.subarray(at, Math.min(written, at + batchPages));
    }
  }
}
