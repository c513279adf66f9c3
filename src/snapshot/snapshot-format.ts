// The bytes of a snapshot file (docs/SNAPSHOT.md is the spec): a header block, each region's pages at
// fixed offsets (so the file is bounded by the regions and sparse where pages are zero), then each
// region's page hashes and present-page bitmap, the device state, and a trailer written last whose
// SHA-256 covers everything but the pages, which the hashes it covers cover in turn.
import { SnapshotCorruptError } from '../errors.js';
import { MAX_PAGE_SIZE, validatePageSize, validateRegionSize } from '../memory/region.js';
import { binding } from '../native/engine.js';
import { MAX_REGIONS } from '../wire/messages.js';

export const SNAPSHOT_MAGIC = Buffer.from('PWSNAP\r\n', 'latin1');
export const TRAILER_MAGIC = Buffer.from('PWSNEND\n', 'latin1');
export const SNAPSHOT_VERSION = 1;
export const SNAPSHOT_ID_BYTES = 16;
export const SNAPSHOT_DIGEST_BYTES = 32;
export const TRAILER_BYTES = 64;
/** The header's fixed part; the header block is padded with zeros up to the first page area. */
export const HEADER_BYTES = 4096;
/** Page areas start at multiples of this: a mapping's offset must be a multiple of the system page size (up to 64 KiB). */
export const AREA_ALIGNMENT = 64 * 1024;
export const MAX_PARENT_PATH_BYTES = 1024;
const REGION_ENTRY_BYTES = 64;
const REGIONS_AT = 2048;
const PARENT_PATH_AT = 128;
/** Header flag: the snapshot holds only the pages changed since its parent. */
export const FLAG_INCREMENTAL = 1;

/** Where one region's parts lie in the file. */
export interface RegionLayout {
  pageSize: number;
  byteLength: number;
  pageCount: number;
  /** Page k is at pagesOffset + k * pageSize. */
  pagesOffset: number;
  /** pageCount little-endian u64 XXH64s: every page's hash at the snapshot's point, present here or not. */
  hashesOffset: number;
  /** A bit per page (u32 words, bit k % 32 of word k / 32): the page is in this file, not its parent's. */
  presentOffset: number;
  presentBytes: number;
}

export interface SnapshotLayout {
  regions: RegionLayout[];
  /** Where the tables begin: everything from here to the trailer is covered by the digest. */
  tablesOffset: number;
  deviceStateOffset: number;
}

export interface SnapshotHeader {
  version: number;
  flags: number;
  id: Buffer;
  /** All zeros for a full snapshot. */
  parentId: Buffer;
  parentDigest: Buffer;
  /** The parent's file, relative to this file's directory (as qcow2 keeps a backing file); '' for none. */
  parentPath: string;
  createdAtMs: number;
  deviceStateLength: number;
  /** Each region's page count of present pages and region digest (XXH64 of its hash table), as written. */
  regions: Array<RegionLayout & { presentPages: number; digest: bigint }>;
}

export interface SnapshotTrailer {
  /** Where the trailer starts: the file is exactly this plus TRAILER_BYTES long. */
  offset: number;
  id: Buffer;
  /** SHA-256 of the header block, the gaps between page areas, and everything from tablesOffset to the trailer. */
  digest: Buffer;
}

const alignUp = (value: number, to: number) => Math.ceil(value / to) * to;

/** The fixed layout of a snapshot of regions of these shapes. */
export function snapshotLayout(shapes: Array<{ pageSize: number; byteLength: number }>): SnapshotLayout {
  if (shapes.length === 0 || shapes.length > MAX_REGIONS) {
    throw new RangeError(`a snapshot holds 1 to ${MAX_REGIONS} regions, got ${shapes.length}`);
  }
  const alignment = Math.max(AREA_ALIGNMENT, ...shapes.map((s) => s.pageSize));
  let at = alignment;
  const regions: RegionLayout[] = shapes.map(({ pageSize, byteLength }) => {
    validatePageSize(pageSize);
    const pageCount = validateRegionSize(byteLength, pageSize);
    const pagesOffset = at;
    at = alignUp(at + byteLength, alignment);
    return { pageSize, byteLength, pageCount, pagesOffset, hashesOffset: 0, presentOffset: 0, presentBytes: alignUp(pageCount, 64) / 8 };
  });
  const tablesOffset = at;
  for (const region of regions) {
    region.hashesOffset = at;
    at += region.pageCount * 8;
    region.presentOffset = at;
    at += region.presentBytes;
  }
  return { regions, tablesOffset, deviceStateOffset: at };
}

