// Types and loader for the raw C++ layer (native/*.cc). Everything here is batch-shaped: one call per
// batch of pages, buffers passed in and written in place, tuples instead of objects for returns.
// Policy (what to send, when, how big a batch is) lives in the callers, never here.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeUnavailableError } from '../errors.js';

/** A file mapped MAP_SHARED by the addon. Writes through views land in the file. */
export interface NativeMapping {
  readonly byteLength: number;
  /**
   * An external ArrayBuffer over [offset, offset+length); it keeps the mapping alive while reachable.
   * Writing through a view of a read-only mapping faults the process: map writable to write.
   */
  view(offset: number, length: number): ArrayBuffer;
  /** msync(MS_SYNC) the whole mapping, then fsync the file. */
  flush(): void;
  /** Drops the owner's reference; the pages are unmapped once no view is reachable either. */
  close(): void;
}

/** What native calls accept as a region: a DataView over (Shared)ArrayBuffer memory, or a mapping. */
export type NativeRegion = DataView | ArrayBufferView | ArrayBuffer | NativeMapping;

/** Status codes of applyPages, in the order native/codec.cc defines them. */
export enum ApplyStatus {
  Ok = 0,
  /** A header (value: record number) or a payload (value: page index) runs past the end. */
  Truncated = 1,
  IndexOutOfRange = 2,
  BadEncoding = 3,
  BadLength = 4,
  ChecksumMismatch = 5,
  /** Bytes follow the last record; the value is recordCount. */
  TrailingBytes = 6,
}

export interface NativeBinding {
  mapFile(path: string, byteLength: number, writable: boolean): NativeMapping;

  /** XXH64 (seed 0) of bytes. */
  xxh64(data: Uint8Array): bigint;
  /** out[outOffset + i] = XXH64 of page firstPage + i, for i < count. */
  hashPages(region: NativeRegion, pageSize: number, firstPage: number, count: number,
    out: BigUint64Array, outOffset: number): void;

  /** Atomic fetch-and-clear of bitmap words [wordStart, wordEnd) into snapshot; returns bits found set. */
  dirtySync(bitmap: Int32Array, snapshot: Uint32Array, wordStart: number, wordEnd: number): number;
  /** Population count of bitmap words [wordStart, wordEnd), without clearing. */
  dirtyCount(bitmap: Int32Array, wordStart: number, wordEnd: number): number;
  /**
   * Appends the page index of every set bit of snapshot words [wordStart, wordEnd) to out, stopping
   * before a word whose bits might not fit. Returns [indicesWritten, nextWord].
   */
  dirtyScan(snapshot: Uint32Array, wordStart: number, wordEnd: number, out: Uint32Array): [number, number];

  /**
   * Encodes the listed pages as wire records (docs/PROTOCOL.md) into out from offset 0, records
   * sentHashes[page] for every page, and skips zero pages entirely when skipZero is set.
   * Returns [bytesWritten, records, zeroRecords, rawRecords, zeroSkipped].
   */
  encodePages(region: NativeRegion, pageSize: number, pageCount: number, indices: Uint32Array,
    skipZero: boolean, out: Uint8Array, sentHashes: BigUint64Array): [number, number, number, number, number];

  /**
   * Verifies and applies recordCount records from records into region, recording heldHashes[page].
   * Stops at the first bad record. Returns [status, pageIndexOrRecordNumber, recordsApplied].
   */
  applyPages(region: NativeRegion, pageSize: number, pageCount: number, records: Uint8Array,
    recordCount: number, heldHashes: BigUint64Array): [ApplyStatus, number, number];

  /** As applyPages, writing each page into the file at pageIndex * pageSize (pwritev). Throws on I/O errors. */
  applyPagesToFile(fd: number, pageSize: number, pageCount: number, records: Uint8Array,
    recordCount: number, heldHashes: BigUint64Array): [ApplyStatus, number, number];

  /** Writes the file's dirty pages back (sync_file_range, not waiting for the disk) on a pool thread; settles when that call returns. */
  startWriteback(fd: number): Promise<void>;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new NativeUnavailableError('cannot find the pagewire package root (binding.gyp)');
    dir = up;
  }
}

let loaded: NativeBinding | undefined;

/** The addon, loaded once. Throws NativeUnavailableError with a build hint when it is missing. */
export function native(): NativeBinding {
  if (loaded) return loaded;
  const root = packageRoot();
  const path = join(root, 'build', 'Release', 'pagewire.node');
  try {
    loaded = createRequire(import.meta.url)(path) as NativeBinding;
  } catch (cause) {
    throw new NativeUnavailableError(
      `the native addon could not be loaded from ${path}; run 'npm ci' (or 'npx node-gyp rebuild') to build it`,
      { cause });
  }
  return loaded;
}
