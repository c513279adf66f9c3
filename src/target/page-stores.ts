// Where a target puts verified pages: a region in memory, or a file written with pwritev (through the
// page cache, which measured 5x-15x faster than storing through a MAP_SHARED mapping of a new file).
import { close, closeSync, fsync, ftruncate, open, rm } from 'node:fs';
import { promisify } from 'node:util';
import { StorageError } from '../errors.js';
import type { PageStore } from '../codec/page-store.js';
import { validatePageSize, validateRegionSize, type MemoryRegion } from '../memory/region.js';
import type { ApplyResult } from '../native/binding.js';
import { binding } from '../native/engine.js';

export class RegionPageStore implements PageStore {
  readonly pageSize: number;
  readonly pageCount: number;
  constructor(private readonly region: MemoryRegion) {
    this.pageSize = region.pageSize;
    this.pageCount = region.pageCount;
  }
  applyRecords(records: Uint8Array, recordCount: number, heldHashes: BigUint64Array, stream?: number,
    streams?: number): Promise<ApplyResult> {
    return binding().applyPages(this.region.native, this.pageSize, this.pageCount, records, recordCount, heldHashes,
      stream, streams);
  }
}

export class FilePageStore implements PageStore {
  readonly pageCount: number;
  /** Pool-thread calls (applies, writeback) still using the descriptor; close() waits for them. */
  private poolCalls = 0;
  private closePending = false;
  private writebackRunning = false;

  private constructor(readonly path: string, private fd: number, readonly pageSize: number, byteLength: number) {
    this.pageCount = byteLength / pageSize;
  }

  /** Creates a new sparse, all-zero file of byteLength (an existing file is an error), off the event loop. */
  static async create(path: string, byteLength: number, pageSize: number): Promise<FilePageStore> {
    validatePageSize(pageSize);
    validateRegionSize(byteLength, pageSize);
    let fd: number;
    try {
      // Read-write: DELTA and DUP records read pages back.
      fd = await openAsync(path, 'wx+');
    } catch (cause) {
      throw new StorageError(`cannot create ${path}: ${(cause as Error).message}`, { cause });
    }
    try {
      await ftruncateAsync(fd, byteLength);
    } catch (cause) {
      await closeAsync(fd).catch(() => undefined);
      await rmAsync(path, { force: true }).catch(() => undefined); // reported below; the name says what is left
      throw new StorageError(`cannot size ${path} to ${byteLength} bytes: ${(cause as Error).message}`, { cause });
    }
    return new FilePageStore(path, fd, pageSize, byteLength);
  }

  /** Opens an existing file of byteLength bytes to write pages into (a standby's copy of its last image). */
  static async openExisting(path: string, byteLength: number, pageSize: number): Promise<FilePageStore> {
    validatePageSize(pageSize);
    validateRegionSize(byteLength, pageSize);
    let fd: number;
    try {
      fd = await openAsync(path, 'r+');
    } catch (cause) {
      throw new StorageError(`cannot open ${path}: ${(cause as Error).message}`, { cause });
    }
    return new FilePageStore(path, fd, pageSize, byteLength);
  }

  async applyRecords(records: Uint8Array, recordCount: number, heldHashes: BigUint64Array, stream?: number,
    streams?: number): Promise<ApplyResult> {
    const fd = this.requireFd();
    try {
      const applied = binding().applyPages(fd, this.pageSize, this.pageCount, records, recordCount, heldHashes, stream, streams);
      return await this.onPool(fd, applied);
    } catch (cause) {
      // Arguments are ours and checked; what the addon throws here is the kernel refusing a write or read.
      throw new StorageError(`cannot write pages to ${this.path}: ${(cause as Error).message}`, { cause });
    }
  }

  /** Starts writing dirty pages back in the background (one at a time); errors surface at sync(). */
  startWriteback(): void {
    if (this.writebackRunning || this.fd < 0) return;
    this.writebackRunning = true;
    const settled = () => { this.writebackRunning = false; };
    // A writeback error needs no handling here: the fsync in sync() reports the same failure.
    this.onPool(this.fd, binding().startWriteback(this.fd)).then(settled, settled);
  }

  /** Counts a pool-thread call on fd; a close() that came meanwhile closes fd once the last one settles. */
  private async onPool<T>(fd: number, call: Promise<T>): Promise<T> {
    this.poolCalls += 1;
    try {
      return await call;
    } finally {
      this.poolCalls -= 1;
      if (this.poolCalls === 0 && this.fd < 0 && this.closePending) {
        this.closePending = false;
        closeQuietly(fd);
      }
    }
  }

  /** fsync on a pool thread, not the event loop: everything written so far is durable when it resolves. */
  async sync(): Promise<void> {
    const fd = this.requireFd();
    try {
      await this.onPool(fd, fsyncAsync(fd));
    } catch (cause) {
      throw new StorageError(`cannot fsync ${this.path}: ${(cause as Error).message}`, { cause });
    }
  }

  close(): void {
    const fd = this.fd;
    this.fd = -1;
    if (fd < 0) return;
    // With a pool thread still using the descriptor, the last one to finish closes it.
    if (this.poolCalls > 0) {
      this.closePending = true;
      return;
    }
    try {
      closeSync(fd);
    } catch (cause) {
      throw new StorageError(`cannot close ${this.path}: ${(cause as Error).message}`, { cause });
    }
  }

  private requireFd(): number {
    if (this.fd < 0) throw new StorageError(`${this.path} is closed`);
    return this.fd;
  }
}

const fsyncAsync = promisify(fsync);
const openAsync = promisify(open);
const ftruncateAsync = promisify(ftruncate);
const closeAsync = promisify(close);
const rmAsync = promisify(rm);

function closeQuietly(fd: number): void {
  try { closeSync(fd); } catch { /* nothing more to do with it */ }
}
