// Sparse disk images for tests: a 64 GiB file with a few random data extents, and a comparison that
// reads only where either file has data.
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { binding } from '../dist/src/native/engine.js';

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

/** Whether two files are equal, reading only where either has data (elsewhere both read as zeros). */
export function sameSparseFiles(a: string, b: string): boolean {
  if (statSync(a).size !== statSync(b).size) return false;
  const ranges = [...binding().dataExtents(a), ...binding().dataExtents(b)];
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const ba = Buffer.alloc(EXTENT_BYTES);
  const bb = Buffer.alloc(EXTENT_BYTES);
  try {
    for (let i = 0; i < ranges.length; i += 2) {
      for (let at = ranges[i]!; at < ranges[i + 1]!; at += EXTENT_BYTES) {
        const length = Math.min(EXTENT_BYTES, ranges[i + 1]! - at);
        readSync(fa, ba, 0, length, at);
        readSync(fb, bb, 0, length, at);
        if (!ba.subarray(0, length).equals(bb.subarray(0, length))) return false;
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
  return true;
}
