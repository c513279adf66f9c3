// The source's page encoder (docs/PROTOCOL.md section 4, "Encoder"): for each page of a batch, the
// smallest of DELTA, DUP, LZ4 and RAW by the spec's exact rules, so that the twin's batches are the
// addon's byte for byte.
import type { EncodeResult, NativePageEncoder, NativeRegion } from '../binding.js';
import {
  MAX_ENCODER_PAGE_COUNT, checkPerPage, overlaps, regionPages, toBigU64, toBool, toIndex, toPageSize, toU32, toU8,
} from './args.js';
import { Lz4PageCompressor } from './lz4.js';
import { isZeroPage, looksIncompressible } from './page-bytes.js';
import { PageCache } from './page-cache.js';
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES, writeRecordHeader } from './records.js';
import { regionBytes } from './regions.js';
import { settleLater } from './settle.js';
import { xbzrleEncode } from './xbzrle.js';
import { xxh64, zeroPageHash } from './xxh64.js';

/** A batch whose arguments passed every check. */
interface Batch {
  pages: Uint8Array;
  indices: Uint32Array;
  skipZero: boolean;
  bulk: boolean;
  lz4: boolean;
  out: Uint8Array;
  sentHashes: BigUint64Array;
}

/** Records of one batch, by encoding, in EncodeResult's order. */
class BatchCounts {
  bytes = 0;
  zero = 0;
  delta = 0;
  dup = 0;
  lz4 = 0;
  raw = 0;
  zeroSkipped = 0;

  count(encoding: Encoding): void {
    switch (encoding) {
      case Encoding.Zero: this.zero++; break;
      case Encoding.Raw: this.raw++; break;
      case Encoding.Delta: this.delta++; break;
      case Encoding.Dup: this.dup++; break;
      case Encoding.Lz4: this.lz4++; break;
    }
  }

  result(): EncodeResult {
    const records = this.zero + this.delta + this.dup + this.lz4 + this.raw;
    return [this.bytes, records, this.zero, this.delta, this.dup, this.lz4, this.raw, this.zeroSkipped];
  }
}

export class TwinPageEncoder implements NativePageEncoder {
  private readonly pageSize: number;
  private readonly pageCount: number;
  private readonly cache: PageCache;
  private readonly compressor: Lz4PageCompressor;
  /** S: the copy of the page being encoded; payload, hash and cache all describe these bytes. */
  private readonly snapshot: Uint8Array;
  /** An encode() whose promise has not settled: the cache is its state until then. */
  private busy = false;
  private bulkMode = false;
  private lz4Mode = true;

  constructor(pageSize: number, pageCount: number, cacheBytes: number) {
    this.pageSize = toPageSize(pageSize);
    this.pageCount = toIndex(pageCount, 'pageCount', MAX_ENCODER_PAGE_COUNT);
    this.cache = new PageCache(this.pageSize, this.pageCount, toIndex(cacheBytes, 'cacheBytes'));
    this.compressor = new Lz4PageCompressor(this.pageSize);
    this.snapshot = new Uint8Array(this.pageSize);
  }

  get cacheSlots(): number {
    return this.cache.slotCount;
  }

  get bulk(): boolean {
    return this.bulkMode;
  }

  /** Read when a batch is queued, as the addon does. */
  set bulk(on: boolean) {
    this.bulkMode = toBool(on, 'bulk');
  }

  get lz4(): boolean {
    return this.lz4Mode;
  }

  set lz4(on: boolean) {
    this.lz4Mode = toBool(on, 'lz4');
  }

  encode(region: NativeRegion, indices: Uint32Array, skipZero: boolean, out: Uint8Array,
    sentHashes: BigUint64Array): Promise<EncodeResult> {
    const batch = this.checkBatch(region, indices, skipZero, out, sentHashes);
    this.busy = true;
    return settleLater(() => this.encodeBatch(batch), () => { this.busy = false; });
  }

  encodeSync(region: NativeRegion, indices: Uint32Array, skipZero: boolean, out: Uint8Array,
    sentHashes: BigUint64Array): EncodeResult {
    return this.encodeBatch(this.checkBatch(region, indices, skipZero, out, sentHashes));
  }

