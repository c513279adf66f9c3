// Sends a round: on every stream ROUND_BEGIN, its pages in encoded batches and ROUND_END, then waits for
// the target's ROUND_ACK. Each stream has its own encoder (and share of the page cache) and LZ4 policy;
// the streams together keep to the bandwidth cap, and report progress after each batch.
import { performance } from 'node:perf_hooks';
import { ProtocolError } from '../errors.js';
import { PageBatchEncoder, type EncodedBatch } from '../codec/page-batch-encoder.js';
import { Lz4Policy } from '../codec/lz4-policy.js';
import type { PageList } from '../memory/dirty-tracker.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import { MessageType, encodePagesHeader, encodeRoundMarker, parseRoundAck } from '../wire/messages.js';
import { roundBandwidth } from '../migration/convergence.js';
import type { RoundProgress, RoundReport } from '../migration/metrics.js';
import { waitUnlessAborted } from './abortable-wait.js';
import type { SourceParts } from './source-parts.js';
import type { TrackedRegion } from './tracked-regions.js';

/** One TCP connection of the migration, with an encoder (and page cache) per region for the pages it carries. */
interface Stream {
  index: number;
  connection: FramedConnection;
  /** By region index. */
  encoders: PageBatchEncoder[];
  lz4: Lz4Policy;
}

/** A batch of one region's pages, as a stream encodes it. */
interface RegionBatch {
  region: TrackedRegion;
  indices: Uint32Array;
}

/** What the streams of one round share: the page count for progress, and the pace of the bandwidth cap. */
interface RoundState {
  round: number;
  started: number;
  planned: number;
  done: number;
  records: number;
  /** Bytes of the pages sent (records × their region's page size), for the stop rule's bandwidth. */
  pageBytes: number;
  bytesBefore: number;
  /** The bandwidth cap's schedule: bytes written by then are due at the cap's rate from `paceFrom`. */
  paceFrom: number;
  paceBytesBefore: number;
}

/** How a round's pages are encoded. */
export interface RoundKind {
  /** Round 1 into a zeroed image: zero pages are not sent at all. */
  skipZero?: boolean;
  /** ROUND_BEGIN's flags (STOP_AND_COPY for the last round). */
  flags?: number;
  /** Round 1 of every page: the encoder reads the region in bulk. */
  bulk?: boolean;
}

/** What the round sender reads of the run it belongs to, and where its progress goes. */
export type RoundSenderContext = Pick<SourceParts, 'settings' | 'connections' | 'regions' | 'summary' | 'workload' | 'phases'> & {
  /** Milliseconds since the run started. */
  elapsedMs(): number;
  progress(progress: RoundProgress): void;
};

/**
 * How far the streams may fall behind the bandwidth cap's schedule and then catch up above it. Without
 * a bound, a round that ran slower than the cap for a while (zero pages, a busy encoder) would send the
 * credit as a burst above the cap, and the link would look faster than it is to the LZ4 policy.
 */
const PACE_CREDIT_MS = 20;

export class RoundSender {
  /** Stream 0 first: it carries HELLO, the round markers' ROUND_ACK and the switch-over. */
  private streams: Stream[] = [];
  /** Encodes left in flight by a failed send: they write sentHashes until they settle. */
  private readonly lateEncodes = new Set<Promise<void>>();
  /**
   * Streams' rounds not yet settled. A round fails as soon as one connection does, while another stream
   * may still be waiting for its encode: that encode is a late one too, found only once its stream ends.
   */
  private readonly streamRounds = new Set<Promise<void>>();

  constructor(private readonly context: RoundSenderContext) {}

  get streamCount(): number {
    return this.streams.length;
  }

  /** Gives every stream of a newly opened set its encoders; the page cache is shared out evenly among them. */
  useStreams(connections: FramedConnection[]): void {
    const { settings, regions, summary } = this.context;
    const count = connections.length;
    const cacheBytes = Math.floor(settings.pageCacheBytes / (count * regions.length));
    this.streams = connections.map((connection, index) => ({
      index, connection,
      encoders: regions.map(({ region, batchPages, sentHashes }) => new PageBatchEncoder(region, { batchPages, cacheBytes, sentHashes })),
      lz4: new Lz4Policy(settings.lz4),
    }));
    summary.streams = count;
  }

  /** Resolves once no encode left by a failed round can still write sentHashes. */
  async lateEncodesSettled(): Promise<void> {
    // A stream still in its round ends soon: its connection was interrupted, so its next send fails.
    await Promise.allSettled([...this.streamRounds]);
    await Promise.all([...this.lateEncodes]);
  }

  /**
   * One round: on every stream ROUND_BEGIN, its pages in batches and ROUND_END, then the target's
   * ROUND_ACK on stream 0, sent once every stream's pages of the round are applied. `parts` is each
   * region's pages by stream: [region][stream].
   */
  async sendRound(round: number, parts: PageList[][], kind: RoundKind = {}): Promise<RoundReport> {
    const { settings, connections, summary, workload } = this.context;
    const started = performance.now();
    const bytesBefore = connections.bytesWritten();
    const state: RoundState = {
      round, started, planned: parts.flat().reduce((n, p) => n + p.count, 0), done: 0, records: 0, pageBytes: 0, bytesBefore,
      paceFrom: started, paceBytesBefore: bytesBefore,
    };
    const streamRounds = this.streams.map((stream) => this.sendStreamRound(stream, state, parts.map((byStream) => byStream[stream.index]!), kind));
    for (const streamRound of streamRounds) {
      this.streamRounds.add(streamRound);
      void streamRound.finally(() => this.streamRounds.delete(streamRound)).catch(() => undefined);
    }
    await connections.allOrInterrupt(streamRounds);
    const acked = parseRoundAck(await connections.control.expect(MessageType.RoundAck, settings.persistTimeoutMs));
    if (acked !== round) throw new ProtocolError(`target acknowledged round ${acked}, expected ${round}`);
    summary.rounds = round;
    summary.pagesTransferred += state.records;
    const durationMs = performance.now() - state.started;
    const bytesSent = connections.bytesWritten() - state.bytesBefore;
    return {
      round, pagesSent: state.records, bytesSent, durationMs,
      bandwidthBytesPerSec: roundBandwidth(bytesSent, durationMs),
      pageBandwidthBytesPerSec: roundBandwidth(state.pageBytes, durationMs),
      dirtyRateBytesPerSec: 0, pendingPages: 0, expectedDowntimeMs: 0, throttlePercent: workload.throttlePercent,
      elapsedMs: this.context.elapsedMs(),
    };
  }

