// Writes one snapshot file: a temp file beside the snapshot's name, sized to its fixed layout (sparse:
// pages never written are holes), pages written at their offsets by the addon's batch call (zero pages
// left as holes, their hashes recorded), then the tables, the device state, the header, and last the
// trailer, each made durable before the rename that makes the snapshot visible. A failure at any point
// removes the temp file: a half-written snapshot is never under the snapshot's name.
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { StorageError } from '../errors.js';
import { regionDigest } from '../codec/page-hashes.js';
import type { MemoryRegion } from '../memory/region.js';
import { binding } from '../native/engine.js';
import { fsyncDirectory } from '../target/durable-files.js';
import { digestOfFile, writeExactly } from './snapshot-digest.js';
import {
  FLAG_INCREMENTAL, SNAPSHOT_VERSION, presentCount, SNAPSHOT_ID_BYTES, SNAPSHOT_DIGEST_BYTES, encodeHeader, encodeTrailer, snapshotLayout,
  type SnapshotLayout,
} from './snapshot-format.js';

/** The snapshot an incremental one is taken on: its file, id and digest. */
export interface SnapshotParent {
  path: string;
  id: Buffer;
  digest: Buffer;
}

/** What a written snapshot is. */
export interface WrittenSnapshot {
  path: string;
  id: Buffer;
  digest: Buffer;
  /** Each region's digest (XXH64 of its hash table), as migrations report it. */
  regionDigests: bigint[];
  /** The file's length, and the bytes of it actually allocated. */
  fileSize: number;
  fileBytes: number;
}

/** Page counts of one write call. */
export interface PagesWritten {
  written: number;
  zero: number;
}

export class SnapshotFileWriter {
  readonly id: Buffer = randomBytes(SNAPSHOT_ID_BYTES);
  readonly layout: SnapshotLayout;
  private readonly present: Uint32Array[];
  private readonly tempPath: string;
  private fd: number | undefined;
  private deviceStateLength = 0;
  private calls = 0;
  private committed = false;

