// The source side: pre-copy rounds, then stop-and-copy and the switch-over (docs/PROTOCOL.md has the
// state table). The workload keeps running until the stop rule fires; if anything fails before the
// target's READY arrives, the workload is resumed and the target discards what it received. After READY
// the source is handed over and never resumes on its own.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortedError, ConnectionError, ConvergenceError, InvalidArgumentError, PeerError, PagewireError, ProtocolError, SwitchoverError, TimeoutError,
  asPagewireError,
} from '../errors.js';
import { PageBatchEncoder, type EncodedBatch } from '../codec/page-batch-encoder.js';
import { Lz4Policy, type Lz4Mode } from '../codec/lz4-policy.js';
import { formatDigest, newPageHashes, regionDigest } from '../codec/page-hashes.js';
import { BitmapTracker, HashTracker, pageListOf, type DirtyTracker, type PageList } from '../memory/dirty-tracker.js';
import type { DirtyBitmap } from '../memory/dirty-bitmap.js';
import type { MemoryRegion } from '../memory/region.js';
import { openConnection, type EndpointOptions } from '../transport/connect.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import { FramedConnection, PEER_REASON_GRACE_MS } from '../transport/framed-connection.js';
import type { FrameKeys } from '../transport/frame-auth.js';
import { authenticateTarget } from '../transport/psk-auth.js';
import { SessionKeyPair, joinProof, resumeKey } from '../transport/session-secret.js';
import {
  FEATURE_PSK, FEATURE_RESUME, HANDSHAKE_PAYLOAD_LIMIT, MAX_PAYLOAD_BYTES, MAX_VERSION, MIN_VERSION, MessageType, SESSION_KEY_BYTES,
  STOP_AND_COPY, TARGET_ZEROED,
  encodeFinal, encodeHello, encodeJoinHead, encodePagesHeader, encodeRoundMarker, expectEmpty, parseReady, parseRoundAck,
  parseHeld, parseWelcome, type Welcome,
} from '../wire/messages.js';
import { STRIPE_PAGES, pagesOnStream, splitByStream } from '../wire/streams.js';
import { SWITCHOVER_ROUND_TRIPS, decideNextRound, roundBandwidth, type StallPolicy } from './convergence.js';
import { HookRunner } from './hook-runner.js';
import { checkDeviceState, sourceSettings, type SourceSettings } from './source-options.js';
import type { RoundProgress, RoundReport, SourceSummary } from './metrics.js';

/**
 * The embedder's hooks. Each is given an AbortSignal that aborts when the migration stops waiting for it
 * (its `hookTimeoutMs` passed, or the migration was aborted). A hook given up on may still be running:
 * the source never starts its opposite (`resume` after `pause`, `throttle(0)` after a throttle step)
 * until it has settled.
 */
export interface SourceHooks {
  /** Stop the workload; resolve once it can write no more. */
  pause(signal: AbortSignal): Promise<void> | void;
  /** Restart the workload after a switch-over that failed before the point of no return. */
  resume(signal: AbortSignal): Promise<void> | void;
  /** The opaque device state, taken while paused and sent with the last pages. */
  deviceState?(signal: AbortSignal): Promise<Uint8Array> | Uint8Array;
  /**
   * Auto-converge: slow the workload to (100 - percent)% of its speed (QEMU's cpu-throttle). Called
   * with 20, 30, ... 99 when the rounds stop converging, and with 0 if the migration fails.
   */
  throttle?(percent: number, signal: AbortSignal): Promise<void> | void;
}

