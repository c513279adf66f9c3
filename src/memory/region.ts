// A region is byteLength bytes in pages of pageSize. Every backing is handed to the addon as a
// NativeRegion (a DataView or a mapping), so no code path ever needs one JS buffer over the whole region
// and sizes are plain numbers (exact up to 2^53): 64 GiB and more work.
import { closeSync, fsyncSync, ftruncateSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { InvalidArgumentError, RegionChangedError, StorageError } from '../errors.js';
import type { NativeMapping, NativeRegion } from '../native/binding.js';
import { binding } from '../native/engine.js';
import { MAX_TWIN_BYTES } from '../native/twin/regions.js';

export const DEFAULT_PAGE_SIZE = 4096;
export const MIN_PAGE_SIZE = 512;
export const MAX_PAGE_SIZE = 1 << 20;
/** Page indices travel as u32 on the wire. */
export const MAX_PAGE_COUNT = 2 ** 32 - 1;
/** The largest window a JS view may cover (V8 typed arrays stop at 4 GiB on Node 20). */
export const MAX_VIEW_BYTES = 1 << 30;

/** A WebAssembly.Memory (typed structurally: Node 20's types do not declare the WebAssembly namespace). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(deltaPages: number): number;
}

export type RegionBacking = Buffer | Uint8Array | ArrayBuffer | SharedArrayBuffer | WasmMemory;

const WasmMemoryClass = (globalThis as { WebAssembly?: { Memory: new (...args: never[]) => WasmMemory } })
  .WebAssembly?.Memory;

export function validatePageSize(pageSize: number): number {
  if (!Number.isInteger(pageSize) || pageSize < MIN_PAGE_SIZE || pageSize > MAX_PAGE_SIZE ||
      (pageSize & (pageSize - 1)) !== 0) {
    throw new InvalidArgumentError(
      `page size must be a power of two from ${MIN_PAGE_SIZE} to ${MAX_PAGE_SIZE}, got ${pageSize}`);
  }
  return pageSize;
}

export function validateRegionSize(byteLength: number, pageSize: number): number {
  if (!Number.isSafeInteger(byteLength) || byteLength <= 0) {
    throw new InvalidArgumentError(`region size must be a positive whole number of bytes, got ${byteLength}`);
  }
  if (byteLength % pageSize !== 0) {
    throw new InvalidArgumentError(
      `region size ${byteLength} is not a multiple of the page size ${pageSize}`);
  }
  const pages = byteLength / pageSize;
  if (pages > MAX_PAGE_COUNT) {
    throw new InvalidArgumentError(`region of ${pages} pages exceeds the limit of ${MAX_PAGE_COUNT} pages`);
  }
  return pages;
}

export class MemoryRegion {
  readonly pageSize: number;
  readonly pageCount: number;
  readonly byteLength: number;
  private readonly source: () => NativeRegion;
  private readonly mapping: NativeMapping | undefined;
  /** A copy-on-write mapping of a file (a lazy restore): its writes never reach the file. */
  private readonly privateMapping: boolean;
  /** Without the addon, a "mapped" file is a copy in shared memory, written back by flush(). */
  private readonly fileCopy: { path: string; buffer: SharedArrayBuffer } | undefined;

  private constructor(byteLength: number, pageSize: number, source: () => NativeRegion,
    backing: { mapping?: NativeMapping; privateMapping?: boolean; fileCopy?: { path: string; buffer: SharedArrayBuffer }; filePath?: string } = {}) {
    this.pageSize = validatePageSize(pageSize);
    this.pageCount = validateRegionSize(byteLength, pageSize);
    this.byteLength = byteLength;
    this.source = source;
    this.mapping = backing.mapping;
    this.privateMapping = backing.privateMapping === true;
    this.fileCopy = backing.fileCopy;
    this.filePath = backing.filePath ?? backing.fileCopy?.path;
  }

  /** The file a mapFile() region is, if it is one. */
  readonly filePath: string | undefined;

  /**
   * The pages of a mapFile() region that hold data, in order: every page that overlaps a data extent of
   * the file (SEEK_DATA/SEEK_HOLE); the others are holes, which read as zeros. Undefined for a region in
   * memory, whose pages are all data. The answer is a snapshot: a hole written afterwards is data.
   */
  dataPages(): Uint32Array | undefined {
    const ranges = this.dataPageRanges();
    if (!ranges) return undefined;
    const pages = new Uint32Array(ranges.ends.reduce((n, end, i) => n + end - ranges.starts[i]!, 0));
    let n = 0;
    for (const [i, start] of ranges.starts.entries()) for (let page = start; page < ranges.ends[i]!; page++) pages[n++] = page;
    return pages;
  }

  /**
   * The pages holding data, as ascending ranges [starts[i], ends[i]) that neither touch nor overlap;
   * undefined for memory that is no file. Cheaper than dataPages() for a file that is mostly data.
   */
  dataPageRanges(): { starts: number[]; ends: number[] } | undefined {
    if (this.filePath === undefined) return undefined;
    const extents = binding().dataExtents(this.filePath);
    const { pageSize, pageCount } = this;
    const starts: number[] = [];
    const ends: number[] = [];
    for (let i = 0; i < extents.length; i += 2) {
      // The file may have grown past the region since it was mapped: what lies beyond is not the region's.
      const end = Math.min(pageCount, Math.ceil(extents[i + 1]! / pageSize));
      const start = Math.floor(extents[i]! / pageSize);
      if (start >= end) continue;
      // Two extents may share or touch a page: one range.
      if (ends.length > 0 && start <= ends[ends.length - 1]!) ends[ends.length - 1] = Math.max(ends[ends.length - 1]!, end);
      else {
        starts.push(start);
        ends.push(end);
      }
    }
    return { starts, ends };
  }

  /** Wraps memory the embedder owns. A WebAssembly.Memory is read through its current buffer each time. */
  static fromMemory(backing: RegionBacking, options: { pageSize?: number } = {}): MemoryRegion {
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (WasmMemoryClass && backing instanceof WasmMemoryClass) {
      const memory = backing as WasmMemory;
      const byteLength = memory.buffer.byteLength;
      return new MemoryRegion(byteLength, pageSize, () => {
        // Pages a grow() added would never be sent: refuse loudly rather than move a truncated memory.
        const { buffer } = memory;
        if (buffer.byteLength !== byteLength) {
          throw new RegionChangedError(`the WebAssembly.Memory grew from ${byteLength} to ${buffer.byteLength} bytes during ` +
            'the migration; its new pages cannot join it: migrate it again');
        }
        return new DataView(buffer);
      });
    }
    let view: DataView;
    if (backing instanceof ArrayBuffer || backing instanceof SharedArrayBuffer) {
      view = new DataView(backing);
    } else if (ArrayBuffer.isView(backing)) {
      view = new DataView(backing.buffer, backing.byteOffset, backing.byteLength);
    } else {
      throw new InvalidArgumentError(
        'expected a Buffer, Uint8Array, ArrayBuffer, SharedArrayBuffer or WebAssembly.Memory for the region');
    }
    return new MemoryRegion(view.byteLength, pageSize, () => view);
  }

  /**
   * Maps a file MAP_SHARED, as QEMU's memory-backend-file: writes land in the file. With `create`, a new
   * sparse, all-zero file of that many bytes is created (an existing file is an error); without it, the
   * region is the existing file at its current size.
   */
  static mapFile(path: string, options: { pageSize?: number; create?: number } = {}): MemoryRegion {
    const pageSize = validatePageSize(options.pageSize ?? DEFAULT_PAGE_SIZE);
    let byteLength: number;
    let created = false;
    // A file this call created is removed again if mapping it fails, so no half-made file is left.
    const unlinkCreated = () => { if (created) rmSync(path, { force: true }); };
    try {
      if (options.create !== undefined) {
        validateRegionSize(options.create, pageSize);
        const fd = openSync(path, 'wx');
        created = true;
        try { ftruncateSync(fd, options.create); } finally { closeSync(fd); }
        byteLength = options.create;
      } else {
        byteLength = statSync(path).size;
      }
    } catch (cause) {
      unlinkCreated();
      throw new StorageError(`cannot open ${path}: ${(cause as Error).message}`, { cause });
    }
    validateRegionSize(byteLength, pageSize);
    if (binding().kind === 'twin') return MemoryRegion.copyOfFile(path, byteLength, pageSize);
    let mapping: NativeMapping;
    try {
      // Always writable: a JS write through a view of a read-only mapping would crash the process.
      mapping = binding().mapFile(path, byteLength, true);
    } catch (cause) {
      unlinkCreated();
      throw new StorageError(`cannot map ${path}: ${(cause as Error).message}`, { cause });
    }
    return new MemoryRegion(byteLength, pageSize, () => mapping, { mapping, filePath: path });
  }

  /**
   * A region over a private mapping from the addon's mapFilePrivate(): pages load from the file on first
   * touch, and writes stay in this process (copy-on-write). flush() has nothing to write back.
   */
  static fromPrivateMapping(mapping: NativeMapping, pageSize: number): MemoryRegion {
    return new MemoryRegion(mapping.byteLength, pageSize, () => mapping, { mapping, privateMapping: true });
  }

  /** mapFile without the addon: the file read into shared memory; flush() writes it back. */
  private static copyOfFile(path: string, byteLength: number, pageSize: number): MemoryRegion {
    if (byteLength > MAX_TWIN_BYTES) {
      throw new StorageError(`cannot open ${path} without the C++ addon: it is ${byteLength} bytes, and the TypeScript ` +
        `twin handles at most ${MAX_TWIN_BYTES}; build the addon with 'npm ci' (or 'npx node-gyp rebuild')`);
    }
    const buffer = new SharedArrayBuffer(byteLength);
    const bytes = new Uint8Array(buffer);
    const fd = openSync(path, 'r');
    try {
      for (let at = 0; at < byteLength;) {
        const n = readSync(fd, bytes, at, Math.min(MAX_VIEW_BYTES, byteLength - at), at);
        if (n === 0) throw new StorageError(`${path} ended at ${at} of ${byteLength} bytes while reading it`);
        at += n;
      }
    } finally {
      closeSync(fd);
    }
    const view = new DataView(buffer);
    return new MemoryRegion(byteLength, pageSize, () => view, { fileCopy: { path, buffer } });
  }

  /** The SharedArrayBuffer that is this whole region, if it is one (worker threads can write into it). */
  get sharedMemory(): SharedArrayBuffer | undefined {
    if (this.fileCopy) return this.fileCopy.buffer;
    const memory = this.mapping ? undefined : this.source();
    const whole = memory instanceof DataView && memory.byteOffset === 0 && memory.byteLength === memory.buffer.byteLength;
    return whole && memory.buffer instanceof SharedArrayBuffer ? memory.buffer : undefined;
  }

  /** The handle the addon's batch calls take. */
  get native(): NativeRegion {
    return this.source();
  }

  /** Writes mapped pages back to their file and fsyncs it; a no-op for memory regions. */
  flush(): void {
    if (this.fileCopy) {
      writeBack(this.fileCopy.path, new Uint8Array(this.fileCopy.buffer));
      return;
    }
    if (!this.mapping || this.privateMapping) return;
    try {
      this.mapping.flush();
    } catch (cause) {
      throw new StorageError(`cannot flush the region's file: ${(cause as Error).message}`, { cause });
    }
  }

  /** A byte window of the region for JS readers and writers, at most MAX_VIEW_BYTES long. */
  view(offset: number, length: number): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 ||
        offset + length > this.byteLength || length > MAX_VIEW_BYTES) {
      throw new InvalidArgumentError(`view [${offset}, +${length}) is outside the region or too long`);
    }
    if (this.mapping) return new Uint8Array(this.mapping.view(offset, length));
    const memory = this.source() as DataView;
    return new Uint8Array(memory.buffer, memory.byteOffset + offset, length);
  }

  /** Visits the region in windows of at most `chunk` bytes, in order. */
  *windows(chunk = MAX_VIEW_BYTES): Generator<Uint8Array> {
    for (let offset = 0; offset < this.byteLength; offset += chunk) {
      yield this.view(offset, Math.min(chunk, this.byteLength - offset));
    }
  }

  /** Unmaps a file region (once no view of it is reachable); memory regions stay the embedder's. */
  close(): void {
    this.mapping?.close();
  }
}

function writeBack(path: string, bytes: Uint8Array): void {
  try {
    const fd = openSync(path, 'r+');
    try {
      for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at, Math.min(MAX_VIEW_BYTES, bytes.length - at), at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (cause) {
    throw new StorageError(`cannot write the region back to ${path}: ${(cause as Error).message}`, { cause });
  }
}