/** The header block's bytes (HEADER_BYTES; the rest of the block up to the first page area is zeros). */
export function encodeHeader(header: SnapshotHeader): Buffer {
  const out = Buffer.alloc(HEADER_BYTES);
  SNAPSHOT_MAGIC.copy(out, 0);
  out.writeUInt32LE(header.version, 8);
  out.writeUInt32LE(header.flags, 12);
  header.id.copy(out, 16);
  header.parentId.copy(out, 32);
  header.parentDigest.copy(out, 48);
  out.writeBigUInt64LE(BigInt(header.createdAtMs), 80);
  out.writeUInt32LE(header.regions.length, 88);
  out.writeBigUInt64LE(BigInt(header.deviceStateLength), 96);
  const path = Buffer.from(header.parentPath, 'utf8');
  if (path.length > MAX_PARENT_PATH_BYTES) throw new RangeError(`the parent's path is ${path.length} bytes; at most ${MAX_PARENT_PATH_BYTES}`);
  out.writeUInt16LE(path.length, 104);
  path.copy(out, PARENT_PATH_AT);
  for (const [i, r] of header.regions.entries()) {
    const at = REGIONS_AT + i * REGION_ENTRY_BYTES;
    out.writeUInt32LE(r.pageSize, at);
    out.writeBigUInt64LE(BigInt(r.byteLength), at + 8);
    out.writeBigUInt64LE(BigInt(r.pagesOffset), at + 16);
    out.writeBigUInt64LE(BigInt(r.hashesOffset), at + 24);
    out.writeBigUInt64LE(BigInt(r.presentOffset), at + 32);
    out.writeBigUInt64LE(BigInt(r.presentPages), at + 40);
    out.writeBigUInt64LE(r.digest, at + 48);
  }
  return out;
}

/**
 * Reads and checks a header block: its magic, version and every field's range, and that the layout it
 * states is the one its regions' shapes give. `fileSize` bounds what it may point at.
 */
export function decodeHeader(block: Buffer, fileSize: number, name: string): SnapshotHeader {
  const bad = (what: string): never => {
    throw new SnapshotCorruptError(`${name} is not a usable pagewire snapshot: ${what}`);
  };
  if (block.length < HEADER_BYTES || !block.subarray(0, 8).equals(SNAPSHOT_MAGIC)) bad('it does not start with the snapshot magic');
  const version = block.readUInt32LE(8);
  if (version !== SNAPSHOT_VERSION) bad(`it is format version ${version}; this pagewire reads version ${SNAPSHOT_VERSION}`);
  const flags = block.readUInt32LE(12);
  if ((flags & ~FLAG_INCREMENTAL) !== 0) bad(`unknown header flags 0x${flags.toString(16)}`);
  const regionCount = block.readUInt32LE(88);
  if (regionCount === 0 || regionCount > MAX_REGIONS) bad(`it says it holds ${regionCount} regions`);
  const deviceStateLength = safeNumber(block.readBigUInt64LE(96), 'the device state length', bad);
  const pathLength = block.readUInt16LE(104);
  if (pathLength > MAX_PARENT_PATH_BYTES) bad(`its parent path is ${pathLength} bytes long`);
  const shapes: Array<{ pageSize: number; byteLength: number }> = [];
  for (let i = 0; i < regionCount; i++) {
    const at = REGIONS_AT + i * REGION_ENTRY_BYTES;
    const pageSize = block.readUInt32LE(at);
    const byteLength = safeNumber(block.readBigUInt64LE(at + 8), `region ${i}'s size`, bad);
    if (!(pageSize >= 512 && pageSize <= MAX_PAGE_SIZE && (pageSize & (pageSize - 1)) === 0)) bad(`region ${i} has pages of ${pageSize} bytes`);
    if (byteLength === 0 || byteLength % pageSize !== 0 || byteLength > fileSize) bad(`region ${i} is ${byteLength} bytes in a file of ${fileSize}`);
    shapes.push({ pageSize, byteLength });
  }
  let layout: SnapshotLayout;
  try {
    layout = snapshotLayout(shapes);
  } catch (error) {
    return bad(`its regions cannot be laid out (${(error as Error).message})`);
  }
  const regions = layout.regions.map((region, i) => {
    const at = REGIONS_AT + i * REGION_ENTRY_BYTES;
    const stated = [16, 24, 32].map((o) => safeNumber(block.readBigUInt64LE(at + o), `region ${i}'s offsets`, bad));
    if (stated[0] !== region.pagesOffset || stated[1] !== region.hashesOffset || stated[2] !== region.presentOffset) {
      bad(`region ${i}'s offsets are not the format's layout`);
    }
    const presentPages = safeNumber(block.readBigUInt64LE(at + 40), `region ${i}'s present pages`, bad);
    if (presentPages > region.pageCount) bad(`region ${i} says ${presentPages} of its ${region.pageCount} pages are present`);
    return { ...region, presentPages, digest: block.readBigUInt64LE(at + 48) };
  });
  const incremental = (flags & FLAG_INCREMENTAL) !== 0;
  const parentPath = block.subarray(PARENT_PATH_AT, PARENT_PATH_AT + pathLength).toString('utf8');
  if (incremental !== (pathLength > 0)) bad(incremental ? 'it is incremental but names no parent' : 'it is full but names a parent');
  return {
    version, flags, id: Buffer.from(block.subarray(16, 32)), parentId: Buffer.from(block.subarray(32, 48)),
    parentDigest: Buffer.from(block.subarray(48, 80)), parentPath,
    createdAtMs: safeNumber(block.readBigUInt64LE(80), 'the creation time', bad), deviceStateLength, regions,
  };
}