/** Where the target is: exactly one of `host` and `port` (TCP), `path` (a Unix socket) or `connect`. */
export interface MigrationSourceOptions extends EndpointOptions {
  region: MemoryRegion;
  /** Set by the workload's writers; without it, pages are tracked by hashing. */
  dirtyBitmap?: DirtyBitmap;
  hooks: SourceHooks;
  /** Downtime budget for the stop rule (default 300 ms, as QEMU). */
  maxDowntimeMs?: number;
  /** Pre-copy rounds before stop-and-copy is forced (default 30). */
  maxRounds?: number;
  /** Bytes per second on the wire, all streams together; 0 or absent for no cap. */
  maxBandwidthBytesPerSec?: number;
  /**
   * TCP connections to carry the pages (default: the number of cores, at most 64), like QEMU's multifd,
   * but with DELTA and DUP, and the last round too. The target may accept fewer.
   */
  streams?: number;
  /**
   * When two rounds in a row do not shrink the dirty set: 'throttle' the workload through
   * hooks.throttle (the default; without the hook, 'stop'), 'stop' and copy with a longer pause, or
   * 'fail' cleanly with PW_ERR_NOT_CONVERGING while the workload keeps running here.
   */
  onStall?: StallPolicy;
  /**
   * 'adaptive' (default): a stream stops trying LZ4 while it waits on its encoder more than on its
   * socket (a fast link), and tries again every 64 batches; 'always'; or 'off'.
   */
  lz4?: Lz4Mode;
  /**
   * When the connections break during the pre-copy, how many times to reconnect and resume (default 3;
   * 0: fail at once), waiting resumeBackoffMs (default 200), then twice that, and so on. A resume sends
   * only the pages whose contents differ from what the target holds.
   */
  maxResumeAttempts?: number;
  resumeBackoffMs?: number;
  /** Longest wait for an embedder hook (pause, deviceState, resume) to settle (default 30 s). */
  hookTimeoutMs?: number;
  /** Pages per PAGES frame (default: 1 MiB of pages, 256 at 4 KiB). */
  batchPages?: number;
  /**
   * Bytes of page cache holding the last sent copy of pages, the base of DELTA (XBZRLE) and DUP
   * records (default 64 MiB, as QEMU's xbzrle-cache-size; 0 turns both off).
   */
  pageCacheBytes?: number;
  /** The pre-shared key the target must prove it holds (and asks this source to prove). */
  psk?: Uint8Array;
  /** Encrypt and authenticate every frame with TLS 1.2 PSK under `psk` (the target must use it too). */
  tls?: boolean;
  /**
   * Or TLS 1.3 with certificates: `ca` to trust the target's certificate (its name or IP must match
   * `host`), and `cert` and `key` when the target asks for a client certificate.
   */
  tlsCertificates?: TlsCertificates;
  /** Longest wait for any answer from the target, or for the socket to drain (default 30 s). */
  timeoutMs?: number;
  /**
   * Longest wait for an answer that follows a target fsync: ROUND_ACK (each pre-copy round is made
   * durable before it is acknowledged) and READY (default 10 min).
   */
  persistTimeoutMs?: number;
  signal?: AbortSignal;
}

export type SourcePhase = 'connecting' | 'precopy' | 'stop-and-copy' | 'awaiting-ready' | 'handed-over' | 'completed' | 'failed';

/** MigrationSource's events and their arguments. */
export interface SourceEvents {
  /** The source entered a phase. */
  phase: [SourcePhase];
  /** Pages sent so far in the current round (several times a round). */
  progress: [RoundProgress];
  /** A round ended (formatRoundLine() makes it the CLI's log line). */
  round: [RoundReport];
}

/** One TCP connection of the migration, with the encoder (and page cache) of the pages it carries. */
interface Stream {
  index: number;
  connection: FramedConnection;
  encoder: PageBatchEncoder;
  lz4: Lz4Policy;
}

/** What the streams of one round share: the page count for progress, and the pace of the bandwidth cap. */
interface RoundState {
  round: number;
  started: number;
  planned: number;
  done: number;
  records: number;
  bytesBefore: number;
  /** The bandwidth cap's schedule: bytes written by then are due at the cap's rate from `paceFrom`. */
  paceFrom: number;
  paceBytesBefore: number;
}

/**
 * How far the streams may fall behind the bandwidth cap's schedule and then catch up above it. Without
 * a bound, a round that ran slower than the cap for a while (zero pages, a busy encoder) would send the
 * credit as a burst above the cap, and the link would look faster than it is to the LZ4 policy.
 */
const PACE_CREDIT_MS = 20;

export class MigrationSource extends EventEmitter<SourceEvents> {
  readonly migrationId: Buffer = randomBytes(16);
  private readonly sessionKeys = SessionKeyPair.generate();
  /** Agreed at the first WELCOME: a resume and every JOIN prove it (docs/PROTOCOL.md, section 3). */
  private sessionSecret: Buffer | undefined;
  private readonly options: SourceSettings;
  /** The xxHash64 of each page as last sent, shared by the streams' encoders. */
  private readonly sentHashes: BigUint64Array;
  private readonly tracker: DirtyTracker;
  private phaseNow: SourcePhase = 'connecting';
  /** Stream 0 first: it carries HELLO, the round markers' ROUND_ACK and the switch-over. */
  private streams: Stream[] = [];
  /** Connections opened so far, joined or not (all of them are closed on failure). */
  private readonly connections: FramedConnection[] = [];
  private throttlePercent = 0;
  /** Bytes written to connections given up for a resume. */
  private bytesOfClosedConnections = 0;
  /** Set once the migration fails: a stream still connecting then closes at once. */
  private failing = false;
  private readonly hooks: HookRunner;
  /** Encodes left in flight by a failed send: they write sentHashes until they settle. */
  private readonly lateEncodes = new Set<Promise<void>>();
  private startedAt = 0;
  private pausedAt = 0;
  private paused = false;
  private handedOver = false;
  private ran = false;
  private readonly summary: SourceSummary;
  /** The shortest round trip seen (HELLO to WELCOME, JOIN to JOINED; at connect and each resume). */
  private roundTripMs = Infinity;

