// Per-page xxHash64s: what the source last sent, what the target holds. Both start as the hash of a zero
// page, since a target's fresh image starts zeroed; the region digest is the XXH64 of the whole array
// (little-endian u64s), so comparing two digests compares every page's latest version at once.
import { binding } from '../native/engine.js';

const zeroHashes = new Map<number, bigint>();

export function zeroPageHash(pageSize: number): bigint {
  let hash = zeroHashes.get(pageSize);
  if (hash === undefined) {
    hash = binding().xxh64(new Uint8Array(pageSize));
    zeroHashes.set(pageSize, hash);
  }
  return hash;
}

export function newPageHashes(pageCount: number, pageSize: number): BigUint64Array {
  return new BigUint64Array(pageCount).fill(zeroPageHash(pageSize));
}

export function regionDigest(hashes: BigUint64Array): bigint {
  return binding().xxh64(new Uint8Array(hashes.buffer, hashes.byteOffset, hashes.byteLength));
}

/** A region digest as reports print it: 16 hex digits. */
export function formatDigest(digest: bigint): string {
  return digest.toString(16).padStart(16, '0');
}

/**
 * The digest FINAL carries: a single region's own digest, or for several regions the XXH64 of their
 * digests in region order (u64 little-endian each), so one comparison covers every region.
 */
export function migrationDigest(regionDigests: bigint[]): bigint {
  if (regionDigests.length === 1) return regionDigests[0]!;
  return regionDigest(BigUint64Array.from(regionDigests));
}
