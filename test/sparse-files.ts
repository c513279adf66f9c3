// Sparse disk images for tests: a 64 GiB file with a few random data extents, and the benchmark's
// comparison that reads only where either file has data.
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync, ftruncateSync } from 'node:fs';

export { sameSparseFiles } from '../dist/bench/same-sparse-files.js';

export const DISK_BYTES = 64 * 2 ** 30;
export const EXTENT_BYTES = 2 ** 20;
export const EXTENTS = 24;

/** A sparse file of DISK_BYTES with EXTENTS random 1 MiB extents spread over it. */
export function sparseDisk(path: string): void {
  const fd = openSync(path, 'wx');
  try {
    ftruncateSync(fd, DISK_BYTES);
    const data = Buffer.alloc(EXTENT_BYTES);
    for (let i = 0; i < EXTENTS; i++) {
      randomFillSync(data);
      writeSync(fd, data, 0, data.length, Math.floor((i * DISK_BYTES) / EXTENTS / EXTENT_BYTES) * EXTENT_BYTES);
    }
  } finally {
    closeSync(fd);
  }
}
