// The bench's checks that a migration delivered the source's region, all outside the timed window: the
// digests both ends report must agree, and the committed image must hold the source's bytes at the
// pause point, compared byte for byte (not through pagewire's own hashing, which is what is under test).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

const WINDOW_BYTES = 8 << 20;

/** Throws unless send and receive both report the same region digest. */
export function checkDigests(sent: { digest?: unknown }, received: { digest?: unknown }, label: string): string {
  if (typeof sent.digest !== 'string' || sent.digest === '' || typeof received.digest !== 'string' || received.digest === '') {
    throw new Error(`${label}: a --json report has no digest (send: ${String(sent.digest)}, receive: ${String(received.digest)})`);
  }
  if (sent.digest !== received.digest) {
    throw new Error(`DIGEST MISMATCH after ${label}: send reports ${sent.digest}, receive ${received.digest}`);
  }
  return sent.digest;
}

/**
 * Throws unless the two files hold the same bytes. After send exits, its image holds the region as it
 * was at the pause point (the workload stays paused), so this compares the target's commit with that.
 */
export function checkSameBytes(committedPath: string, sourcePath: string, label: string): void {
  const a = openSync(committedPath, 'r');
  const b = openSync(sourcePath, 'r');
  try {
    const size = fstatSync(b).size;
    const committedSize = fstatSync(a).size;
    if (committedSize !== size) {
      throw new Error(`IMAGE MISMATCH after ${label}: the committed file holds ${committedSize} bytes, the source's image ${size}`);
    }
    const wa = Buffer.allocUnsafe(WINDOW_BYTES);
    const wb = Buffer.allocUnsafe(WINDOW_BYTES);
    for (let at = 0; at < size; at += WINDOW_BYTES) {
      const want = Math.min(WINDOW_BYTES, size - at);
      readFully(a, wa, want, at);
      readFully(b, wb, want, at);
      if (!wa.subarray(0, want).equals(wb.subarray(0, want))) {
        let i = 0;
        while (wa[i] === wb[i]) i++;
        const offset = at + i;
        throw new Error(`IMAGE MISMATCH after ${label}: ${committedPath} differs from the source's ${sourcePath} ` +
          `at byte ${offset} (page ${Math.floor(offset / 4096)} of 4 KiB)`);
      }
    }
  } finally {
    closeSync(a);
    closeSync(b);
  }
}

function readFully(fd: number, into: Buffer, length: number, position: number): void {
  for (let got = 0; got < length;) {
    const n = readSync(fd, into, got, length - got, position + got);
    if (n === 0) throw new Error(`a file ended at byte ${position + got} while comparing`);
    got += n;
  }
}