  /**
   * An exchange's time, as a round trip: one, or two with the key's challenge and proof. The shortest is
   * the stop rule's measure of what each round trip of the switch-over will cost.
   */
  private noteRoundTrip(exchangeMs: number): void {
    this.roundTripMs = Math.min(this.roundTripMs, exchangeMs / (this.options.psk ? 2 : 1));
  }

  constructor(options: MigrationSourceOptions) {
    super();
    const filled = sourceSettings(options);
    this.options = filled;
    this.hooks = new HookRunner(filled.hookTimeoutMs, filled.signal);
    const { region } = filled;
    this.sentHashes = newPageHashes(region.pageCount, region.pageSize);
    this.tracker = filled.dirtyBitmap ? new BitmapTracker(filled.dirtyBitmap) : new HashTracker(region, this.sentHashes);
    this.summary = {
      status: 'failed', migrationId: this.migrationId.toString('hex'), totalTimeMs: 0, setupTimeMs: 0, downtimeMs: 0,
      downtime: { pauseMs: 0, finalSyncMs: 0, transferMs: 0, verifyMs: 0, persistMs: 0, handshakeMs: 0 }, rounds: 0,
      streams: 0, pageSize: region.pageSize, pagesTotal: region.pageCount, pagesTransferred: 0, zeroPages: 0,
      deltaPages: 0, lz4Pages: 0, rawPages: 0, dupPages: 0, bytesTransferred: 0, deviceStateBytes: 0, stopReason: '',
      throttlePercent: 0, dirtyRateBytesPerSec: 0, bandwidthBytesPerSec: 0, expectedDowntimeMs: 0, resumes: 0,
      resumeSavedBytes: 0, regionDigest: '',
    };
  }

  get phase(): SourcePhase {
    return this.phaseNow;
  }

  /** The figures so far; after run() settles, the final summary (also on failure). */
  get metrics(): SourceSummary {
    return { ...this.summary, downtime: { ...this.summary.downtime } };
  }

  /** Runs the migration once. Resolves with the summary, or rejects with a PagewireError. */
  async run(): Promise<SourceSummary> {
    if (this.ran) throw new InvalidArgumentError('a MigrationSource runs once; create another');
    this.ran = true;
    const { signal } = this.options;
    const onAbort = () => this.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.startedAt = performance.now();
    try {
      if (signal?.aborted) throw new AbortedError('migration aborted before it started', { cause: signal.reason });
      await this.migrate();
      this.summary.status = 'completed';
      this.summary.totalTimeMs = performance.now() - this.startedAt;
      this.setPhase('completed');
      return this.metrics;
    } catch (error) {
      throw await this.fail(asPagewireError(error));
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.summary.totalTimeMs = performance.now() - this.startedAt;
      this.summary.bytesTransferred = this.bytesWritten();
    }
  }

  private abort(): void {
    // Past READY the switch-over cannot be undone; an abort then changes nothing.
    if (this.handedOver) return;
    this.interruptAll(new AbortedError(`migration aborted during ${this.phaseNow}`, { cause: this.options.signal?.reason }));
  }

  private interruptAll(error: PagewireError): void {
    for (const connection of this.connections) connection.interrupt(error);
  }

  private bytesWritten(): number {
    let bytes = this.bytesOfClosedConnections;
    for (const connection of this.connections) bytes += connection.bytesWritten;
    return bytes;
  }

  /** The control connection: HELLO, ROUND_ACK and the switch-over travel on it. */
  private get control(): FramedConnection {
    return this.connections[0]!;
  }