export function encodeTrailer(trailer: SnapshotTrailer): Buffer {
  const out = Buffer.alloc(TRAILER_BYTES);
  TRAILER_MAGIC.copy(out, 0);
  out.writeBigUInt64LE(BigInt(trailer.offset), 8);
  trailer.id.copy(out, 16);
  trailer.digest.copy(out, 32);
  return out;
}

/** The trailer at the end of a file of fileSize bytes; a torn or truncated file has none there. */
export function decodeTrailer(bytes: Buffer, fileSize: number, name: string): SnapshotTrailer {
  const offset = fileSize - TRAILER_BYTES;
  if (bytes.length !== TRAILER_BYTES || !bytes.subarray(0, 8).equals(TRAILER_MAGIC) || bytes.readBigUInt64LE(8) !== BigInt(offset)) {
    throw new SnapshotCorruptError(`${name} is incomplete: it does not end with a snapshot trailer (truncated, or never finished)`);
  }
  return { offset, id: Buffer.from(bytes.subarray(16, 32)), digest: Buffer.from(bytes.subarray(32, 64)) };
}

/** The byte ranges between page areas (alignment padding), which must read as zeros and are covered by the digest. */
export function areaGaps(regions: RegionLayout[], tablesOffset: number): Array<[start: number, end: number]> {
  const gaps: Array<[number, number]> = [];
  for (const [i, r] of regions.entries()) {
    const end = r.pagesOffset + r.byteLength;
    const next = i + 1 < regions.length ? regions[i + 1]!.pagesOffset : tablesOffset;
    if (next > end) gaps.push([end, next]);
  }
  return gaps;
}

/** Whether bit `page` of a present bitmap is set. */
export function isPresent(present: Uint32Array, page: number): boolean {
  return (present[page >>> 5]! & (1 << (page & 31))) !== 0;
}

/** Set bits of a present bitmap among its first `pages` (bits past them are not counted). */
export function presentCount(words: Uint32Array, pages: number): number {
  const whole = Math.floor(pages / 32);
  const int32 = new Int32Array(words.buffer, words.byteOffset, words.length);
  let count = binding().dirtyCount(int32, 0, whole);
  for (let page = whole * 32; page < pages; page++) if (isPresent(words, page)) count++;
  return count;
}

export function formatSnapshotId(id: Buffer): string {
  return id.toString('hex');
}

function safeNumber(value: bigint, what: string, bad: (what: string) => never): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) bad(`${what} is out of range`);
  return Number(value);
}
