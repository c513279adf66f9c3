// The target's side of one stream's rounds (docs/PROTOCOL.md, "Parallel streams"): ROUND_BEGIN, PAGES
// and ROUND_END, checked against what the stream may carry and queued to the stream's own decoder of the
// batch's region. The target acknowledges a round once every stream has ended it; an extra stream waits
// for that acknowledgement before it reads on, so no page of round r+1 is applied before all of round r.
import { ProtocolError, asPagewireError, type PagewireError } from '../errors.js';
import type { PageBatchDecoder } from '../codec/page-batch-decoder.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import { MessageType, STOP_AND_COPY, messageName, parsePages, parseRoundMarker, type Frame } from '../wire/messages.js';
import { pagesOnStream } from '../wire/streams.js';

/** PAGES frames received but not yet applied, per stream and region, beyond which it stops reading (about 4 MiB each). */
const MAX_QUEUED_BATCHES = 4;

/** A region as one stream receives it. */
export interface StreamRegion {
  /** This stream's decoder of the region's pages. */
  decoder: PageBatchDecoder;
  pageCount: number;
  pageSize: number;
  /** Called with the bytes of pages each batch will write (ZERO records included). */
  noteWritten(bytes: number): void;
}

export interface RoundEnd {
  round: number;
  final: boolean;
  records: number;
}

export class StreamReceiver {
  private round: number;
  private inRound = false;
  private final = false;
  private announced = 0;
  private records = 0;
  private readonly maxPages: number;

  constructor(
    readonly index: number,
    private readonly streams: number,
    readonly connection: FramedConnection,
    /** The migration's regions, in region order. */
    private readonly regions: StreamRegion[],
    /** The last round completed before this stream began (after a resume, the target's last). */
    lastRound = 0,
  ) {
    this.maxPages = regions.reduce((n, r) => n + pagesOnStream(index, streams, r.pageCount), 0);
    this.round = lastRound;
    // A batch refused on the pool thread (a bad page, a page of another stream) ends this stream's wait
    // for its next frame, instead of waiting for the source to send one.
    for (const { decoder } of regions) void decoder.failed.then((error) => connection.interrupt(asPagewireError(error)));
  }

  get inProgress(): boolean {
    return this.inRound;
  }

  /** Whether the round begun last is the stop-and-copy round. */
  get inFinalRound(): boolean {
    return this.final;
  }

  /**
   * Takes a ROUND_BEGIN, PAGES or ROUND_END frame; returns the round's end once its ROUND_END came, and
   * its decoders have applied all of it. Any other frame is a protocol error.
   */
  async take(frame: Frame): Promise<RoundEnd | undefined> {
    const label = this.streams > 1 ? ` on stream ${this.index}` : '';
    if (frame.type === MessageType.RoundBegin) {
      const marker = parseRoundMarker(frame.payload, 'ROUND_BEGIN');
      if (this.inRound || marker.round !== this.round + 1) {
        throw new ProtocolError(`ROUND_BEGIN ${marker.round} out of order after round ${this.round}${label}`);
      }
      if (this.final) throw new ProtocolError(`ROUND_BEGIN ${marker.round} after the stop-and-copy round${label}`);
      // A round sends each page at most once: a larger announcement can only be an attack, since a
      // 20-byte ZERO record costs this side a whole page of writing.
      if (marker.pages > this.maxPages) {
        const limit = this.streams > 1 ? `stream ${this.index} carries at most`
          : this.regions.length > 1 ? 'the regions have' : 'the region has';
        throw new ProtocolError(`ROUND_BEGIN ${marker.round} announces ${marker.pages} pages, ${limit} ${this.maxPages}`);
      }
      this.round = marker.round;
      this.inRound = true;
      this.records = 0;
      this.announced = marker.pages;
      this.final = (marker.flags & STOP_AND_COPY) !== 0;
      return undefined;
    }
    if (frame.type === MessageType.Pages) {
      if (!this.inRound) throw new ProtocolError(`PAGES outside a round${label}`);
      const batch = parsePages(frame.payload);
      const region = this.regions[batch.region];
      if (!region) throw new ProtocolError(`PAGES names region ${batch.region} of ${this.regions.length}${label}`);
      if (this.records + batch.recordCount > this.announced) {
        throw new ProtocolError(`round ${this.round} carries more page records than the ${this.announced} its ROUND_BEGIN announced${label}`);
      }
      // A natively read frame's buffer goes back to its pool once applied. The decoder refuses a
      // record of another stream's page before it applies any of the batch.
      region.decoder.enqueue(batch.records, batch.recordCount, frame.release, this.index, this.streams);
      this.records += batch.recordCount;
      region.noteWritten(batch.recordCount * region.pageSize);
      // Reading goes on while the pool thread decodes; past a few queued batches of a region the socket waits.
      await region.decoder.drainTo(MAX_QUEUED_BATCHES);
      return undefined;
    }
    if (frame.type === MessageType.RoundEnd) {
      const marker = parseRoundMarker(frame.payload, 'ROUND_END');
      if (!this.inRound || marker.round !== this.round) {
        throw new ProtocolError(`ROUND_END ${marker.round} does not close round ${this.round}${label}`);
      }
      if (marker.flags !== 0) throw new ProtocolError('ROUND_END carries flags');
      if (marker.pages !== this.records) {
        throw new ProtocolError(`round ${this.round} carried ${this.records} page records${label}, the source says it sent ${marker.pages}`);
      }
      this.inRound = false;
      for (const { decoder } of this.regions) await decoder.settled();
      return { round: this.round, final: this.final, records: this.records };
    }
    throw new ProtocolError(`unexpected ${messageName(frame.type)}${label} during the pre-copy`);
  }
}

/**
 * An extra stream's reader: reads a round, reports its end, and waits for the round's acknowledgement
 * (or the end of the migration) before reading the next.
 */
export class ExtraStreamReader {
  private ended = settleable<RoundEnd>();
  private acked = settleable<void>();
  private stopped = false;
  /** Settles when the reader stops: after the stop-and-copy round, or on its first failure. */
  readonly done: Promise<void>;

  constructor(readonly receiver: StreamReceiver, timeoutMs: number, onFailure: (error: PagewireError) => void) {
    this.done = this.read(timeoutMs).catch((error: PagewireError) => {
      this.ended.reject(error);
      onFailure(error);
    });
  }

  /** This stream's end of the round being received (rejects if the stream failed). */
  roundEnded(): Promise<RoundEnd> {
    return this.ended.promise;
  }

  /** The round was acknowledged: read the next one. */
  acknowledge(): void {
    const acked = this.acked;
    this.ended = settleable<RoundEnd>();
    this.acked = settleable<void>();
    acked.resolve();
  }

  /** The migration ended: read no further. */
  stop(): void {
    this.stopped = true;
    this.acked.resolve();
  }

  private async read(timeoutMs: number): Promise<void> {
    for (;;) {
      const frame = await this.receiver.connection.receive(timeoutMs);
      // Frames read before the migration failed are dropped, not decoded into an image being discarded.
      if (this.stopped) return;
      const end = await this.receiver.take(frame);
      if (!end) continue;
      const acked = this.acked.promise;
      this.ended.resolve(end);
      if (end.final) return;
      await acked;
      if (this.stopped) return;
    }
  }
}

interface Settleable<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function settleable<T>(): Settleable<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  // Nobody may be waiting when a stream fails; the failure reaches the target through onFailure.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
