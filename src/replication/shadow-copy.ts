// The primary's staging buffer: a second copy of the region, into which each epoch's capture copies
// the dirty pages while the workload is paused (memory speed), and from which the epoch is then
// encoded and sent while the workload runs on. Between captures it is exactly the last captured state,
// which is also what DELTA encodes against.
import { InvalidArgumentError } from '../errors.js';
import type { PageList } from '../memory/dirty-tracker.js';
import { MAX_VIEW_BYTES, MemoryRegion } from '../memory/region.js';
import { binding } from '../native/engine.js';
import { constants } from 'node:buffer';

/** Pages copied per loop turn of the bulk copy, between which the event loop runs. */
const BULK_CHUNK_BYTES = 16 * 1024 * 1024;

export class ShadowCopy {
  readonly region: MemoryRegion;
  private readonly bytes: Buffer;
  private readonly liveWindows: Uint8Array[] = [];

  constructor(private readonly live: MemoryRegion) {
    if (live.byteLength > constants.MAX_LENGTH) {
      throw new InvalidArgumentError(`a replicated region holds at most ${constants.MAX_LENGTH} bytes (its staging copy is one buffer)`);
    }
    this.bytes = Buffer.alloc(live.byteLength);
    this.region = MemoryRegion.fromMemory(this.bytes, { pageSize: live.pageSize });
  }

  /** Copies the whole region, a chunk at a time (the workload runs: pages written meanwhile are dirty). */
  async copyAll(): Promise<void> {
    for (let at = 0; at < this.live.byteLength; at += BULK_CHUNK_BYTES) {
      const length = Math.min(BULK_CHUNK_BYTES, this.live.byteLength - at);
      this.bytes.set(this.live.view(at, length), at);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Copies these pages (ascending), a run of neighbours at a time. */
  copyPages(pages: PageList, batchPages: number): void {
    const { pageSize } = this.live;
    for (const batch of pages.batches(batchPages)) {
      for (let i = 0; i < batch.length;) {
        let end = i + 1;
        while (end < batch.length && batch[end] === batch[end - 1]! + 1) end++;
        this.copyRun(batch[i]! * pageSize, (end - i) * pageSize);
        i = end;
      }
    }
  }

  /** Every page's XXH64 as the copy holds it. */
  pageHashes(): BigUint64Array {
    const hashes = new BigUint64Array(this.region.pageCount);
    binding().hashPages(this.region.native, this.region.pageSize, 0, this.region.pageCount, hashes, 0);
    return hashes;
  }

  /** Reads bytes of the captured state. */
  read(offset: number, length: number): Buffer {
    return this.bytes.subarray(offset, offset + length);
  }

  private copyRun(offset: number, length: number): void {
    // Runs never cross a window boundary unless the window is split: copy in window-sized pieces.
    for (let at = offset; at < offset + length;) {
      const w = Math.floor(at / MAX_VIEW_BYTES);
      const windowStart = w * MAX_VIEW_BYTES;
      const window = this.liveWindows[w] ??= this.live.view(windowStart, Math.min(MAX_VIEW_BYTES, this.live.byteLength - windowStart));
      const piece = Math.min(offset + length - at, windowStart + window.length - at);
      this.bytes.set(window.subarray(at - windowStart, at - windowStart + piece), at);
      at += piece;
    }
  }
}
