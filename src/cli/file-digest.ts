// The region digest of an image file, as FINAL carries it and the JSON reports it: XXH64 over the
// little-endian array of every page's XXH64. Read with pread in windows, so the file need not be
// writable or mapped, and the addon is not required.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { formatDigest, regionDigest } from '../codec/page-hashes.js';
import { StorageError } from '../errors.js';
import { validatePageSize } from '../memory/region.js';
import { binding } from '../native/engine.js';

const WINDOW_BYTES = 64 * 1024 * 1024;

export interface FileDigest {
  digest: string;
  pageSize: number;
  pagesTotal: number;
}

export function fileDigest(path: string, pageSize: number): FileDigest {
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
    const pagesTotal = size / pageSize;
    const hashes = new BigUint64Array(pagesTotal);
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
    return { digest: formatDigest(regionDigest(hashes)), pageSize, pagesTotal };
  } finally {
    closeSync(fd);
  }
}