  /** Every check before any state changes: a batch is all-or-nothing for the caller. */
  private checkBatch(region: unknown, indices: unknown, skipZero: unknown, out: unknown, sentHashes: unknown): Batch {
    if (this.busy) throw new Error('the encoder is busy: encode batches one at a time');
    const batch: Batch = {
      pages: regionBytes(region),
      indices: toU32(indices, 'indices'),
      skipZero: toBool(skipZero, 'skipZero'),
      bulk: this.bulkMode,
      lz4: this.lz4Mode,
      out: toU8(out, 'out'),
      sentHashes: toBigU64(sentHashes, 'sentHashes'),
    };
    batch.pages = regionPages(batch.pages, this.pageSize, this.pageCount);
    checkPerPage(batch.sentHashes, 'sentHashes', this.pageCount);
    const pages = batch.indices.length;
    if (batch.out.length < pages * (this.pageSize + RECORD_HEADER_BYTES)) {
      throw new RangeError(`out (${batch.out.length} bytes) is too small: ${pages} pages need ${pages} * ` +
        '(pageSize + 20) bytes');
    }
    if (overlaps(batch.out, batch.pages)) throw new RangeError('out must not overlap the region\'s pages');
    if (overlaps(batch.out, batch.sentHashes)) throw new RangeError('out must not overlap sentHashes');
    if (overlaps(batch.indices, batch.out)) throw new RangeError('indices must not overlap out');
    if (overlaps(batch.indices, batch.sentHashes)) throw new RangeError('indices must not overlap sentHashes');
    for (let i = 0; i < batch.indices.length; i++) {
      if (batch.indices[i] >= this.pageCount) {
        throw new RangeError(`indices[${i}] = ${batch.indices[i]} is not below pageCount ${this.pageCount}`);
      }
    }
    // A copy: the checked indices must not change, even through memory JS cannot see is shared.
    batch.indices = batch.indices.slice();
    return batch;
  }

  private encodeBatch(batch: Batch): EncodeResult {
    const { pages, indices, skipZero, bulk, out, sentHashes } = batch;
    const size = this.pageSize;
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const zeroHash = zeroPageHash(size);
    const counts = new BatchCounts();
    for (const index of indices) {
      const live = pages.subarray(index * size, (index + 1) * size);
      if (isZeroPage(live)) {
        this.cache.drop(index);
        sentHashes[index] = zeroHash;
        if (skipZero) {
          counts.zeroSkipped++;
          continue;
        }
        writeRecordHeader(view, counts.bytes, index, Encoding.Zero, 0, zeroHash);
        counts.bytes += RECORD_HEADER_BYTES;
        counts.count(Encoding.Zero);
        continue;
      }
      // A writer may be changing the live page: everything below uses the snapshot.
      this.snapshot.set(live);
      const hash = xxh64(this.snapshot);
      const payloadAt = counts.bytes + RECORD_HEADER_BYTES;
      const [encoding, length] = this.writePayload(index, hash, out, view, payloadAt, batch.lz4);
      writeRecordHeader(view, counts.bytes, index, encoding, length, hash);
      counts.bytes = payloadAt + length;
      counts.count(encoding);
      sentHashes[index] = hash;
      this.cache.remember(index, this.snapshot, hash, bulk);
    }
    return counts.result();
  }

  /** Writes the chosen payload of the snapshot (page `index`) at out[at]; returns its encoding and length. */
  private writePayload(index: number, hash: bigint, out: Uint8Array, view: DataView,
    at: number, lz4: boolean): [Encoding, number] {
    const size = this.pageSize;
    const base = this.cache.deltaBase(index);
    const deltaLength = base ? xbzrleEncode(base, this.snapshot, out, at, Math.floor(size / 4)) : -1;
    if (deltaLength >= 0 && deltaLength <= DUP_PAYLOAD_BYTES) return [Encoding.Delta, deltaLength];

    // Only a DELTA longer than a DUP's 4 bytes (or none) lets DUP win. Not for pages under 4 bytes:
    // the payload would outgrow the page, and out holds pageSize + 20 bytes per page.
    const source = size >= DUP_PAYLOAD_BYTES ? this.cache.duplicateOf(this.snapshot, hash) : -1;
    if (source >= 0) {
      view.setUint32(at, source, true);
      return [Encoding.Dup, DUP_PAYLOAD_BYTES];
    }
    if (deltaLength >= 0) return [Encoding.Delta, deltaLength];

    // DELTA and DUP are at most P/4 bytes when they exist; LZ4 must save at least P/8 to be worth decoding.
    const block = !lz4 || looksIncompressible(this.snapshot) ? undefined : this.compressor.compress(this.snapshot);
    if (block && block.length > 0 && block.length <= size - Math.floor(size / 8)) {
      out.set(block, at);
      return [Encoding.Lz4, block.length];
    }
    out.set(this.snapshot, at);
    return [Encoding.Raw, size];
  }
}
