// How the source learns which pages changed since it last sent them: a dirty bitmap that writers set,
// or, for regions without write hooks, xxHash64 of every page compared with the hash last sent.
import { availableParallelism } from 'node:os';
import { zeroPageHash } from '../codec/page-hashes.js';
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

/** What the source tells a scan. */
export interface ScanContext {
  /** The workload is paused (the final scan, after pause() resolved): it writes nothing during this scan. */
  paused: boolean;
}

export interface DirtyTracker {
  /** Forgets what was recorded so far: called right before round 1 reads every page. */
  start(): void;
  scan(context?: ScanContext): Promise<DirtyScan>;
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
 * Hashes every page (of a sparse file, every data page) on the addon's pool threads (the JavaScript
 * thread only waits) and compares each hash with sentHashes there: no page's hash crosses into JavaScript.
 */
export class HashTracker implements DirtyTracker {
  /** sentHashes is the encoder's record of what the target holds (PageBatchEncoder.sentHashes). */
  /** The region's file had no hole at the last scan. */
  private allData = false;

  constructor(private readonly region: MemoryRegion, private readonly sentHashes: BigUint64Array) {}

  start(): void {}

  async scan(): Promise<DirtyScan> {
    const began = performance.now();
    const changed = await this.changedPages();
    return { count: changed.length, durationMs: performance.now() - began, take: () => pageListOf(changed) };
  }

  private async changedPages(): Promise<Uint32Array> {
    const { pageCount } = this.region;
    // A file found all data stays so for hashing's purpose: a page punched out since reads as zeros,
    // which its hash compares correctly; only a hole can turn into data unseen. So it is not asked again.
    const data = this.allData ? undefined : this.region.dataPageRanges();
    if (!data) return this.hashedChanges([0], [pageCount]);
    const { starts, ends } = data;
    if (starts.length === 1 && starts[0] === 0 && ends[0] === pageCount) {
      this.allData = true;
      return this.hashedChanges(starts, ends);
    }
    // A sparse file: only its data is hashed, so a scan costs what the data does, not the file's size.
    // A hole reads as zeros: a page there changed only if what was sent for it was not a zero page.
    const hashed = await this.hashedChanges(starts, ends);
    const emptied = this.holesSentNonZero(starts, ends);
    return emptied.length === 0 ? hashed : mergeAscending(hashed, emptied);
  }

  /** The pages of the ranges [starts[i], ends[i]) whose hash differs from the one sent, ascending. */
  private async hashedChanges(starts: number[], ends: number[]): Promise<Uint32Array> {
    const { region, sentHashes } = this;
    const { pageSize } = region;
    const native = region.native;
    const engine = binding();
    const total = starts.reduce((n, start, i) => n + ends[i]! - start, 0);
    // Each call lists its pages' changes at the start of its own slice of out; joined below.
    const out = new Uint32Array(total);
    const calls = Math.max(1, Math.min(CALLS_PER_PASS, Math.floor(total / MIN_PAGES_PER_CALL)));
    const perCall = Math.ceil(total / calls);
    const parts: Promise<[at: number, found: number]>[] = [];
    let at = 0;
    for (const [i, start] of starts.entries()) {
      for (let first = start; first < ends[i]!; first += perCall) {
        const count = Math.min(perCall, ends[i]! - first);
        const slice = at;
        parts.push(engine.changedPages(native, pageSize, first, count, sentHashes, out.subarray(slice, slice + count))
          .then((found) => [slice, found]));
        at += count;
      }
    }
    let joined = 0;
    for (const [slice, found] of await Promise.all(parts)) {
      out.copyWithin(joined, slice, slice + found);
      joined += found;
    }
    return out.subarray(0, joined);
  }

  /** The pages outside the ranges (holes) whose sent hash is not a zero page's, ascending. */
  private holesSentNonZero(starts: number[], ends: number[]): Uint32Array {
    const { region, sentHashes } = this;
    const zero = zeroPageHash(region.pageSize);
    // Compared as 32-bit halves (little-endian, as the wire's hashes): no BigInt per page.
    const low = Number(zero & 0xffffffffn);
    const high = Number(zero >> 32n);
    const halves = new Uint32Array(sentHashes.buffer, sentHashes.byteOffset, sentHashes.length * 2);
    const found: number[] = [];
    let page = 0;
    for (let range = 0; range <= starts.length; range++) {
      const end = range < starts.length ? starts[range]! : region.pageCount;
      for (; page < end; page++) {
        if (halves[2 * page] !== low || halves[2 * page + 1] !== high) found.push(page);
      }
      if (range < starts.length) page = ends[range]!;
    }
    return Uint32Array.from(found);
  }
}

/** Two ascending lists without common pages, as one ascending list. */
function mergeAscending(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let n = 0;
  while (i < a.length || j < b.length) out[n++] = j >= b.length || (i < a.length && a[i]! < b[j]!) ? a[i++]! : b[j++]!;
  return out;
}
