// How the source learns which pages changed since it last sent them: a dirty bitmap that writers set,
// or, for regions without write hooks, xxHash64 of every page compared with the hash last sent.
import { binding } from '../native/engine.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import type { MemoryRegion } from './region.js';

/** Batches of page indices, ascending; each batch is valid until the next is requested. */
export interface PageList {
  readonly count: number;
  batches(batchPages: number): Iterable<Uint32Array>;
}

/** A PageList of these pages, in this order. */
export function pageListOf(pages: Uint32Array): PageList {
  return {
    count: pages.length,
    *batches(batchPages: number) {
      for (let i = 0; i < pages.length; i += batchPages) yield pages.subarray(i, i + batchPages);
    },
  };
}

export interface DirtyTracker {
  /** Forgets what was recorded so far: called right before round 1 reads every page. */
  start(): void;
  /** How many pages changed since the last collect(), without taking them. */
  pending(): number;
  /** Takes the pages that changed since the last collect() (or start()). */
  collect(): PageList;
}

export class BitmapTracker implements DirtyTracker {
  constructor(private readonly bitmap: DirtyBitmap) {}
  start(): void {
    this.bitmap.sync();
  }
  pending(): number {
    return this.bitmap.count();
  }
  collect(): PageList {
    return this.bitmap.sync();
  }
}

/** Pages processed per native hashing call. */
const HASH_CHUNK_PAGES = 4096;

export class HashTracker implements DirtyTracker {
  private readonly current: BigUint64Array;

  /** sentHashes is the encoder's record of what the target holds (PageBatchEncoder.sentHashes). */
  constructor(private readonly region: MemoryRegion, private readonly sentHashes: BigUint64Array) {
    this.current = new BigUint64Array(region.pageCount);
  }

  start(): void {}

  /**
   * The last pending() pass, reusable by a collect() in the same synchronous turn: the source asks
   * pending() and then, if it iterates, collect() right away, and one pass over a large region is
   * costly. Any await in between (the pause before the final round) drops it, so the final round
   * always hashes afresh. A page written between the two calls is still caught next round.
   */
  private lastPass: Uint32Array | undefined;

  pending(): number {
    const changed = this.changedPages();
    this.lastPass = changed;
    queueMicrotask(() => { this.lastPass = undefined; });
    return changed.length;
  }

  collect(): PageList {
    const changed = this.lastPass ?? this.changedPages();
    this.lastPass = undefined;
    return {
      count: changed.length,
      *batches(batchPages: number) {
        for (let i = 0; i < changed.length; i += batchPages) yield changed.subarray(i, i + batchPages);
      },
    };
  }

  private changedPages(): Uint32Array {
    const { region, current, sentHashes } = this;
    const engine = binding();
    for (let first = 0; first < region.pageCount; first += HASH_CHUNK_PAGES) {
      const count = Math.min(HASH_CHUNK_PAGES, region.pageCount - first);
      engine.hashPages(region.native, region.pageSize, first, count, current, first);
    }
    const changed: number[] = [];
    for (let page = 0; page < region.pageCount; page++) {
      if (current[page] !== sentHashes[page]) changed.push(page);
    }
    return Uint32Array.from(changed);
  }
}
