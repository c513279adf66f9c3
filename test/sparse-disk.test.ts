// A 64 GiB disk image that is mostly holes, migrated into a file while a writer changes it (holes
// included): round 1 reads only the data (SEEK_DATA/SEEK_HOLE), the target file stays sparse, and it
// equals the source at the pause point.
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirtyBitmap, FileTargetImage, MemoryRegion, MigrationSource, MigrationTarget } from '../dist/src/index.js';
import { tempDir } from './helpers.js';
import { EXTENTS, EXTENT_BYTES, sameSparseFiles, sparseDisk } from './sparse-files.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;

describe('a 64 GiB sparse disk image', () => {
  it('moves under a writer byte-exact, reading only its data in round 1 and staying sparse on the target', async () => {
    const disk = join(tmp.dir, 'disk.img');
    const out = join(tmp.dir, 'disk-out.img');
    sparseDisk(disk);
    const region = MemoryRegion.mapFile(disk);
    const dataPages = region.dataPages()!;
    expect(dataPages.length).toBe((EXTENTS * EXTENT_BYTES) / PAGE);
    const bitmap = new DirtyBitmap(region.pageCount);
    let paused = false;
    let writes = 0;
    // Between rounds the guest writes some data pages and some holes (which become data).
    const write = () => {
      if (paused) return;
      for (let k = 0; k < 32; k++) {
        const page = k % 2 === 0 ? dataPages[(writes * 7919) % dataPages.length]! : (writes * 104_729 * 613) % region.pageCount;
        randomFillSync(region.view(page * PAGE, PAGE).subarray(0, 128));
        bitmap.mark(page);
        writes += 1;
      }
    };
    // A sparse target needs room for the data, not for 64 GiB: this test must not depend on the disk's size.
    const target = await MigrationTarget.listen({ image: new FileTargetImage(out, { checkFreeSpace: false }), host: '127.0.0.1', port: 0 });
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
      hooks: { pause: () => { paused = true; }, resume: () => { paused = false; } },
    });
    const rounds: number[] = [];
    let planned = 0;
    source.on('round', (report) => { rounds.push(report.pagesSent); write(); });
    source.on('progress', (progress) => { if (progress.round === 1) planned = progress.pagesPlanned; });
    const summary = await source.run();
    await target.result;
    // Round 1 set out to read the data pages only, not the 16 Mi pages of the whole disk.
    expect(planned).toBe(dataPages.length);
    expect(rounds[0]).toBe(dataPages.length);
    expect(summary.rounds).toBeGreaterThanOrEqual(2);
    expect(writes).toBeGreaterThan(0);
    expect(sameSparseFiles(disk, out)).toBe(true);
    // The target holds about what was sent, not 64 GiB.
    expect(statSync(out).blocks * 512).toBeLessThan(4 * EXTENTS * EXTENT_BYTES);
    region.close();
  });

  it('lists, of a file that grew after it was mapped, only the data pages inside the region', () => {
    const path = join(tmp.dir, 'grown.img');
    const fd = openSync(path, 'wx');
    try {
      ftruncateSync(fd, 64 * PAGE);
      writeSync(fd, Buffer.alloc(4 * PAGE, 1), 0, 4 * PAGE, 0);
      const region = MemoryRegion.mapFile(path);
      // Data beyond the mapped size (the file was extended afterwards) is not the region's.
      writeSync(fd, Buffer.alloc(2 * PAGE, 2), 0, 2 * PAGE, 66 * PAGE);
      expect([...region.dataPages()!]).toEqual([0, 1, 2, 3]);
      region.close();
    } finally {
      closeSync(fd);
    }
  });
});
