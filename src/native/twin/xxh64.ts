// XXH64 (seed 0) through xxhash-wasm, the same function as native/xxhash64.cc.
import xxhash from 'xxhash-wasm';

const { h64Raw } = await xxhash();

/** XXH64, seed 0, of bytes. */
export function xxh64(bytes: Uint8Array): bigint {
  return h64Raw(bytes);
}

const zeroPageHashes = new Map<number, bigint>();

/** XXH64 of pageSize zero bytes (the hash of every ZERO record), computed once per size. */
export function zeroPageHash(pageSize: number): bigint {
  let hash = zeroPageHashes.get(pageSize);
  if (hash === undefined) {
    hash = xxh64(new Uint8Array(pageSize));
    zeroPageHashes.set(pageSize, hash);
  }
  return hash;
}
