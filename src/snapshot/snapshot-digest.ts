// Exact reads and writes of a snapshot file, and the trailer's digest, computed from the file itself by
// the writer (before it writes the trailer) and by every reader (before it trusts anything in the
// file): the header block, the alignment gaps between page areas, and the tables and device state, in
// file order. Pages are covered through their hashes.
import { createHash } from 'node:crypto';
import { readSync, writeSync } from 'node:fs';
import { StorageError, SnapshotCorruptError } from '../errors.js';
import { areaGaps, type SnapshotLayout } from './snapshot-format.js';

const CHUNK_BYTES = 64 * 1024;

/** Reads exactly length bytes at position (a short file is a corrupt snapshot, named by `name`). */
export function readExactly(fd: number, length: number, position: number, name: string, into?: Buffer): Buffer {
  const out = into ?? Buffer.allocUnsafe(length);
  for (let got = 0; got < length;) {
    let n: number;
    try {
      n = readSync(fd, out, got, length - got, position + got);
    } catch (cause) {
      throw new StorageError(`cannot read ${name}: ${(cause as Error).message}`, { cause });
    }
    if (n === 0) throw new SnapshotCorruptError(`${name} ends at ${position + got} bytes, inside what its header describes (truncated)`);
    got += n;
  }
  return out;
}

/** Writes all of bytes at position, again after a short write. */
export function writeExactly(fd: number, bytes: Uint8Array, position: number): void {
  for (let at = 0; at < bytes.byteLength;) at += writeSync(fd, bytes, at, bytes.byteLength - at, position + at);
}

/**
 * SHA-256 of what the trailer covers, read from fd; trailerOffset is where the trailer starts. Read in
 * small pieces through one buffer: fresh memory costs a fault per page to touch, which for a GiB's
 * 2 MiB of tables was most of a lazy restore's start.
 */
export function digestOfFile(fd: number, layout: SnapshotLayout, trailerOffset: number, name: string): Buffer {
  const hash = createHash('sha256');
  const ranges: Array<[number, number]> = [[0, layout.regions[0]!.pagesOffset], ...areaGaps(layout.regions, layout.tablesOffset),
    [layout.tablesOffset, trailerOffset]];
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  for (const [start, end] of ranges) {
    for (let at = start; at < end; at += CHUNK_BYTES) {
      const length = Math.min(CHUNK_BYTES, end - at);
      hash.update(readExactly(fd, length, at, name, chunk).subarray(0, length));
    }
  }
  return hash.digest();
}