  /**
   * `hashes` are each region's hash table, updated in place by every write: a zero page's hash in every
   * slot for a full snapshot, the parent's table for an incremental one.
   */
  constructor(readonly outPath: string, shapes: Array<{ pageSize: number; byteLength: number }>,
    private readonly hashes: BigUint64Array[], private readonly parent?: SnapshotParent) {
    this.layout = snapshotLayout(shapes);
    this.present = this.layout.regions.map((r) => new Uint32Array(r.presentBytes / 4));
    this.tempPath = join(dirname(outPath), `.${basename(outPath)}.pagewire-${this.id.toString('hex')}.tmp`);
    try {
      this.fd = openSync(this.tempPath, 'wx+');
      ftruncateSync(this.fd, this.layout.deviceStateOffset);
    } catch (cause) {
      this.discard();
      throw new StorageError(`cannot create the snapshot beside ${outPath}: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Writes these pages (ascending, of region `index`) as they are now, on a pool thread, and marks them
   * present. The workload may write them meanwhile (each run is copied aside before it is hashed and
   * written); calls on disjoint pages may run side by side.
   */
  async writePages(index: number, region: MemoryRegion, pages: Uint32Array): Promise<PagesWritten> {
    const fd = this.requireFd();
    const layout = this.layout.regions[index]!;
    const present = this.present[index]!;
    for (const page of pages) present[page >>> 5]! |= 1 << (page & 31);
    this.calls += 1;
    try {
      const [written, zero] = await binding().writePagesToFile(region.native, layout.pageSize, pages, fd, layout.pagesOffset, this.hashes[index]!);
      return { written, zero };
    } catch (cause) {
      throw new StorageError(`cannot write pages to the snapshot ${this.outPath}: ${(cause as Error).message}`, { cause });
    } finally {
      this.calls -= 1;
    }
  }

  /** Appends a part of the device state. */
  appendDeviceState(part: Uint8Array): void {
    this.writeAt(part, this.layout.deviceStateOffset + this.deviceStateLength);
    this.deviceStateLength += part.byteLength;
  }

  /**
   * Writes the tables and the header, makes them durable, then the trailer, durable too, and renames the
   * file into place (its directory made durable). Until the rename, nothing is under the snapshot's name.
   */
  async commit(createdAtMs = Date.now()): Promise<WrittenSnapshot> {
    const fd = this.requireFd();
    const { layout, hashes, present, parent } = this;
    const regionDigests = hashes.map((table) => regionDigest(table));
    for (const [i, region] of layout.regions.entries()) {
      // A full snapshot holds every page: those never written are holes, and so zero, as their hashes say.
      if (!parent) present[i]!.fill(0xffffffff);
      this.writeAt(new Uint8Array(hashes[i]!.buffer, hashes[i]!.byteOffset, hashes[i]!.byteLength), region.hashesOffset);
      this.writeAt(new Uint8Array(present[i]!.buffer), region.presentOffset);
    }
    const header = encodeHeader({
      version: SNAPSHOT_VERSION, flags: parent ? FLAG_INCREMENTAL : 0, id: this.id,
      parentId: parent?.id ?? Buffer.alloc(SNAPSHOT_ID_BYTES), parentDigest: parent?.digest ?? Buffer.alloc(SNAPSHOT_DIGEST_BYTES),
      parentPath: parent ? relativeParent(this.outPath, parent.path) : '', createdAtMs, deviceStateLength: this.deviceStateLength,
      regions: layout.regions.map((region, i) => ({ ...region, presentPages: parent ? presentCount(present[i]!, region.pageCount) : region.pageCount, digest: regionDigests[i]! })),
    });
    this.writeAt(header, 0);
    const trailerOffset = layout.deviceStateOffset + this.deviceStateLength;
    const digest = digestOfFile(fd, layout, trailerOffset, this.tempPath);
    try {
      fsyncSync(fd);
      // The trailer goes last, once all it vouches for is durable: a crash before leaves a file without one.
      this.writeAt(encodeTrailer({ offset: trailerOffset, id: this.id, digest }), trailerOffset);
      fsyncSync(fd);
      const stat = fstatSync(fd);
      renameSync(this.tempPath, this.outPath);
      this.committed = true;
      this.closeFd();
      await fsyncDirectory(dirname(this.outPath));
      return { path: this.outPath, id: this.id, digest, regionDigests, fileSize: stat.size, fileBytes: stat.blocks * 512 };
    } catch (cause) {
      throw new StorageError(`cannot commit the snapshot ${this.outPath}: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Removes the temp file; the snapshot's name is untouched. Safe to call twice, and after commit(); not
   * while a writePages() is in flight (it writes through the descriptor this closes).
   */
  discard(): void {
    if (this.calls > 0) throw new StorageError('a snapshot is discarded only once its page writes have settled');
    const renamed = this.fd === undefined && this.committed;
    this.closeFd();
    if (!renamed) {
      try { unlinkSync(this.tempPath); } catch { /* never made */ }
    }
  }

  private writeAt(bytes: Uint8Array, position: number): void {
    const fd = this.requireFd();
    try {
      writeExactly(fd, bytes, position);
    } catch (cause) {
      throw new StorageError(`cannot write the snapshot ${this.outPath}: ${(cause as Error).message}`, { cause });
    }
  }

  private requireFd(): number {
    if (this.fd === undefined) throw new StorageError(`the snapshot ${this.outPath} is no longer being written`);
    return this.fd;
  }

  private closeFd(): void {
    if (this.fd === undefined) return;
    try { closeSync(this.fd); } catch { /* closing a file we only wrote cannot lose anything fsync kept */ }
    this.fd = undefined;
  }
}

/** The parent's path as a child records it: relative to the child's directory, as qcow2 keeps a backing file. */
export function relativeParent(childPath: string, parentPath: string): string {
  return relative(dirname(resolve(childPath)), resolve(parentPath));
}
