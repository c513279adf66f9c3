// What the twin accepts as a region: the bytes of a DataView, a typed array or an ArrayBuffer /
// SharedArrayBuffer, viewed in place. A NativeMapping comes only from the addon's mapFile().
import { types } from 'node:util';

/** The bytes of any ArrayBufferView or (Shared)ArrayBuffer, without copying; undefined for anything else. */
export function viewBytes(value: unknown): Uint8Array | undefined {
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (types.isArrayBuffer(value) || types.isSharedArrayBuffer(value)) return new Uint8Array(value);
  return undefined;
}

export function regionBytes(value: unknown, name = 'region'): Uint8Array {
  const bytes = viewBytes(value);
  if (!bytes) {
    throw new TypeError(`${name} must be a DataView, a TypedArray, an ArrayBuffer or a mapping from mapFile()`);
  }
  return bytes;
}
