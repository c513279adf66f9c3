// How the source learns which pages changed since it last sent them: a dirty bitmap that writers set,
// or, for regions without write hooks, xxHash64 of every page compared with the hash last sent.
import { availableParallelism } from 'node:os';
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

/** What a scan found: the pages changed since the last take() (or start()), not taken yet. */
export interface DirtyScan {
  readonly count: number;
  /**
   * How long finding them took. The final round scans again inside the pause, so the stop rule counts
   * this against the downtime budget.
   */
  readonly durationMs: number;
  /** Takes the pages, to send them; a bitmap also hands over pages written since the scan. */
  take(): PageList;
}

export interface DirtyTracker {
  /** Forgets what was recorded so far: called right before round 1 reads every page. */
  start(): void;
  scan(): Promise<DirtyScan>;
}

export class BitmapTracker implements DirtyTracker {
  constructor(private readonly bitmap: DirtyBitmap) {}
  start(): void {
    this.bitmap.sync();
  }
  async scan(): Promise<DirtyScan> {
    const began = performance.now();
    const count = this.bitmap.count();
    return { count, durationMs: performance.now() - began, take: () => this.bitmap.sync() };
  }
}

/** Fewest pages worth a pool thread of their own (8 MiB of 4 KiB pages); a smaller region is one call. */
const MIN_PAGES_PER_CALL = 2048;
/** Calls a pass splits into, to run side by side: one per core, within libuv's pool (4 threads by default). */
const CALLS_PER_PASS = Math.max(1, Math.min(availableParallelism(), Number(process.env.UV_THREADPOOL_SIZE) || 4));

/**
 * Hashes every page on the addon's pool threads (the JavaScript thread only waits) and compares each
 * hash with sentHashes there: no page's hash crosses into JavaScript.
 */
export class HashTracker implements DirtyTracker {
  /** sentHashes is the encoder's record of what the target holds (PageBatchEncoder.sentHashes). */
  constructor(private readonly region: MemoryRegion, private readonly sentHashes: BigUint64Array) {}

  start(): void {}

  async scan(): Promise<DirtyScan> {
    const began = performance.now();
    const changed = await this.changedPages();
    return { count: changed.length, durationMs: performance.now() - began, take: () => pageListOf(changed) };
  }

  private async changedPages(): Promise<Uint32Array> {
    const { region, sentHashes } = this;
    const { pageCount, pageSize } = region;
    const native = region.native;
    const engine = binding();
    // Each call lists its pages' changes at the start of its own slice of out; joined below.
    const out = new Uint32Array(pageCount);
    const calls = Math.max(1, Math.min(CALLS_PER_PASS, Math.floor(pageCount / MIN_PAGES_PER_CALL)));
    const perCall = Math.ceil(pageCount / calls);
    const parts: Promise<[first: number, found: number]>[] = [];
    for (let first = 0; first < pageCount; first += perCall) {
      const count = Math.min(perCall, pageCount - first);
      parts.push(engine.changedPages(native, pageSize, first, count, sentHashes, out.subarray(first, first + count))
        .then((found) => [first, found]));
    }
    let joined = 0;
    for (const [first, found] of await Promise.all(parts)) {
      out.copyWithin(joined, first, first + found);
      joined += found;
    }
    return out.subarray(0, joined);
  }
}