  /**
   * Connects, says HELLO (to begin, or to resume), authenticates, and opens the extra streams. On a
   * resume, returns what the target holds: the last round it completed and every page's hash.
   */
  private async open(resume: boolean): Promise<{ welcome: Welcome; held?: { lastRound: number; hashes: BigUint64Array } }> {
    const { options } = this;
    const { region } = options;
    const connection = await this.connect();
    const helloSent = performance.now();
    const hello = encodeHello({
      minVersion: MIN_VERSION, maxVersion: MAX_VERSION, features: (options.psk ? FEATURE_PSK : 0) | (resume ? FEATURE_RESUME : 0),
      pageSize: region.pageSize, regionSize: region.byteLength, migrationId: this.migrationId,
      extraStreams: this.wantedStreams() - 1,
      // A resume proves the secret it already holds rather than agreeing on a new one.
      sessionKey: resume ? Buffer.alloc(SESSION_KEY_BYTES) : this.sessionKeys.publicKey,
    });
    await connection.send(MessageType.Hello, hello);
    if (resume) {
      this.authenticated(connection, await authenticateTarget(connection, resumeKey(this.sessionSecret!, options.psk), hello,
        options.timeoutMs, 'this migration\'s session secret'));
    } else if (options.psk) {
      this.authenticated(connection, await authenticateTarget(connection, options.psk, hello, options.timeoutMs));
    }
    // HELD follows WELCOME at once, possibly in the same read: its 8 MiB frames must pass the decoder.
    if (resume) connection.maxPayload = MAX_PAYLOAD_BYTES;
    const welcome = parseWelcome(await connection.expect(MessageType.Welcome, options.timeoutMs));
    this.noteRoundTrip(performance.now() - helloSent);
    if (!resume) this.sessionSecret = this.sessionKeys.secretWith(welcome.sessionKey, hello, welcome.sessionKey);
    if (welcome.extraStreams > this.wantedStreams() - 1) {
      throw new ProtocolError(`target offered ${welcome.extraStreams} extra streams, ${this.wantedStreams() - 1} were asked for`);
    }
    connection.maxPayload = MAX_PAYLOAD_BYTES;
    let held: { lastRound: number; hashes: BigUint64Array } | undefined;
    if (resume) {
      const hashes = new BigUint64Array(region.pageCount);
      let lastRound = 0;
      for (let first = 0; first < region.pageCount;) {
        const part = parseHeld(await connection.expect(MessageType.Held, options.timeoutMs));
        if (part.firstPage !== first || part.hashes.length === 0 || first + part.hashes.length > region.pageCount) {
          throw new ProtocolError(`HELD covers pages ${part.firstPage}..+${part.hashes.length}, expected from ${first}`);
        }
        hashes.set(part.hashes, first);
        first += part.hashes.length;
        lastRound = part.lastRound;
      }
      held = { lastRound, hashes };
    }
    // Every connection is open and authenticated before the rounds: nothing of this is left for the pause.
    await this.joinStreams(welcome.extraStreams, welcome.sessionKey);
    return held ? { welcome, held } : { welcome };
  }

  /** With a pre-shared key and no TLS, every later frame of the connection is tagged and checked. */
  private authenticated(connection: FramedConnection, keys: FrameKeys): void {
    if (this.options.psk && !connection.encrypted) connection.authenticateFrames(keys);
  }

  /** A failure a new set of connections can get past: the network, not either side's decision. */
  private resumable(error: unknown): boolean {
    return this.phaseNow === 'precopy' && (error instanceof ConnectionError || error instanceof TimeoutError) &&
      !this.options.signal?.aborted;
  }

  /**
   * Reconnects after the connections broke during the pre-copy (bounded retries, doubling backoff),
   * and returns the pages to send next: those whose contents differ from what the target holds.
   */
  private async resume(cause: PagewireError): Promise<{ round: number; pages: PageList[] }> {
    const { options, summary } = this;
    const { region } = options;
    let error: unknown = cause;
    for (let attempt = 0; attempt < options.maxResumeAttempts; attempt++) {
      for (const connection of this.connections) connection.fail(asPagewireError(error));
      this.bytesOfClosedConnections = this.bytesWritten();
      this.connections.length = 0;
      await this.pace(options.resumeBackoffMs * 2 ** attempt);
      try {
        const { held } = await this.open(true);
        await Promise.all([...this.lateEncodes]);
        // From here the bitmap records new writes; what changed before is found by comparing hashes.
        this.tracker.start();
        this.sentHashes.set(held!.hashes);
        const changed = (await new HashTracker(region, this.sentHashes).scan()).take();
        summary.resumes += 1;
        summary.resumeSavedBytes += (region.pageCount - changed.count) * region.pageSize;
        return { round: held!.lastRound + 1, pages: this.byStream(changed) };
      } catch (failure) {
        if (!(failure instanceof ConnectionError || failure instanceof TimeoutError || failure instanceof PeerError)) throw failure;
        error = failure;
      }
    }
    throw new ConnectionError(`the connections broke (${cause.message}) and ${options.maxResumeAttempts} attempts to resume ` +
      `failed, the last with: ${(error as Error).message}`, { cause: error });
  }

