// The TypeScript twin of the C++ addon (native/*.cc): the same functions, checks and bytes, used when
// the addon cannot load or PAGEWIRE_NO_NATIVE=1 asks for it. Slower, never different.
import { statSync } from 'node:fs';
import type { NativeBinding, NativeMapping } from '../binding.js';
import { NativeUnavailableError } from '../../errors.js';
import { MAX_FD, toIndex } from './args.js';
import { applyPages, applyPagesSync } from './apply-pages.js';
import { dirtyCount, dirtyScan, dirtySync } from './bitmap.js';
import {
  lz4CompressPages, lz4DecompressPages, xbzrleDecodePages, xbzrleEncodePages, zeroPageCount,
} from './kernels.js';
import { TwinPageEncoder } from './page-encoder.js';
import { writePagesToFile } from './page-file-writer.js';
import { changedPages, hashPages } from './page-hashing.js';
import { viewBytes } from './regions.js';
import { xxh64 } from './xxh64.js';

/** mapFile and mapFilePrivate alike: without the addon nothing maps a file. */
function mapFile(): NativeMapping {
  throw new NativeUnavailableError(
    "mapping a file needs the C++ addon; build it with 'npm ci' (or 'npx node-gyp rebuild')");
}

function checkedXxh64(data: Uint8Array): bigint {
  const bytes = viewBytes(data);
  if (!bytes) throw new TypeError('data must be a Uint8Array');
  return xxh64(bytes);
}

/** Without the addon there is no lseek(SEEK_DATA): the whole file counts as data. */
function dataExtents(path: string): Float64Array {
  return Float64Array.of(0, statSync(path).size);
}

/** The addon starts writeback with sync_file_range; here the fsync that follows does all the work. */
function startWriteback(fd: number): Promise<void> {
  toIndex(fd, 'fd', MAX_FD);
  return Promise.resolve();
}

export const twin: NativeBinding = {
  kind: 'twin',
  mapFile,
  mapFilePrivate: mapFile,
  dataExtents,
  xxh64: checkedXxh64,
  hashPages,
  changedPages,
  dirtySync,
  dirtyCount,
  dirtyScan,
  PageEncoder: TwinPageEncoder,
  applyPages,
  applyPagesSync,
  startWriteback,
  writePagesToFile,
  zeroPageCount,
  xbzrleEncodePages,
  xbzrleDecodePages,
  lz4CompressPages,
  lz4DecompressPages,
};
