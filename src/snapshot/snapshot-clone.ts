// Cloning a snapshot file: a reflink (FICLONE, through copyFile's COPYFILE_FICLONE_FORCE) where the
// file system shares blocks between files (XFS, Btrfs), which takes milliseconds whatever the size;
// otherwise a sparse copy of the data extents only. Either way into a temp file, made durable, then
// renamed into place. A clone of an incremental snapshot in another directory has its parent's path
// rewritten relative to its own place (and so its digest changes; its id, the state's, does not).
import { randomBytes } from 'node:crypto';
import { closeSync, constants, copyFileSync, fstatSync, fsyncSync, ftruncateSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidArgumentError, StorageError } from '../errors.js';
import { binding } from '../native/engine.js';
import { fsyncDirectory } from '../target/durable-files.js';
import { digestOfFile, readExactly } from './snapshot-digest.js';
import { SnapshotChain, SnapshotFile } from './snapshot-file.js';
import { relativeParent } from './snapshot-file-writer.js';
import { encodeHeader, encodeTrailer } from './snapshot-format.js';

const COPY_CHUNK_BYTES = 8 * 1024 * 1024;
/** What copyFile answers when the file system cannot share blocks between these two files. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'ERR_FS_CP_EINVAL']);

export interface ClonedSnapshot {
  path: string;
  method: 'reflink' | 'sparse-copy';
  /** Bytes of the clone allocated (a reflink shares them with the original until either is written). */
  fileBytes: number;
}

/** Clones the snapshot at `source` (its chain checked first) into `out`. */
export async function cloneSnapshot(source: string, out: string): Promise<ClonedSnapshot> {
  const target = resolve(out);
  const chain = SnapshotChain.open(source);
  const top = chain.top;
  chain.close();
  if (chain.layers.some((layer) => layer.path === target)) {
    throw new InvalidArgumentError(`the clone would replace ${target}, a file of the chain it clones: choose another name`);
  }
  const temp = join(dirname(target), `.${basename(target)}.pagewire-clone-${randomBytes(8).toString('hex')}.tmp`);
  let method: ClonedSnapshot['method'] = 'reflink';
  try {
    try {
      copyFileSync(top.path, temp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    } catch (error) {
      if (!NO_REFLINK.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
      method = 'sparse-copy';
      sparseCopy(top.path, temp);
    }
    const parentPath = top.parentPath;
    if (parentPath !== undefined && relativeParent(target, parentPath) !== top.header.parentPath) {
      repointParent(temp, top, relativeParent(target, parentPath));
    }
    const fd = openSync(temp, 'r+');
    let fileBytes: number;
    try {
      fsyncSync(fd);
      fileBytes = fstatSync(fd).blocks * 512;
    } finally {
      closeSync(fd);
    }
    renameSync(temp, target);
    await fsyncDirectory(dirname(target));
    return { path: target, method, fileBytes };
  } catch (error) {
    try { unlinkSync(temp); } catch { /* never made, or renamed */ }
    throw error instanceof StorageError ? error : new StorageError(`cannot clone ${source} to ${out}: ${(error as Error).message}`, { cause: error });
  }
}

/** Copies the file's data extents only: its holes stay holes. */
function sparseCopy(from: string, to: string): void {
  const input = openSync(from, 'r');
  const output = openSync(to, 'wx');
  try {
    ftruncateSync(output, fstatSync(input).size);
    const extents = binding().dataExtents(from);
    const chunk = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
    for (let e = 0; e < extents.length; e += 2) {
      for (let at = extents[e]!; at < extents[e + 1]!;) {
        const length = Math.min(COPY_CHUNK_BYTES, extents[e + 1]! - at);
        readExactly(input, length, at, from, chunk);
        for (let done = 0; done < length;) done += writeSync(output, chunk, done, length - done, at + done);
        at += length;
      }
    }
  } finally {
    closeSync(input);
    closeSync(output);
  }
}

/** Rewrites the clone's header with the parent's new relative path, and its trailer with the new digest. */
function repointParent(path: string, original: SnapshotFile, parentPath: string): void {
  const fd = openSync(path, 'r+');
  try {
    const header = { ...original.header, parentPath };
    writeSync(fd, encodeHeader(header), 0, undefined, 0);
    const regions = header.regions;
    const layout = { regions, tablesOffset: regions[0]!.hashesOffset, deviceStateOffset: regions.at(-1)!.presentOffset + regions.at(-1)!.presentBytes };
    const trailerOffset = layout.deviceStateOffset + header.deviceStateLength;
    const digest = digestOfFile(fd, layout, trailerOffset, path);
    writeSync(fd, encodeTrailer({ offset: trailerOffset, id: header.id, digest }), 0, undefined, trailerOffset);
  } finally {
    closeSync(fd);
  }
}