  private async migrate(): Promise<void> {
    const { options } = this;
    const { region } = options;
    this.setPhase('connecting');
    const { welcome } = await this.open(false);
    this.summary.setupTimeMs = performance.now() - this.startedAt;

    this.setPhase('precopy');
    const targetZeroed = (welcome.flags & TARGET_ZEROED) !== 0;
    this.tracker.start();
    let round = 1;
    let report: RoundReport | undefined;
    // Into a zeroed image, round 1 of a sparse file reads only its data: its holes are zero pages,
    // which round 1 would skip anyway, after reading them.
    const data = targetZeroed ? region.dataPages() : undefined;
    let next = data ? this.byStream(pageListOf(data)) : this.allPagesByStream();
    let first = true;
    while (!report) {
      try {
        report = await this.sendRound(round, next, first && targetZeroed, 0, first);
      } catch (error) {
        if (!this.resumable(error) || options.maxResumeAttempts === 0) throw error;
        ({ round, pages: next } = await this.resume(asPagewireError(error)));
        first = false;
      }
    }
    let pendingHistory: number[] = [];
    for (;;) {
      const dirty = await this.tracker.scan();
      const pendingPages = dirty.count;
      const decision = decideNextRound({
        round, pendingPages, pendingHistory, pageSize: region.pageSize, bandwidthBytesPerSec: report.pageBandwidthBytesPerSec,
        maxDowntimeMs: options.maxDowntimeMs, switchoverMs: SWITCHOVER_ROUND_TRIPS * this.roundTripMs,
        finalSyncMs: dirty.durationMs,
        maxRounds: options.maxRounds, onStall: options.onStall,
        throttlePercent: this.throttlePercent,
      });
      const dirtyRateBytesPerSec = (pendingPages * region.pageSize * 1000) / Math.max(report.durationMs, 1);
      Object.assign(this.summary, {
        dirtyRateBytesPerSec, bandwidthBytesPerSec: report.bandwidthBytesPerSec, expectedDowntimeMs: decision.expectedDowntimeMs,
      });
      this.emit('round', {
        ...report, pendingPages, expectedDowntimeMs: decision.expectedDowntimeMs, dirtyRateBytesPerSec,
        throttlePercent: this.throttlePercent,
      });
      if (decision.action === 'stop-and-copy') {
        this.summary.stopReason = decision.reason;
        break;
      }
      if (decision.action === 'fail') {
        throw new ConvergenceError(
          `the dirty set stopped shrinking (${pendingPages} pages pending after round ${round}, expected downtime ` +
          `${decision.expectedDowntimeMs.toFixed(0)} ms against a budget of ${options.maxDowntimeMs} ms); gave up as asked, ` +
          'the workload keeps running here');
      }
      if (decision.action === 'throttle') {
        // Counted from the call on: if the hook fails half-way, fail() still gives the speed back.
        this.throttlePercent = decision.throttlePercent;
        this.summary.throttlePercent = decision.throttlePercent;
        await this.hooks.run('throttle', (hookSignal) => options.hooks.throttle!(decision.throttlePercent, hookSignal));
        // Convergence is judged afresh from here: the rounds before ran at the old speed.
        pendingHistory = [pendingPages];
      } else {
        pendingHistory.push(pendingPages);
      }
      round += 1;
      next = this.byStream(dirty.take());
      for (;;) {
        try {
          report = await this.sendRound(round, next, false);
          break;
        } catch (error) {
          if (!this.resumable(error) || options.maxResumeAttempts === 0) throw error;
          ({ round, pages: next } = await this.resume(asPagewireError(error)));
        }
      }
    }
    await this.stopAndCopy(round + 1);
  }

  private wantedStreams(): number {
    // A stream carries whole stripes: more streams than stripes would idle.
    return Math.max(1, Math.min(this.options.streams, Math.ceil(this.options.region.pageCount / STRIPE_PAGES)));
  }

