// The standby's copy of the workload: a working file beside `--out`, written as epochs arrive, with an
// undo log of every page an uncommitted epoch overwrites. An epoch commits once every record is
// applied and the region digest equals the primary's; anything else (a bad record, a wrong digest, the
// primary gone mid-epoch) rolls the pages back, so the file only ever holds a committed epoch between
// epochs. `--out` is written at activation: the working file fsynced and renamed over it (docs/PROTOCOL.md
// section 9, "Durability" says why not at every commit).
import { randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, openSync, readSync, readdirSync, statSync, writeSync } from 'node:fs';
import { copyFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ChecksumError, StorageError } from '../errors.js';
import { PageBatchDecoder } from '../codec/page-batch-decoder.js';
import { RECORD_HEADER_BYTES } from '../codec/page-records.js';
import type { PageStore } from '../codec/page-store.js';
import { formatDigest, newPageHashes, regionDigest } from '../codec/page-hashes.js';
import { filePageHashes } from '../memory/file-page-hashes.js';
import type { ApplyResult } from '../native/binding.js';
import { fsyncDirectory } from '../target/durable-files.js';
import { FilePageStore } from '../target/page-stores.js';

/** What the standby holds for good: the last committed epoch. */
export interface CommittedEpoch {
  epoch: number;
  digest: bigint;
  /** The device state the primary sent with it (empty without a deviceState hook). */
  deviceState: Buffer;
  /** The primary's fencing token in that epoch (0 without a coordinator). */
  token: number;
}

export class StandbyImage implements PageStore {
  readonly heldHashes: BigUint64Array;
  readonly pageCount: number;
  /** Old contents and hashes of the pages written since the last commit; off until a first commit. */
  private readonly undo = new Map<number, { bytes: Buffer; hash: bigint }>();
  private committedNow: CommittedEpoch | undefined;
  private decoder: PageBatchDecoder;
  private readonly undoFd: number;
  /** Set once the files are closed (activated or discarded): nothing more is written. */
  private closed = false;