  /** One stream's share of a round: each region's pages on it (`pages` by region index), region by region. */
  private async sendStreamRound(stream: Stream, state: RoundState, pages: PageList[], kind: RoundKind): Promise<void> {
    const { settings, connections, summary, workload, regions } = this.context;
    const { skipZero = false, flags = 0, bulk = false } = kind;
    const { connection } = stream;
    const { round } = state;
    const planned = pages.reduce((n, p) => n + p.count, 0);
    await connection.send(MessageType.RoundBegin, encodeRoundMarker({ round, pages: planned, flags }));
    let records = 0;
    const batches = regionBatches(regions, pages);
    // Pipelined: a pool thread encodes batch k+1 while the socket sends batch k. The generator may
    // reuse its index array, so the next batch is taken only once the previous encode has settled.
    type Encoded = { encoded: EncodedBatch; encoder: PageBatchEncoder; region: TrackedRegion; pages: number; lz4: boolean; encodeMs: number };
    const encode = (): Promise<Encoded> | undefined => {
      const following = batches.next();
      if (following.done) return undefined;
      const { region, indices } = following.value;
      const encoder = stream.encoders[region.index]!;
      const lz4 = stream.lz4.enabled;
      const queued = performance.now();
      const encoding = encoder.encode(indices, skipZero, bulk, lz4)
        .then((encoded) => ({ encoded, encoder, region, pages: indices.length, lz4, encodeMs: performance.now() - queued }));
      // An encode may fail while the loop waits on the socket; the await below still sees the error.
      encoding.catch(() => undefined);
      return encoding;
    };
    let next = encode();
    try {
      while (next) {
        const { encoded, encoder, region, pages: batchLength, lz4, encodeMs } = await next;
        const { pageSize } = region.region;
        next = encode();
        const wireBytes = encoded.records.length;
        state.done += batchLength;
        summary.zeroPages += encoded.zeroRecords + encoded.zeroSkipped;
        summary.deltaPages += encoded.deltaRecords;
        summary.dupPages += encoded.dupRecords;
        summary.lz4Pages += encoded.lz4Records;
        summary.rawPages += encoded.rawRecords;
        // Waiting for the socket or for the bandwidth cap both mean the link is the limit.
        const sending = performance.now();
        if (encoded.recordCount > 0) {
          await connection.sendThen(() => encoder.release(encoded), MessageType.Pages,
            encodePagesHeader(encoded.recordCount, region.index), encoded.records);
          records += encoded.recordCount;
          state.records += encoded.recordCount;
          state.pageBytes += encoded.recordCount * pageSize;
        } else {
          encoder.release(encoded);
        }
        const elapsedMs = performance.now() - state.started;
        const bytesSent = connections.bytesWritten() - state.bytesBefore;
        this.context.progress({
          round, pagesPlanned: state.planned, pagesLeft: state.planned - state.done, recordsSent: state.records, bytesSent,
          bytesPerSec: (bytesSent * 1000) / Math.max(elapsedMs, 1), elapsedMs, throttlePercent: workload.throttlePercent,
        });
        if (settings.maxBandwidthBytesPerSec > 0) await this.keepToBandwidthCap(state);
        stream.lz4.record({
          pageBytes: batchLength * pageSize, wireBytes, encodeMs, linkMs: performance.now() - sending, lz4,
        });
      }
    } finally {
      // A failed send leaves the encode in flight. It still writes sentHashes on its pool thread, so a
      // resume, which overwrites them with what the target holds, waits for it (lateEncodesSettled).
      if (next) {
        const late = next.then((done) => done.encoder.release(done.encoded), () => undefined);
        this.lateEncodes.add(late);
        void late.then(() => this.lateEncodes.delete(late));
      }
    }
    await connection.send(MessageType.RoundEnd, encodeRoundMarker({ round, pages: records }));
  }

  /** Waits while the streams are ahead of the cap's schedule; an abort cuts the wait short. */
  private async keepToBandwidthCap(state: RoundState): Promise<void> {
    const { settings, connections, phases } = this.context;
    const cap = settings.maxBandwidthBytesPerSec;
    const now = performance.now();
    const aheadMs = ((connections.bytesWritten() - state.paceBytesBefore) * 1000) / cap - (now - state.paceFrom);
    if (aheadMs > 1) {
      await waitUnlessAborted(aheadMs, settings.signal, phases);
    } else if (aheadMs < -PACE_CREDIT_MS) {
      // Behind schedule by more than the credit allowed: the schedule starts again from here.
      state.paceFrom = now - PACE_CREDIT_MS;
      state.paceBytesBefore = connections.bytesWritten();
    }
  }
}

/** A stream's batches of a round, region by region, each region in batches of its own size. */
function* regionBatches(regions: TrackedRegion[], pages: PageList[]): Generator<RegionBatch> {
  for (const region of regions) {
    for (const indices of pages[region.index]!.batches(region.batchPages)) yield { region, indices };
  }
}