  private async connect(): Promise<FramedConnection> {
    const { options } = this;
    const tls = options.tls && options.psk ? { psk: options.psk }
      : options.tlsCertificates ? { certificates: options.tlsCertificates } : undefined;
    const socket = await openConnection(options.endpoint, options.timeoutMs, options.signal, tls);
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, options.timeoutMs, 'the target');
    if (this.failing) {
      socket.destroy();
      throw new AbortedError('the migration failed while this stream connected');
    }
    this.connections.push(connection);
    if (options.signal?.aborted) throw new AbortedError('migration aborted while connecting', { cause: options.signal.reason });
    return connection;
  }

  /** Opens the extra connections, each joining this migration, and gives every stream its encoder. */
  private async joinStreams(extra: number, welcomeKey: Buffer): Promise<void> {
    const { options } = this;
    const joins: Promise<FramedConnection>[] = [];
    for (let stream = 1; stream <= extra; stream++) {
      joins.push((async () => {
        const connection = await this.connect();
        const joinSent = performance.now();
        const head = encodeJoinHead({ version: MAX_VERSION, stream, migrationId: this.migrationId });
        const join = Buffer.concat([head, joinProof(this.sessionSecret!, welcomeKey, head)]);
        await connection.send(MessageType.Join, join);
        if (options.psk) this.authenticated(connection, await authenticateTarget(connection, options.psk, join, options.timeoutMs));
        expectEmpty(await connection.expect(MessageType.Joined, options.timeoutMs), 'JOINED');
        // JOIN to JOINED involves no storage on the target, unlike HELLO to WELCOME (the image opens there).
        this.noteRoundTrip(performance.now() - joinSent);
        connection.maxPayload = MAX_PAYLOAD_BYTES;
        return connection;
      })());
    }
    const connections = [this.control, ...await this.allOrInterrupt(joins)];
    const count = connections.length;
    const cacheBytes = Math.floor(options.pageCacheBytes / count);
    this.streams = [];
    for (let index = 0; index < count; index++) {
      this.streams.push({
        index, connection: connections[index]!,
        encoder: new PageBatchEncoder(options.region, { batchPages: options.batchPages, cacheBytes, sentHashes: this.sentHashes }),
        lz4: new Lz4Policy(options.lz4),
      });
    }
    this.summary.streams = count;
  }

  /**
   * Waits for all; on the first failure, or a failure of the control connection (where the target's
   * ERROR arrives), interrupts every connection so the others stop too, and throws it.
   */
  private async allOrInterrupt<T>(work: Promise<T>[]): Promise<T[]> {
    let first: unknown;
    const stop = (error: unknown) => {
      if (first !== undefined) return;
      first = error;
      this.interruptAll(asPagewireError(error));
    };
    const all = Promise.allSettled(work.map((p) => p.catch((error: unknown) => {
      stop(error);
      throw error;
    })));
    try {
      await this.control.guard(all);
    } catch (error) {
      stop(error);
    }
    if (first !== undefined) throw first;
    return (await all).map((r) => (r as PromiseFulfilledResult<T>).value);
  }

  /** Round 1's lists: every page, each stream its own stripes, in order. */
  private allPagesByStream(): PageList[] {
    const { pageCount } = this.options.region;
    const count = this.streams.length;
    return this.streams.map(({ index }) => ({
      count: pagesOnStream(index, count, pageCount),
      *batches(batchPages: number) {
        const out = new Uint32Array(batchPages);
        let n = 0;
        for (let stripe = index * STRIPE_PAGES; stripe < pageCount; stripe += count * STRIPE_PAGES) {
          const end = Math.min(pageCount, stripe + STRIPE_PAGES);
          for (let page = stripe; page < end; page++) {
            out[n++] = page;
            if (n === batchPages) {
              yield out;
              n = 0;
            }
          }
        }
        if (n > 0) yield out.subarray(0, n);
      },
    }));
  }

  /** A round's dirty pages, split by the stream that carries each. */
  private byStream(pages: PageList): PageList[] {
    if (this.streams.length === 1) return [pages];
    const all = new Uint32Array(pages.count);
    let n = 0;
    for (const batch of pages.batches(STRIPE_PAGES)) {
      all.set(batch, n);
      n += batch.length;
    }
    return splitByStream(all.subarray(0, n), this.streams.length).map(pageListOf);
  }

  private async stopAndCopy(finalRound: number): Promise<void> {
    const { options, summary } = this;
    const connection = this.control;
    this.setPhase('stop-and-copy');
    this.pausedAt = performance.now();
    // Counted as paused from the call on: if the hook fails half-way, fail() still resumes.
    this.paused = true;
    await this.hooks.run('pause', (hookSignal) => options.hooks.pause(hookSignal));
    const synced = performance.now();
    summary.downtime.pauseMs = synced - this.pausedAt;
    const finalPages = this.byStream((await this.tracker.scan()).take());
    const collected = performance.now();
    summary.downtime.finalSyncMs = collected - synced;
    await this.sendRound(finalRound, finalPages, false, STOP_AND_COPY);
    const { deviceState } = options.hooks;
    const state = deviceState ? checkDeviceState(await this.hooks.run('deviceState', (hookSignal) => deviceState(hookSignal)))
      : new Uint8Array(0);
    summary.deviceStateBytes = state.byteLength;
    await connection.send(MessageType.DeviceState, Buffer.from(state.buffer, state.byteOffset, state.byteLength));
    const digest = regionDigest(this.sentHashes);
    summary.regionDigest = formatDigest(digest);
    // Transfer ends here: from FINAL on, the target's verify and persist overlap this side's wait.
    summary.downtime.transferMs = performance.now() - collected;
    await connection.send(MessageType.Final, encodeFinal({ round: finalRound, regionDigest: digest }));

    this.setPhase('awaiting-ready');
    const ready = parseReady(await connection.expect(MessageType.Ready, options.persistTimeoutMs));
    // The point of no return: the target holds a verified image, made durable on GO. From here on the source
    // never resumes by itself.
    this.handedOver = true;
    this.setPhase('handed-over');
    await connection.send(MessageType.Go);
    summary.downtimeMs = performance.now() - this.pausedAt;
    summary.downtime.verifyMs = ready.verifyMicros / 1000;
    summary.downtime.persistMs = ready.persistMicros / 1000;
    // What is left is waiting on the network and on both sides' event loops: FINAL out, READY back, GO out.
    const { pauseMs, finalSyncMs, transferMs, verifyMs, persistMs } = summary.downtime;
    summary.downtime.handshakeMs = Math.max(0, summary.downtimeMs - pauseMs - finalSyncMs - transferMs - verifyMs - persistMs);
    // The extra streams carried their last page in the final round; closing them waits for a round
    // trip, which does not belong inside the downtime.
    await Promise.all(this.streams.slice(1).map(({ connection: extra }) => extra.close()));
    // DONE follows the target's commit, whose fsync of the last round may take as long as a round's.
    expectEmpty(await connection.expect(MessageType.Done, options.persistTimeoutMs), 'DONE');
    summary.bytesTransferred = this.bytesWritten();
    await connection.close();
  }

  /**
   * One round: on every stream ROUND_BEGIN, its pages in batches and ROUND_END, then the target's
   * ROUND_ACK on stream 0, sent once every stream's pages of the round are applied.
   */
  private async sendRound(round: number, parts: PageList[], skipZero: boolean, flags = 0, bulk = false): Promise<RoundReport> {
    const { options, summary } = this;
    const started = performance.now();
    const bytesBefore = this.bytesWritten();
    const state: RoundState = {
      round, started, planned: parts.reduce((n, p) => n + p.count, 0), done: 0, records: 0, bytesBefore,
      paceFrom: started, paceBytesBefore: bytesBefore,
    };
    await this.allOrInterrupt(this.streams.map((stream) => this.sendStreamRound(stream, state, parts[stream.index]!, skipZero, flags, bulk)));
    const acked = parseRoundAck(await this.control.expect(MessageType.RoundAck, options.persistTimeoutMs));
    if (acked !== round) throw new ProtocolError(`target acknowledged round ${acked}, expected ${round}`);
    summary.rounds = round;
    summary.pagesTransferred += state.records;
    const durationMs = performance.now() - state.started;
    const bytesSent = this.bytesWritten() - state.bytesBefore;
    return {
      round, pagesSent: state.records, bytesSent, durationMs,
      bandwidthBytesPerSec: roundBandwidth(bytesSent, durationMs),
      pageBandwidthBytesPerSec: roundBandwidth(state.records * options.region.pageSize, durationMs),
      dirtyRateBytesPerSec: 0, pendingPages: 0, expectedDowntimeMs: 0, throttlePercent: this.throttlePercent,
      elapsedMs: performance.now() - this.startedAt,
    };
  }

  /** One stream's share of a round. */
  private async sendStreamRound(
    stream: Stream, state: RoundState, pages: PageList, skipZero: boolean, flags: number, bulk: boolean,
  ): Promise<void> {
    const { options, summary } = this;
    const { connection, encoder } = stream;
    const { round } = state;
    await connection.send(MessageType.RoundBegin, encodeRoundMarker({ round, pages: pages.count, flags }));
    let records = 0;
    const batches = pages.batches(options.batchPages)[Symbol.iterator]();
    // Pipelined: a pool thread encodes batch k+1 while the socket sends batch k. The generator may
    // reuse its index array, so the next batch is taken only once the previous encode has settled.
    const encode = (): Promise<{ encoded: EncodedBatch; pages: number; lz4: boolean; encodeMs: number }> | undefined => {
      const following = batches.next();
      if (following.done) return undefined;
      const indices = following.value;
      const lz4 = stream.lz4.enabled;
      const queued = performance.now();
      const encoding = encoder.encode(indices, skipZero, bulk, lz4)
        .then((encoded) => ({ encoded, pages: indices.length, lz4, encodeMs: performance.now() - queued }));
      // An encode may fail while the loop waits on the socket; the await below still sees the error.
      encoding.catch(() => undefined);
      return encoding;
    };
    let next = encode();
    try {
      while (next) {
        const { encoded, pages: batchLength, lz4, encodeMs } = await next;
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
            encodePagesHeader(encoded.recordCount), encoded.records);
          records += encoded.recordCount;
          state.records += encoded.recordCount;
        } else {
          encoder.release(encoded);
        }
        const elapsedMs = performance.now() - state.started;
        const bytesSent = this.bytesWritten() - state.bytesBefore;
        this.emit('progress', {
          round, pagesPlanned: state.planned, pagesLeft: state.planned - state.done, recordsSent: state.records, bytesSent,
          bytesPerSec: (bytesSent * 1000) / Math.max(elapsedMs, 1), elapsedMs, throttlePercent: this.throttlePercent,
        });
        if (options.maxBandwidthBytesPerSec > 0) {
          const now = performance.now();
          const aheadMs = ((this.bytesWritten() - state.paceBytesBefore) * 1000) / options.maxBandwidthBytesPerSec - (now - state.paceFrom);
          if (aheadMs > 1) {
            await this.pace(aheadMs);
          } else if (aheadMs < -PACE_CREDIT_MS) {
            // Behind schedule by more than the credit allowed: the schedule starts again from here.
            state.paceFrom = now - PACE_CREDIT_MS;
            state.paceBytesBefore = this.bytesWritten();
          }
        }
        stream.lz4.record({
          pageBytes: batchLength * options.region.pageSize, wireBytes, encodeMs, linkMs: performance.now() - sending, lz4,
        });
      }
    } finally {
      // A failed send leaves the encode in flight. It still writes sentHashes on its pool thread, so a
      // resume, which overwrites them with what the target holds, waits for it (lateEncodes).
      if (next) {
        const late = next.then((done) => encoder.release(done.encoded), () => undefined);
        this.lateEncodes.add(late);
        void late.then(() => this.lateEncodes.delete(late));
      }
    }
    await connection.send(MessageType.RoundEnd, encodeRoundMarker({ round, pages: records }));
  }

  /** Waits for the bandwidth cap; an abort cuts the wait short and fails the next send. */
  private async pace(ms: number): Promise<void> {
    const { signal } = this.options;
    try {
      await sleep(ms, undefined, signal ? { signal } : {});
    } catch {
      throw new AbortedError(`migration aborted during ${this.phaseNow}`, { cause: signal?.reason });
    }
  }

  /** Puts the source back in a safe state and returns the error to throw. */
  private async fail(failure: PagewireError): Promise<PagewireError> {
    this.failing = true;
    // A lost connection may only be the target tearing down after saying why on the control connection.
    const error = failure instanceof ConnectionError && this.connections.length > 1
      ? await this.control.peerError(PEER_REASON_GRACE_MS) ?? failure : failure;
    this.summary.status = 'failed';
    this.summary.error = error.message;
    this.summary.errorCode = error.code;
    const phase = this.phaseNow;
    this.setPhase('failed');
    const [connection, ...extra] = this.connections;
    if (this.handedOver) {
      for (const other of extra) other.fail(error);
      connection?.fail(error);
      const state = phase === 'handed-over' ? 'handed-over-unconfirmed' : phase;
      const wrapped = error instanceof SwitchoverError ? error : new SwitchoverError(
        `switch-over not confirmed (${error.message}); the source stays paused and handed over: ` +
        'check the target before resuming anything', state, { cause: error });
      this.summary.error = wrapped.message;
      this.summary.errorCode = wrapped.code;
      return wrapped;
    }
    // The control connection tells the target why; the others close once it has heard it.
    for (const other of extra) other.interrupt(error);
    if (connection) await connection.sendErrorAndClose(error);
    for (const other of extra) other.fail(error);
    if ((this.paused || this.throttlePercent > 0) && !await this.hooks.settled()) {
      // A pause (or throttle) hook given up on is still running: resuming now could be undone by it.
      const wrapped = new SwitchoverError(
        `migration failed (${error.message}) while a hook given up on was still running after a further ` +
        `${this.options.hookTimeoutMs} ms; resume was not called, so as not to overlap it: the workload may be paused ` +
        'on the source', 'source-paused', { cause: error });
      this.summary.error = wrapped.message;
      this.summary.errorCode = wrapped.code;
      return wrapped;
    }
    if (this.throttlePercent > 0) {
      // The workload stays here: give it its full speed back. A hook failing now changes nothing more.
      try {
        await this.hooks.run('throttle', (hookSignal) => this.options.hooks.throttle!(0, hookSignal), false);
        this.throttlePercent = 0;
      } catch {
        // The failure being reported matters more; the summary still shows the throttle in force.
      }
    }
    if (this.paused) {
      // Before READY the target discards everything, so the workload simply goes on here.
      try {
        await this.hooks.run('resume', (hookSignal) => this.options.hooks.resume(hookSignal), false);
        this.paused = false;
      } catch (resumeError) {
        const wrapped = new SwitchoverError(
          `migration failed (${error.message}) and the workload's resume hook failed too ` +
          `(${(resumeError as Error).message}): the workload is paused on the source`, 'source-paused', { cause: error });
        this.summary.error = wrapped.message;
        this.summary.errorCode = wrapped.code;
        return wrapped;
      }
    }
    return error;
  }

  private setPhase(phase: SourcePhase): void {
    this.phaseNow = phase;
    this.emit('phase', phase);
  }
}
