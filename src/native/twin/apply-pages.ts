// The target's page decoder (docs/PROTOCOL.md section 4, "Verify-before-write"): every record is
// checked, built in a scratch page and verified against its hash before the sink sees it, in the
// spec's order and with its status codes. The addon judges a batch alike except for malformed LZ4
// blocks that its C decoder tolerates (PROTOCOL.md section 4); neither ever writes an unverified page.
import { ApplyStatus, type ApplyResult, type PageSink as SinkArgument } from '../binding.js';
import {
  MAX_FD, MAX_PAGE_COUNT, checkPerPage, overlaps, regionPages, toBigU64, toIndex, toPageSize, toU8,
} from './args.js';
import { lz4Decompress } from './lz4.js';
import { zeroPage } from './page-bytes.js';
import { FileSink, MemorySink, fileRunPages, type PageSink } from './page-sinks.js';
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES, payloadLengthAllowed } from './records.js';
import { regionBytes } from './regions.js';
import { settleLater } from './settle.js';
import { firstRecordOffStream } from './stream-ownership.js';
import { xbzrleDecode } from './xbzrle.js';
import { xxh64, zeroPageHash } from './xxh64.js';

/** A batch whose arguments passed every check. */
interface ApplyJob {
  sink: PageSink;
  pageSize: number;
  pageCount: number;
  records: Uint8Array;
  recordCount: number;
  heldHashes: BigUint64Array;
  stream: number;
  streams: number;
}

export function applyPagesSync(sink: SinkArgument, pageSize: number, pageCount: number, records: Uint8Array,
  recordCount: number, heldHashes: BigUint64Array, stream?: number, streams?: number): ApplyResult {
  return applyRecords(checkApply(sink, pageSize, pageCount, records, recordCount, heldHashes, stream, streams));
}

export function applyPages(sink: SinkArgument, pageSize: number, pageCount: number, records: Uint8Array,
  recordCount: number, heldHashes: BigUint64Array, stream?: number, streams?: number): Promise<ApplyResult> {
  const job = checkApply(sink, pageSize, pageCount, records, recordCount, heldHashes, stream, streams);
  return settleLater(() => applyRecords(job));
}

function checkApply(sink: unknown, pageSize: unknown, pageCount: unknown, records: unknown, recordCount: unknown,
  heldHashes: unknown, stream: unknown, streams: unknown): ApplyJob {
  const target = typeof sink === 'number' ? toIndex(sink, 'fd', MAX_FD) : regionBytes(sink, 'sink');
  const size = toPageSize(pageSize);
  const count = toIndex(pageCount, 'pageCount', MAX_PAGE_COUNT);
  const recordBytes = toU8(records, 'records');
  const recordTotal = toIndex(recordCount, 'recordCount');
  const held = toBigU64(heldHashes, 'heldHashes');
  // Left out: the only stream, which owns every page.
  const streamTotal = streams === undefined ? 1 : toIndex(streams, 'streams', MAX_PAGE_COUNT);
  if (streamTotal === 0) throw new RangeError('streams must be at least 1');
  const streamIndex = stream === undefined ? 0 : toIndex(stream, 'stream', streamTotal - 1);
  checkPerPage(held, 'heldHashes', count);
  if (overlaps(held, recordBytes)) throw new RangeError('heldHashes must not overlap records');
  let pageSink: PageSink;
  if (typeof target === 'number') {
    pageSink = new FileSink(target, size, fileRunPages(size, recordTotal));
  } else {
    const pages = regionPages(target, size, count, 'sink');
    if (overlaps(recordBytes, pages)) throw new RangeError('records must not overlap the sink\'s pages');
    if (overlaps(held, pages)) throw new RangeError('heldHashes must not overlap the sink\'s pages');
    pageSink = new MemorySink(pages, size);
  }
  return {
    sink: pageSink, pageSize: size, pageCount: count, records: recordBytes, recordCount: recordTotal, heldHashes: held,
    stream: streamIndex, streams: streamTotal,
  };
}

function applyRecords(job: ApplyJob): ApplyResult {
  const { sink, pageSize, pageCount, records, recordCount, heldHashes, stream, streams } = job;
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  if (streams > 1) {
    const off = firstRecordOffStream(view, recordCount, stream, streams);
    if (off !== records.length) return [ApplyStatus.WrongStream, off, 0]; // the whole batch is refused
  }
  const scratch = new Uint8Array(pageSize);
  const zeroHash = zeroPageHash(pageSize);
  let pos = 0;
  let applied = 0;
  // What was verified before a bad record is written all the same, as the contract says.
  const finish = (status: ApplyStatus, value: number): ApplyResult => {
    sink.flush();
    return [status, value, applied];
  };

  for (let record = 0; record < recordCount; record++) {
    if (records.length - pos < RECORD_HEADER_BYTES) return finish(ApplyStatus.Truncated, record);
    const index = view.getUint32(pos, true);
    const encoding = view.getUint8(pos + 4) as Encoding;
    const payloadLength = view.getUint32(pos + 8, true);
    const hash = view.getBigUint64(pos + 12, true);
    if (index >= pageCount) return finish(ApplyStatus.IndexOutOfRange, index);
    if (encoding > Encoding.Lz4 || view.getUint8(pos + 5) !== 0 || view.getUint16(pos + 6, true) !== 0) {
      return finish(ApplyStatus.BadEncoding, index);
    }
    if (!payloadLengthAllowed(encoding, payloadLength, pageSize)) return finish(ApplyStatus.BadLength, index);
    const payloadAt = pos + RECORD_HEADER_BYTES;
    if (records.length - payloadAt < payloadLength) return finish(ApplyStatus.Truncated, index);
    const payload = records.subarray(payloadAt, payloadAt + payloadLength);
    if (encoding === Encoding.Dup && dupSource(payload) >= pageCount) {
      return finish(ApplyStatus.IndexOutOfRange, dupSource(payload));
    }

    const page = buildPage(sink, encoding, payload, index, scratch);
    if (!page) return finish(ApplyStatus.BadPayload, index);
    const actual = encoding === Encoding.Zero ? zeroHash : xxh64(page);
    if (actual !== hash) return finish(ApplyStatus.ChecksumMismatch, index);

    // An empty DELTA leaves the page as it is: the hash is checked, there is nothing to write.
    if (encoding === Encoding.Zero) sink.writeZero(index, page);
    else if (encoding !== Encoding.Delta || payloadLength > 0) sink.write(index, page);
    heldHashes[index] = hash;
    pos = payloadAt + payloadLength;
    applied++;
  }
  if (pos !== records.length) return finish(ApplyStatus.TrailingBytes, recordCount);
  return finish(ApplyStatus.Ok, 0);
}

function dupSource(payload: Uint8Array): number {
  return new DataView(payload.buffer, payload.byteOffset, DUP_PAYLOAD_BYTES).getUint32(0, true);
}

/** The record's page as it will be once applied (in scratch, or a view); undefined for a malformed payload. */
function buildPage(sink: PageSink, encoding: Encoding, payload: Uint8Array, index: number,
  scratch: Uint8Array): Uint8Array | undefined {
  switch (encoding) {
    case Encoding.Zero: return zeroPage(scratch.length);
    case Encoding.Raw: return payload;
    case Encoding.Delta:
      sink.read(index, scratch);
      return xbzrleDecode(payload, scratch) ? scratch : undefined;
    case Encoding.Dup:
      sink.read(dupSource(payload), scratch);
      return scratch;
    case Encoding.Lz4: return lz4Decompress(payload, scratch) ? scratch : undefined;
  }
}
