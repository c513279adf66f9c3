// Types and loader for the raw C++ layer (native/*.cc), which src/native/twin mirrors in TypeScript.
// Everything here is batch-shaped: one call per batch of pages, buffers passed in and written in place,
// tuples instead of objects for returns. Policy (what to send, when, how big a batch is) lives in the
// callers, never here. Callers get one implementation or the other from engine.ts.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeUnavailableError } from '../errors.js';

/**
 * A file mapped by the addon: MAP_SHARED by mapFile, where writes through views land in the file, or
 * MAP_PRIVATE by mapFilePrivate, where they stay in this process.
 */
export interface NativeMapping {
  readonly byteLength: number;
  /**
   * An external ArrayBuffer over [offset, offset+length); it keeps the mapping alive while reachable.
   * Writing through a view of a read-only mapping faults the process: map writable to write.
   */
  view(offset: number, length: number): ArrayBuffer;
  /** msync(MS_SYNC) the whole mapping, then fsync the file. A private mapping throws: it has no file to write to. */
  flush(): void;
  /** Drops the owner's reference; the pages are unmapped once no view is reachable either. */
  close(): void;
}

/** How a FrameReader call ended, in the order native/frame_reader.cc defines them. */
export enum ReadStatus {
  /** The header, and the payload into the buffer given. */
  Frame = 0,
  /** The header only: its payload is longer than the buffer given, and readPayload() must follow. */
  PayloadLater = 1,
  /** The peer closed the connection between two frames. */
  Ended = 2,
  /** The peer closed it inside a frame. */
  Cut = 3,
  Cancelled = 4,
  /** read() failed; the third value is the errno. */
  Failed = 5,
  /** The frame's tag did not verify (authenticate()); the third value is the bytes read. */
  Forged = 6,
}

/** [status, payload length the header announced, bytes consumed from the socket (errno for Failed)]. */
export type ReadResult = [status: ReadStatus, payloadLength: number, bytesOrErrno: number];

/**
 * Reads one connection's frames straight into caller-owned buffers, on a thread of its own, from a
 * duplicate of the socket's descriptor. One read at a time; the buffers must stay untouched until it
 * settles.
 */
export interface NativeFrameReader {
  /** The next frame: its 8-byte header into header, its payload into payload[0, length) if it fits. */
  read(header: Uint8Array, payload: Uint8Array): Promise<ReadResult>;
  /** Exactly payload.length bytes: the rest of a frame read() answered PayloadLater for. */
  readPayload(payload: Uint8Array): Promise<ReadResult>;
  /** Ends a read in flight, and every later one, with Cancelled. */
  cancel(): void;
  /** Closes the duplicate descriptor; only once no read is in flight. */
  close(): void;
  /**
   * From the next frame on, checks each frame's ChaCha20-Poly1305 tag (src/transport/frame-auth.ts)
   * under key, numbering frames from nextNumber; a frame that fails ends as Forged. Only between reads.
   */
  authenticate(key: Uint8Array, nextNumber: number): void;
}

/** What native calls accept as a region: a DataView over (Shared)ArrayBuffer memory, or a mapping. */
export type NativeRegion = DataView | ArrayBufferView | ArrayBuffer | NativeMapping;

/** Status codes of applyPages, in the order native/codec.cc defines them (docs/PROTOCOL.md section 4). */
export enum ApplyStatus {
  Ok = 0,
  /** A header (value: record number) or a payload (value: page index) runs past the end. */
  Truncated = 1,
  /** The value is the offending index: the record's page, or a DUP record's fromIndex. */
  IndexOutOfRange = 2,
  BadEncoding = 3,
  BadLength = 4,
  ChecksumMismatch = 5,
  /** Bytes follow the last record; the value is recordCount. */
  TrailingBytes = 6,
  /** A DELTA (XBZRLE) or LZ4 payload is malformed, or LZ4 does not give exactly one page. */
  BadPayload = 7,
  /**
   * A record writes a page of another stream, or is a DUP of one; nothing of the batch was applied. The
   * value is the record's byte offset in records, where the caller reads its page and DUP source.
   */
  WrongStream = 8,
}

/** [bytesWritten, records, zeroRecords, deltaRecords, dupRecords, lz4Records, rawRecords, zeroSkipped] */
export type EncodeResult = [number, number, number, number, number, number, number, number];
/** [status, pageIndexOrRecordNumber, recordsApplied] */
export type ApplyResult = [ApplyStatus, number, number];

/**
 * The source's page encoder for one migration: the page cache (DELTA and DUP bases) is its state, so
 * batches must be encoded in the order they are sent, and one at a time.
 *
 * The asynchronous calls here and in applyPages work on the caller's buffers in place from a pool
 * thread: until the promise settles, none of them may be transferred (detached), and records must not
 * be changed (the file sink writes RAW payloads from them after verifying them). PageBatchEncoder,
 * PageBatchDecoder and the page stores own their buffers and keep to this.
 */
