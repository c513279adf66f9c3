// Argument checks with the addon's rules and messages (native/region.h): the twin is what runs when the
// addon does not, so a caller's mistake must fail the same way on both.
import { types } from 'node:util';

/** Page indices are u32 on the wire. */
export const MAX_PAGE_COUNT = 2 ** 32;
/** The encoder's cache uses 0xFFFFFFFF as "no page", so its page indices stop one short. */
export const MAX_ENCODER_PAGE_COUNT = MAX_PAGE_COUNT - 1;
export const MAX_FD = 2 ** 31 - 1;

/** A non-negative integer number <= max (and <= 2^53 - 1). */
export function toIndex(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number`);
  if (!(value >= 0) || !Number.isSafeInteger(value)) {
    throw new RangeError(`${name} must be a non-negative safe integer`);
  }
  if (value > max) throw new RangeError(`${name} is too large (max ${max})`);
  return value;
}

/** A power of two in [1, 2^31] (RAW payload lengths are u32 on the wire). */
export function toPageSize(value: unknown): number {
  const size = toIndex(value, 'pageSize', 2 ** 27);
  if (size === 0 || (size & (size - 1)) !== 0) {
    throw new RangeError('pageSize must be a power of two between 1 and 2^27');
  }
  return size;
}

export function toBool(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean`);
  return value;
}

export function toU8(value: unknown, name: string): Uint8Array {
  if (!types.isUint8Array(value)) throw new TypeError(`${name} must be a Uint8Array`);
  return value;
}

export function toU32(value: unknown, name: string): Uint32Array {
  if (!types.isUint32Array(value)) throw new TypeError(`${name} must be a Uint32Array`);
  return value;
}

export function toI32(value: unknown, name: string): Int32Array {
  if (!types.isInt32Array(value)) throw new TypeError(`${name} must be a Int32Array`);
  return value;
}

export function toBigU64(value: unknown, name: string): BigUint64Array {
  if (!types.isBigUint64Array(value)) throw new TypeError(`${name} must be a BigUint64Array`);
  return value;
}

/** Whether two views share bytes (views of distinct buffer objects never do, as far as JS can tell). */
export function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.byteLength > 0 && b.byteLength > 0 && a.buffer === b.buffer &&
    a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** pageCount pages of pageSize bytes must lie inside the region; returns those pages' bytes. */
export function regionPages(region: Uint8Array, pageSize: number, pageCount: number, name = 'region'): Uint8Array {
  if (pageCount > Math.floor(region.length / pageSize)) {
    throw new RangeError(`pageCount ${pageCount} * pageSize ${pageSize} exceeds the ${name}'s ${region.length} bytes`);
  }
  return region.subarray(0, pageCount * pageSize);
}

/** A per-page array (sentHashes, heldHashes) must have a slot for every page. */
export function checkPerPage(array: BigUint64Array, name: string, pageCount: number): void {
  if (array.length < pageCount) {
    throw new RangeError(`${name} has ${array.length} slots, fewer than pageCount ${pageCount}`);
  }
}
