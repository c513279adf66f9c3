// Which pages the snapshot bench changes or touches: `count` distinct pages of a region drawn from a
// seed, and the writer that gives them new random bytes in an image file, so that each differs from
// what any earlier snapshot holds. Shared by bench/snapshot.ts and the processes it starts
// (bench/snapshot-child.ts).
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';

/** `count` distinct pages of [0, pageCount), ascending, the same for the same seed. */
export function pickPages(pageCount: number, count: number, seed: number): Uint32Array {
  if (!(count >= 0 && count <= pageCount)) throw new Error(`cannot pick ${count} distinct pages of ${pageCount}`);
  let state = (seed * 2654435761) >>> 0;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
  // A partial Fisher-Yates shuffle: the first `count` places end up a uniform sample.
  const order = Uint32Array.from({ length: pageCount }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(random() * (pageCount - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, count).sort();
}

/** The fraction of a region's pages the bench changes or touches: at least one page. */
export function pagesOf(fraction: number, pageCount: number): number {
  return Math.max(1, Math.round(fraction * pageCount));
}

/** Writes new random bytes over each of `pages` in the file at path (no fsync: the snapshot reads the page cache). */
export function overwritePages(path: string, pages: Uint32Array, pageSize: number): void {
  const fd = openSync(path, 'r+');
  const page = Buffer.alloc(pageSize);
  try {
    for (const index of pages) {
      randomFillSync(page);
      for (let done = 0; done < pageSize;) done += writeSync(fd, page, done, pageSize - done, index * pageSize + done);
    }
  } finally {
    closeSync(fd);
  }
}