export interface NativePageEncoder {
  /** Cache slots: min(pageCount, floor(cacheBytes / pageSize)). */
  readonly cacheSlots: number;
  /**
   * Bulk mode (the source's round 1, as QEMU's bulk stage): a page not cached yet is remembered only in
   * an empty slot, so one pass over the region evicts nothing. Taken when a batch is queued.
   */
  bulk: boolean;
  /** Whether LZ4 is tried (default true). Taken when a batch is queued. */
  lz4: boolean;
  /**
   * Encodes the listed pages as wire records into out from offset 0 (docs/PROTOCOL.md section 4),
   * on a pool thread. out must hold indices.length * (pageSize + 20) bytes. Records sentHashes[page]
   * for every page. Arguments are checked before the work starts (a bad one throws, nothing changes);
   * calling again before the promise settles throws.
   */
  encode(region: NativeRegion, indices: Uint32Array, skipZero: boolean, out: Uint8Array,
    sentHashes: BigUint64Array): Promise<EncodeResult>;
  /** The same work on the calling thread. */
  encodeSync(region: NativeRegion, indices: Uint32Array, skipZero: boolean, out: Uint8Array,
    sentHashes: BigUint64Array): EncodeResult;
}

/** Where applyPages writes: a writable region in memory, or a file descriptor (pages at index * pageSize). */
export type PageSink = NativeRegion | number;

export interface NativeBinding {
  /** 'addon' for the C++ addon, 'twin' for the TypeScript twin (src/native/twin). */
  readonly kind: 'addon' | 'twin';

  mapFile(path: string, byteLength: number, writable: boolean): NativeMapping;
  /**
   * [offset, offset + length) of the file mapped MAP_PRIVATE, writable: pages load from the file on first
   * touch, and writes through views are copied on write, this process's alone; they never reach the file.
   * offset must be a multiple of the system page size and the file hold offset + length bytes. A page
   * not touched yet may show later changes to the file (POSIX leaves it open), so the file must stay
   * still. Native calls never read the file in place of the mapping. Unless readAhead, the kernel reads
   * only the page touched (MADV_RANDOM), not its default window around it.
   */
  mapFilePrivate(path: string, offset: number, length: number, readAhead?: boolean): NativeMapping;
  /**
   * The byte ranges of the file at `path` that hold data, as [start, end) pairs in order (lseek
   * SEEK_DATA/SEEK_HOLE); the rest are holes, which read as zeros. Without SEEK_DATA, the whole file.
   */
  dataExtents(path: string): Float64Array;

  /** XXH64 (seed 0) of bytes. */
  xxh64(data: Uint8Array): bigint;
  /** out[outOffset + i] = XXH64 of page firstPage + i, for i < count. */
  hashPages(region: NativeRegion, pageSize: number, firstPage: number, count: number,
    out: BigUint64Array, outOffset: number): void;
  /**
   * The hash tracker's pass, on a pool thread: writes the index of every page in [firstPage, +count)
   * whose XXH64 differs from sentHashes[page] into out from 0, ascending, and resolves with how many.
   * out needs count slots; neither it nor sentHashes may change until the promise settles.
   */
  changedPages(region: NativeRegion, pageSize: number, firstPage: number, count: number,
    sentHashes: BigUint64Array, out: Uint32Array): Promise<number>;

  /** Atomic fetch-and-clear of bitmap words [wordStart, wordEnd) into snapshot; returns bits found set. */
  dirtySync(bitmap: Int32Array, snapshot: Uint32Array, wordStart: number, wordEnd: number): number;
  /** Population count of bitmap words [wordStart, wordEnd), without clearing. */
  dirtyCount(bitmap: Int32Array, wordStart: number, wordEnd: number): number;
  /**
   * Appends the page index of every set bit of snapshot words [wordStart, wordEnd) to out, stopping
   * before a word whose bits might not fit. Returns [indicesWritten, nextWord].
   */
  dirtyScan(snapshot: Uint32Array, wordStart: number, wordEnd: number, out: Uint32Array): [number, number];

  /** A page encoder with a page cache of cacheBytes (0: no DELTA or DUP). */
  PageEncoder: new (pageSize: number, pageCount: number, cacheBytes: number) => NativePageEncoder;

