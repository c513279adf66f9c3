// The final sync of each dirty tracker, the part of the downtime that finds what changed since the last
// round, at several region sizes: a RAM file in /dev/shm (as QEMU's memory-backend-file) with random
// contents, 64 pages written since the last round. Hashing (HashTracker: every page's xxHash64 against the
// one sent, on the addon's pool threads) and a dirty bitmap (BitmapTracker); the kernel's soft-dirty log is
// only reported as available or not (its migration is test/soft-dirty.test.ts). Medians of --runs scans.
//   node dist/bench/final-sync.js [--sizes 256MiB,1GiB,4GiB] [--runs 9]
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { optionalString, parseFlags, parseSize } from '../src/cli/args.js';
import { DirtyBitmap } from '../src/memory/dirty-bitmap.js';
import { BitmapTracker, HashTracker, type DirtyTracker } from '../src/memory/dirty-tracker.js';
import { MemoryRegion } from '../src/memory/region.js';
import { softDirtyAvailable } from '../src/memory/soft-dirty-tracker.js';
import { binding } from '../src/native/engine.js';
import { formatTable, median, round } from './stats.js';

const flags = parseFlags(process.argv.slice(2), { sizes: 'string', runs: 'string' });
const sizes = (optionalString(flags, 'sizes') ?? '256MiB,1GiB,4GiB').split(',').map((s) => parseSize(s, 'sizes'));
const runs = Number(optionalString(flags, 'runs') ?? '9');
const DIRTY_PAGES = 64;

function ramFile(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 2 ** 20);
  try {
    for (let at = 0; at < bytes; at += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - at));
    }
  } finally {
    closeSync(fd);
  }
}

/** Median time of `runs` final syncs (scan, then take) after DIRTY_PAGES writes each, and the pages found. */
async function timeScans(tracker: DirtyTracker, region: MemoryRegion, mark: (page: number) => void, after: (pages: Uint32Array) => void) {
  const view = region.view(0, Math.min(region.byteLength, 2 ** 30));
  const times: number[] = [];
  let found = 0;
  for (let run = 0; run < runs + 1; run++) {
    for (let i = 0; i < DIRTY_PAGES; i++) {
      const page = (run * 7919 + i * 104_729) % Math.min(region.pageCount, view.length / region.pageSize);
      view[page * region.pageSize + (run % 4096)] ^= 0xff;
      mark(page);
    }
    const began = performance.now();
    const scan = await tracker.scan();
    const pages = new Uint32Array(scan.count);
    let n = 0;
    for (const batch of scan.take().batches(65_536)) { pages.set(batch, n); n += batch.length; }
    const took = performance.now() - began;
    after(pages);
    // The first run also faults the mapping in: not a final sync's cost.
    if (run > 0) times.push(took);
    found = scan.count;
  }
  return { ms: round(median(times), 1), pagesFound: found };
}

async function main(): Promise<void> {
  const rows: string[][] = [['region', 'tracker', 'final sync ms (median)', 'pages found']];
  const results: Record<string, unknown>[] = [];
  for (const bytes of sizes) {
    const path = `/dev/shm/pagewire-final-sync-${process.pid}.img`;
    ramFile(path, bytes);
    const region = MemoryRegion.mapFile(path);
    try {
      const label = `${bytes / 2 ** 20} MiB`;
      // Hashing: sentHashes as the encoder leaves them, the hashes of what was sent; after each scan the
      // pages found count as sent again.
      const sentHashes = new BigUint64Array(region.pageCount);
      binding().hashPages(region.native, region.pageSize, 0, region.pageCount, sentHashes, 0);
      const hashing = await timeScans(new HashTracker(region, sentHashes), region, () => {}, (pages) => {
        for (const page of pages) binding().hashPages(region.native, region.pageSize, page, 1, sentHashes, page);
      });
      const bitmap = new DirtyBitmap(region.pageCount);
      const bitmapTracker = new BitmapTracker(bitmap);
      bitmapTracker.start();
      const bitmapSync = await timeScans(bitmapTracker, region, (page) => bitmap.mark(page), () => {});
      rows.push([label, 'hashing (xxHash64, pool threads)', String(hashing.ms), String(hashing.pagesFound)]);
      rows.push([label, 'dirty bitmap', String(bitmapSync.ms), String(bitmapSync.pagesFound)]);
      rows.push([label, 'soft-dirty', softDirtyAvailable() ? 'see test/soft-dirty.test.ts' : 'n/a: this kernel lacks CONFIG_MEM_SOFT_DIRTY', '']);
      results.push({ bytes, hashingMs: hashing.ms, bitmapMs: bitmapSync.ms, softDirty: softDirtyAvailable() });
      process.stderr.write(`${label}: hashing ${hashing.ms} ms, bitmap ${bitmapSync.ms} ms\n`);
    } finally {
      region.close();
      rmSync(path, { force: true });
    }
  }
  process.stdout.write(`${formatTable(rows, [false, false, true, true])}\n${JSON.stringify({ runs, dirtyPages: DIRTY_PAGES, results })}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`final-sync bench: ${(error as Error).message}\n`);
  process.exitCode = 1;
});