  private constructor(readonly out: string, readonly workingPath: string, private readonly store: FilePageStore,
    readonly pageSize: number, heldHashes: BigUint64Array) {
    this.pageCount = heldHashes.length;
    this.heldHashes = heldHashes;
    this.decoder = new PageBatchDecoder(this, heldHashes);
    try {
      this.undoFd = openSync(workingPath, 'r+');
    } catch (cause) {
      store.close();
      throw new StorageError(`cannot open ${workingPath}: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * A working file for a region of `byteLength`: a copy of `--out` when it is an image of that size (a
   * re-protect: the primary then sends only the pages that differ), else a new zeroed file.
   */
  static async open(out: string, byteLength: number, pageSize: number): Promise<StandbyImage> {
    const prefix = `.${basename(out)}.standby-`;
    await removeDeadWorkingFiles(dirname(out), prefix);
    const workingPath = join(dirname(out), `${prefix}${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
    const reuse = existsSync(out) && statSync(out).isFile() && statSync(out).size === byteLength;
    let store: FilePageStore;
    let hashes: BigUint64Array;
    try {
      if (reuse) {
        // A reflink where the file system has them: no bytes copied.
        await copyFile(out, workingPath, constants.COPYFILE_FICLONE);
        store = await FilePageStore.openExisting(workingPath, byteLength, pageSize);
        hashes = filePageHashes(workingPath, pageSize);
      } else {
        store = await FilePageStore.create(workingPath, byteLength, pageSize);
        hashes = newPageHashes(byteLength / pageSize, pageSize);
      }
    } catch (cause) {
      await rm(workingPath, { force: true });
      throw cause instanceof StorageError ? cause : new StorageError(`cannot make ${workingPath}: ${(cause as Error).message}`, { cause });
    }
    return new StandbyImage(out, workingPath, store, pageSize, hashes);
  }

  get committed(): CommittedEpoch | undefined {
    return this.committedNow;
  }

  /** Queues a PAGES batch (applied in order on a pool thread); throws an earlier batch's failure. */
  enqueue(records: Uint8Array, recordCount: number, done?: () => void): void {
    this.decoder.enqueue(records, recordCount, done);
  }

  /** Waits until at most `max` batches are queued. */
  drainTo(max: number): Promise<void> {
    return this.decoder.drainTo(max);
  }

  /** The decoder's first failure, as it happens. */
  get failed(): Promise<Error> {
    return this.decoder.failed;
  }

  /** PageStore: saves what each page of the batch held before it is overwritten, then applies it. */
  applyRecords(records: Uint8Array, recordCount: number, heldHashes: BigUint64Array): Promise<ApplyResult> {
    if (this.committedNow) this.saveForUndo(records, recordCount);
    return this.store.applyRecords(records, recordCount, heldHashes);
  }

  /**
   * Every record of the epoch is applied: checks the region digest and makes the epoch the committed
   * one. A wrong digest rolls it back and throws ChecksumError. A sync (`consistent` false) is verified
   * the same way but commits nothing: its pages stay undoable until the next epoch commits.
   */
  async commit(epoch: CommittedEpoch, consistent: boolean): Promise<void> {
    await this.decoder.settled();
    const digest = regionDigest(this.heldHashes);
    if (digest !== epoch.digest) {
      throw new ChecksumError(`epoch ${epoch.epoch}: the standby's digest ${formatDigest(digest)} differs from the primary's ` +
        `${formatDigest(epoch.digest)}`, -1);
    }
    if (!consistent) return;
    this.undo.clear();
    this.committedNow = epoch;
    // The kernel writes the epoch back in the background, so that activation's fsync has little left.
    this.store.startWriteback();
  }

  /** Puts back every page written since the last commit (a torn or refused epoch); a fresh decoder follows. */
  async rollBack(): Promise<void> {
    await this.decoder.settled().catch(() => undefined);
    if (this.closed) return;
    for (const [page, { bytes, hash }] of this.undo) {
      this.writeAt(bytes, page * this.pageSize);
      this.heldHashes[page] = hash;
    }
    this.undo.clear();
    this.decoder = new PageBatchDecoder(this, this.heldHashes);
  }

  /** Makes the committed epoch `--out`: fsync, rename over it, fsync the directory. */
  async activate(): Promise<CommittedEpoch> {
    const epoch = this.committedNow;
    if (!epoch) throw new StorageError('no epoch was committed: nothing to activate');
    await this.rollBack();
    await this.store.sync();
    this.closeFiles();
    await rename(this.workingPath, this.out).catch((cause: Error) => {
      throw new StorageError(`cannot rename ${this.workingPath} to ${this.out}: ${cause.message}`, { cause });
    });
    await fsyncDirectory(dirname(this.out));
    return epoch;
  }

  /**
   * After a failed activation: closes the files and gives the working file (the committed epoch, or
   * what of it was written) a name no later standby removes; returns where it is.
   */
  async keep(epoch: number): Promise<string> {
    await this.decoder.settled().catch(() => undefined);
    this.closeFiles();
    if (!existsSync(this.workingPath)) return this.out;
    const kept = `${this.out}.epoch-${epoch}.kept`;
    try {
      await rename(this.workingPath, kept);
      return kept;
    } catch {
      return this.workingPath;
    }
  }

  /** Deletes the working file; `--out` is left as it was. */
  async discard(): Promise<void> {
    await this.decoder.settled().catch(() => undefined);
    this.closeFiles();
    await rm(this.workingPath, { force: true });
  }

  private closeFiles(): void {
    this.closed = true;
    this.store.close();
    try { closeSync(this.undoFd); } catch { /* already closed */ }
  }

  private saveForUndo(records: Uint8Array, recordCount: number): void {
    const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
    for (let at = 0, n = 0; n < recordCount && at + RECORD_HEADER_BYTES <= records.byteLength; n++) {
      const page = view.getUint32(at, true);
      // A page out of range is refused by the apply, which writes nothing of the batch then.
      if (page < this.pageCount && !this.undo.has(page)) {
        const bytes = Buffer.allocUnsafe(this.pageSize);
        this.readAt(bytes, page * this.pageSize);
        this.undo.set(page, { bytes, hash: this.heldHashes[page]! });
      }
      at += RECORD_HEADER_BYTES + view.getUint32(at + 8, true);
    }
  }

  private readAt(bytes: Buffer, position: number): void {
    try {
      for (let got = 0; got < bytes.length;) {
        const n = readSync(this.undoFd, bytes, got, bytes.length - got, position + got);
        if (n === 0) throw new Error('unexpected end of file');
        got += n;
      }
    } catch (cause) {
      throw new StorageError(`cannot read ${this.workingPath} for the undo log: ${(cause as Error).message}`, { cause });
    }
  }

  private writeAt(bytes: Buffer, position: number): void {
    try {
      for (let put = 0; put < bytes.length;) put += writeSync(this.undoFd, bytes, put, bytes.length - put, position + put);
    } catch (cause) {
      throw new StorageError(`cannot roll back ${this.workingPath}: ${(cause as Error).message}`, { cause });
    }
  }
}

/**
 * Removes the working files a standby of this `--out` left when it died (their names carry its pid): a
 * standby that runs keeps its own. A file kept by a failed activation is renamed out of this pattern.
 */
async function removeDeadWorkingFiles(dir: string, prefix: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (cause) {
    throw new StorageError(`cannot list ${dir}: ${(cause as Error).message}`, { cause });
  }
  for (const name of names) {
    const pid = Number(/^(\d+)-[0-9a-f]+\.tmp$/.exec(name.slice(prefix.length))?.[1]);
    if (!name.startsWith(prefix) || !Number.isInteger(pid) || processAlive(pid)) continue;
    await rm(join(dir, name), { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive, someone else's.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