  /**
   * Verifies and applies recordCount records from records to sink, recording heldHashes[page], on a
   * pool thread. Stops at the first bad record (a bad page is never written). Rejects on a write error.
   * With streams > 1 the batch came on `stream` of `streams` parallel streams, and one record of
   * another stream's page (or a DUP of one) refuses the whole batch, WrongStream, before anything is
   * applied. Left out: stream 0 of 1, which owns every page.
   */
  applyPages(sink: PageSink, pageSize: number, pageCount: number, records: Uint8Array,
    recordCount: number, heldHashes: BigUint64Array, stream?: number, streams?: number): Promise<ApplyResult>;
  /** The same work on the calling thread; throws on a write error. */
  applyPagesSync(sink: PageSink, pageSize: number, pageCount: number, records: Uint8Array,
    recordCount: number, heldHashes: BigUint64Array, stream?: number, streams?: number): ApplyResult;

  /** Writes the file's dirty pages back (sync_file_range, not waiting for the disk) on a pool thread; settles when that call returns. */
  startWriteback(fd: number): Promise<void>;

  /**
   * Writes the listed pages of region (ascending, each below the region's page count) into the file fd,
   * page p at fileOffset + p * pageSize, on a pool thread, and records hashes[p] = XXH64 of the page.
   * hashes (a slot per region page) says what the file holds: a zero page is not written, and is punched
   * out of the file (a hole; the twin writes zeros) only where hashes[p] was not the zero page's hash.
   * Each run of consecutive pages is copied aside first (read from a shared mapping's file with pread,
   * else copied from memory), then hashed and written in one call: the workload may write the pages
   * meanwhile, and the hash recorded is of the bytes written. hashes must stay still until the promise
   * settles; calls on disjoint pages may overlap. Arguments are
   * checked first (a bad one throws, nothing changes). A failed write rejects with an Error naming the
   * system call, with Node's code and errno; hashes are recorded only for pages in the file by then.
   */
  writePagesToFile(region: NativeRegion, pageSize: number, indices: Uint32Array, fd: number, fileOffset: number,
    hashes: BigUint64Array): Promise<[written: number, zero: number, punched: number]>;

  /** Reads a socket's frames on a thread of its own (the addon only; the twin leaves reading to Node). */
  FrameReader?: new (fd: number) => NativeFrameReader;

  // Kernels, batch-shaped, for the micro-benchmarks and the shared test vectors. Page k of a buffer
  // is bytes [k * pageSize, (k + 1) * pageSize); pages = floor(byteLength / pageSize).

  /** How many of the pages are all zero bytes. */
  zeroPageCount(pages: Uint8Array, pageSize: number): number;
  /**
   * XBZRLE of each page pair (oldPages[k] -> newPages[k]) into out at k * limit; lengths[k] = its
   * length, or -1 when it would pass limit bytes. Returns the sum of the lengths that fit.
   */
  xbzrleEncodePages(oldPages: Uint8Array, newPages: Uint8Array, pageSize: number, limit: number,
    out: Uint8Array, lengths: Int32Array): number;
  /**
   * Applies encoding k (encoded[k * stride, + lengths[k])) to pages[k] in place; pages whose length is
   * negative (did not fit) are skipped. Returns -1 when all decoded, else the number of the first
   * malformed one (pages from it on are left as they were).
   */
  xbzrleDecodePages(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: Uint8Array,
    pageSize: number): number;
  /**
   * LZ4 block of each page (the lz4 package's compressBlock) into out at k * stride; lengths[k] = its
   * length, or 0 when no match was found or it is longer than stride. Returns the sum of the lengths.
   */
  lz4CompressPages(pages: Uint8Array, pageSize: number, out: Uint8Array, stride: number, lengths: Int32Array): number;
  /**
   * Decompresses block k into pages[k]; pages whose length is 0 (not compressed) are skipped. Returns -1
   * when all gave exactly pageSize bytes, else the first bad k.
   */
  lz4DecompressPages(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: Uint8Array,
    pageSize: number): number;
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

interface NodeGypBuild {
  /** The addon file for this process: build/Release (a local build), else the best prebuilds/<platform>-<arch> match. */
  path(dir: string): string;
}

let loaded: NativeBinding | undefined;

/**
 * The C++ addon, loaded once: the one built from source in build/Release when there is one (the
 * install script builds it only when no prebuilt binary loads, and in a checkout it is the fresh one),
 * else the prebuilt binary for this platform in prebuilds/. Throws NativeUnavailableError with a build
 * hint when neither loads; engine.ts then falls back to the TypeScript twin.
 */
export function loadAddon(): NativeBinding {
  if (loaded) return loaded;
  const root = packageRoot();
  const require = createRequire(import.meta.url);
  let path = root;
  try {
    path = (require('node-gyp-build') as NodeGypBuild).path(root);
    loaded = require(path) as NativeBinding;
  } catch (cause) {
    throw new NativeUnavailableError(
      `the native addon could not be loaded from ${path} (no prebuilt binary for ${process.platform}-${process.arch} ` +
      `loaded, nor a build from source); with a C++ toolchain, build it by 'npm rebuild pagewire' where it is ` +
      `installed, or 'npm ci' in a checkout`,
      { cause });
  }
  return loaded;
}
