// Opening a snapshot file, and the chain of files an incremental one stands on. Nothing in a file is
// trusted before its trailer's digest matches the file and every region's hash table matches the
// region digest in the header; a parent is trusted only if it is the very snapshot the child was taken
// on (its id and its digest). The pages themselves are checked against the tables where they are read
// (snapshot-restore.ts).
import { closeSync, fstatSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { SnapshotChainError, SnapshotCorruptError, StorageError } from '../errors.js';
import { regionDigest } from '../codec/page-hashes.js';
import { digestOfFile, readExactly } from './snapshot-digest.js';
import {
  FLAG_INCREMENTAL, HEADER_BYTES, TRAILER_BYTES, decodeHeader, decodeTrailer, formatSnapshotId, isPresent, presentCount, type SnapshotHeader,
} from './snapshot-format.js';

/** The most files a chain may have: deeper is refused, which also ends a loop of parents. */
export const MAX_CHAIN_LENGTH = 1000;

export class SnapshotFile {
  private tables: BigUint64Array[] | undefined;

  private constructor(
    readonly path: string,
    private fdOpen: number | undefined,
    readonly header: SnapshotHeader,
    readonly digest: Buffer,
    readonly fileSize: number,
    readonly fileBytes: number,
    /** Each region's present-page bitmap. */
    readonly present: Uint32Array[],
  ) {}

  /** Opens and checks one file (not its parent, nor its pages). Throws SnapshotCorruptError for anything amiss. */
  static open(path: string): SnapshotFile {
    const name = path;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (cause) {
      throw new StorageError(`cannot open the snapshot ${path}: ${(cause as Error).message}`, { cause });
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new SnapshotCorruptError(`${name} is not a regular file`);
      if (stat.size < HEADER_BYTES + TRAILER_BYTES) {
        throw new SnapshotCorruptError(`${name} is ${stat.size} bytes: too short to be a snapshot (truncated?)`);
      }
      const header = decodeHeader(readExactly(fd, HEADER_BYTES, 0, name), stat.size, name);
      const trailer = decodeTrailer(readExactly(fd, TRAILER_BYTES, stat.size - TRAILER_BYTES, name), stat.size, name);
      const { regions } = header;
      const deviceStateOffset = regions.at(-1)!.presentOffset + regions.at(-1)!.presentBytes;
      if (trailer.offset !== deviceStateOffset + header.deviceStateLength) {
        throw new SnapshotCorruptError(`${name} is ${stat.size} bytes, not the ${deviceStateOffset + header.deviceStateLength + TRAILER_BYTES} ` +
          'its header describes (truncated, or extended)');
      }
      if (!trailer.id.equals(header.id)) throw new SnapshotCorruptError(`${name}'s trailer belongs to another snapshot than its header`);
      const layout = { regions, tablesOffset: regions[0]!.hashesOffset, deviceStateOffset };
      if (!digestOfFile(fd, layout, trailer.offset, name).equals(trailer.digest)) {
        throw new SnapshotCorruptError(`${name} does not match its digest: it was changed or torn after it was written`);
      }
      const full = (header.flags & FLAG_INCREMENTAL) === 0;
      const present = regions.map((r, i) => {
        const bytes = readExactly(fd, r.presentBytes, r.presentOffset, name);
        const words = new Uint32Array(bytes.buffer, bytes.byteOffset, r.presentBytes / 4);
        const count = presentCount(words, r.pageCount);
        if (count !== r.presentPages || (full && count !== r.pageCount)) {
          throw new SnapshotCorruptError(`${name}: region ${i}'s present pages (${count}) are not the ${r.presentPages} its header says`);
        }
        return words;
      });
      return new SnapshotFile(path, fd, header, trailer.digest, stat.size, stat.blocks * 512, present);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /**
   * Each region's hash table: every page's hash at this snapshot's point. Read on first use (a lazy
   * restore of a full snapshot needs none), and checked then against the region digests of the header,
   * which the trailer's digest vouched for at open.
   */
  get hashes(): BigUint64Array[] {
    this.tables ??= this.header.regions.map((r, i) => {
      const bytes = readExactly(this.fd, r.pageCount * 8, r.hashesOffset, this.path);
      const table = new BigUint64Array(bytes.buffer, bytes.byteOffset, r.pageCount);
      if (regionDigest(table) !== r.digest) throw new SnapshotCorruptError(`${this.path}: region ${i}'s hash table does not match its digest`);
      return table;
    });
    return this.tables;
  }

  get id(): string {
    return formatSnapshotId(this.header.id);
  }

  get incremental(): boolean {
    return (this.header.flags & FLAG_INCREMENTAL) !== 0;
  }

  /** The parent's file as this one names it, resolved from this file's directory. */
  get parentPath(): string | undefined {
    return this.incremental ? resolve(dirname(this.path), this.header.parentPath) : undefined;
  }

  get fd(): number {
    if (this.fdOpen === undefined) throw new StorageError(`the snapshot ${this.path} is closed`);
    return this.fdOpen;
  }

  deviceState(): Buffer {
    const { header } = this;
    const last = header.regions.at(-1)!;
    return readExactly(this.fd, header.deviceStateLength, last.presentOffset + last.presentBytes, this.path);
  }

  close(): void {
    if (this.fdOpen !== undefined) closeSync(this.fdOpen);
    this.fdOpen = undefined;
  }
}

/**
 * A snapshot and the files it stands on, the full one first. Opening checks each file and each link: a
 * missing parent, or one that is not the snapshot its child was taken on, is refused by name.
 */
export class SnapshotChain {
  private constructor(readonly layers: SnapshotFile[]) {}

  static open(path: string): SnapshotChain {
    const layers: SnapshotFile[] = [];
    try {
      let file = SnapshotFile.open(resolve(path));
      layers.push(file);
      while (file.incremental) {
        if (layers.length >= MAX_CHAIN_LENGTH) {
          throw new SnapshotChainError(`${path}'s chain is longer than ${MAX_CHAIN_LENGTH} files (a loop of parents?)`);
        }
        const parentPath = file.parentPath!;
        const parent = openParent(parentPath, file);
        layers.push(parent);
        file = parent;
      }
    } catch (error) {
      for (const layer of layers) layer.close();
      throw error;
    }
    return new SnapshotChain(layers.reverse());
  }

  /** The snapshot asked for: the last layer. Its tables describe the whole state. */
  get top(): SnapshotFile {
    return this.layers.at(-1)!;
  }

  /** For each page of region `index`, the layer that holds it (the last one in which it is present). */
  owners(index: number): Uint16Array {
    const owners = new Uint16Array(this.top.header.regions[index]!.pageCount);
    for (const [layer, file] of this.layers.entries()) {
      if (layer === 0) continue; // the full snapshot holds every page: owners start at 0
      const present = file.present[index]!;
      for (let page = 0; page < owners.length; page++) if (isPresent(present, page)) owners[page] = layer;
    }
    return owners;
  }

  close(): void {
    for (const layer of this.layers) layer.close();
  }
}

function openParent(parentPath: string, child: SnapshotFile): SnapshotFile {
  const { header } = child;
  const expected = `snapshot ${formatSnapshotId(header.parentId)}`;
  let parent: SnapshotFile;
  try {
    parent = SnapshotFile.open(parentPath);
  } catch (cause) {
    throw new SnapshotChainError(`${child.path} is incremental on ${parentPath} (${expected}), which is unusable ` +
      `(${(cause as Error).message}): the chain is broken`, { cause });
  }
  const problem = !parent.header.id.equals(header.parentId) ? `it is snapshot ${parent.id}, not ${expected}`
    : !parent.digest.equals(header.parentDigest) ? `it is ${expected} but its digest differs from the one the child recorded`
    : !sameShapes(parent, child) ? 'its regions differ from the child\'s' : undefined;
  if (problem) {
    parent.close();
    throw new SnapshotChainError(`${child.path} is incremental on ${parentPath}, but ${problem}: the chain is broken`);
  }
  return parent;
}

function sameShapes(a: SnapshotFile, b: SnapshotFile): boolean {
  const ra = a.header.regions;
  const rb = b.header.regions;
  return ra.length === rb.length && ra.every((r, i) => r.pageSize === rb[i]!.pageSize && r.byteLength === rb[i]!.byteLength);
}
