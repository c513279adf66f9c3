// What the twin accepts as a region: the bytes of a DataView, a typed array or an ArrayBuffer /
// SharedArrayBuffer, viewed in place. A NativeMapping comes only from the addon's mapFile().
import { types } from 'node:util';

/** A Uint8Array can view at most this many bytes on Node 20; the addon has no such limit. */
export const MAX_TWIN_BYTES = 2 ** 32;

/** The bytes of any ArrayBufferView or (Shared)ArrayBuffer, without copying; undefined for anything else. */
export function viewBytes(value: unknown): Uint8Array | undefined {
  let offset = 0;
  let length: number;
  let buffer: ArrayBufferLike;
  if (ArrayBuffer.isView(value)) {
    ({ buffer, byteOffset: offset, byteLength: length } = value);
  } else if (types.isArrayBuffer(value) || types.isSharedArrayBuffer(value)) {
    buffer = value;
    length = value.byteLength;
  } else {
    return undefined;
  }
  if (length > MAX_TWIN_BYTES) {
    throw new RangeError(`the TypeScript twin handles at most ${MAX_TWIN_BYTES} bytes at once, got ${length}; build the C++ addon for larger regions`);
  }
  return new Uint8Array(buffer, offset, length);
}

export function regionBytes(value: unknown, name = 'region'): Uint8Array {
  const bytes = viewBytes(value);
  if (!bytes) {
    throw new TypeError(`${name} must be a DataView, a TypedArray, an ArrayBuffer or a mapping from mapFile()`);
  }
  return bytes;
}
