// Every page's XXH64 of an image file, read with pread in windows, so the file need not be writable
// or mapped, and the addon is not required.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StorageError } from '../errors.js';
import { validatePageSize } from './region.js';
import { binding } from '../native/engine.js';

const WINDOW_BYTES = 64 * 1024 * 1024;

/** The page hashes of the file at `path`, which must be a whole, non-zero number of pages. */
export function filePageHashes(path: string, pageSize: number): BigUint64Array {
  validatePageSize(pageSize);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (cause) {
    throw new StorageError(`cannot open ${path}: ${(cause as Error).message}`, { cause });
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0 || size % pageSize !== 0) {
      throw new StorageError(`${path} is ${size} bytes: not a whole number of ${pageSize}-byte pages`);
    }
    const hashes = new BigUint64Array(size / pageSize);
    const window = Buffer.allocUnsafe(Math.min(WINDOW_BYTES, size));
    for (let at = 0; at < size;) {
      const want = Math.min(window.length, size - at);
      let got = 0;
      while (got < want) {
        const n = readSync(fd, window, got, want - got, at + got);
        if (n === 0) throw new StorageError(`${path} ended at ${at + got} of ${size} bytes while reading it`);
        got += n;
      }
      binding().hashPages(new DataView(window.buffer, window.byteOffset, want), pageSize, 0, want / pageSize, hashes, at / pageSize);
      at += want;
    }
    return hashes;
  } finally {
    closeSync(fd);
  }
}
