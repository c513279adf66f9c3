// Whether two files hold the same bytes, reading only where either has data (SEEK_DATA): a 64 GiB
// sparse disk compares in the time its data takes. Used by the sparse-disk benchmark and its tests.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { binding } from '../src/native/engine.js';

const WINDOW_BYTES = 2 ** 20;

/** Whether two files are equal, reading only where either has data (elsewhere both read as zeros). */
export function sameSparseFiles(a: string, b: string): boolean {
  if (statSync(a).size !== statSync(b).size) return false;
  const ranges = [...binding().dataExtents(a), ...binding().dataExtents(b)];
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const ba = Buffer.alloc(WINDOW_BYTES);
  const bb = Buffer.alloc(WINDOW_BYTES);
  try {
    for (let i = 0; i < ranges.length; i += 2) {
      for (let at = ranges[i]!; at < ranges[i + 1]!; at += WINDOW_BYTES) {
        const length = Math.min(WINDOW_BYTES, ranges[i + 1]! - at);
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
