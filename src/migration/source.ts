// The source side: pre-copy rounds, then stop-and-copy and the switch-over (docs/PROTOCOL.md has the
// state table). The workload keeps running until the stop rule fires; if anything fails before the
// target's READY arrives, the workload is resumed and the target discards what it received. After READY
// the source is handed over and never resumes on its own.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortedError, InvalidArgumentError, PagewireError, ProtocolError, SwitchoverError, TimeoutError, asPagewireError,
} from '../errors.js';
import {
  DEFAULT_PAGE_CACHE_BYTES, PageBatchEncoder, defaultBatchPages, type EncodedBatch,
} from '../codec/page-batch-encoder.js';
import { regionDigest } from '../codec/page-hashes.js';
import { BitmapTracker, HashTracker, type DirtyTracker, type PageList } from '../memory/dirty-tracker.js';
import type { DirtyBitmap } from '../memory/dirty-bitmap.js';
import type { MemoryRegion } from '../memory/region.js';
import { connectTcp } from '../transport/connect.js';
import { FramedConnection } from '../transport/framed-connection.js';
import { authenticateTarget, checkPsk } from '../transport/psk-auth.js';
import {
  FEATURE_PSK, HANDSHAKE_PAYLOAD_LIMIT, MAX_PAYLOAD_BYTES, MAX_VERSION, MIN_VERSION, MessageType, STOP_AND_COPY,
  TARGET_ZEROED,
  encodeFinal, encodeHello, encodePagesHeader, encodeRoundMarker, expectEmpty, parseRoundAck, parseWelcome,
} from '../wire/messages.js';
import { decideNextRound, roundBandwidth } from './convergence.js';
import type { RoundProgress, RoundReport, SourceSummary } from './metrics.js';

export interface SourceHooks {
  /** Stop the workload; resolve once it can write no more. */
  pause(): Promise<void> | void;
  /** Restart the workload after a switch-over that failed before the point of no return. */
  resume(): Promise<void> | void;
  /** The opaque device state, taken while paused and sent with the last pages. */
  deviceState?(): Promise<Uint8Array> | Uint8Array;
}

export interface MigrationSourceOptions {
  region: MemoryRegion;
  /** Set by the workload's writers; without it, pages are tracked by hashing. */
  dirtyBitmap?: DirtyBitmap;
  host: string;
  port: number;
  hooks: SourceHooks;
  /** Downtime budget for the stop rule (default 300 ms, as QEMU). */
  maxDowntimeMs?: number;
  /** Pre-copy rounds before stop-and-copy is forced (default 30). */
  maxRounds?: number;
  /** Bytes per second; 0 or absent for no cap. */
  maxBandwidthBytesPerSec?: number;
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

interface SourceEvents {
  phase: [SourcePhase];
  progress: [RoundProgress];
  round: [RoundReport];
}

const MAX_DEVICE_STATE_BYTES = MAX_PAYLOAD_BYTES;

export class MigrationSource extends EventEmitter<SourceEvents> {
  readonly migrationId = randomBytes(16);
  private readonly options: Required<Omit<MigrationSourceOptions, 'dirtyBitmap' | 'signal' | 'psk' | 'tls'>> &
    Pick<MigrationSourceOptions, 'dirtyBitmap' | 'signal' | 'psk' | 'tls'>;
  private readonly encoder: PageBatchEncoder;
  private readonly tracker: DirtyTracker;
  private phaseNow: SourcePhase = 'connecting';
  private connection: FramedConnection | undefined;
  private startedAt = 0;
  private pausedAt = 0;
  private paused = false;
  private handedOver = false;
  private ran = false;
  private readonly summary: SourceSummary;

  constructor(options: MigrationSourceOptions) {
    super();
    const filled = {
      maxDowntimeMs: 300, maxRounds: 30, maxBandwidthBytesPerSec: 0, timeoutMs: 30_000, persistTimeoutMs: 600_000,
      hookTimeoutMs: 30_000,
      batchPages: defaultBatchPages(options.region.pageSize), pageCacheBytes: DEFAULT_PAGE_CACHE_BYTES,
      ...dropUndefined(options),
    };
    checkPositive('maxDowntimeMs', filled.maxDowntimeMs, true);
    checkPositive('maxRounds', filled.maxRounds);
    checkPositive('maxBandwidthBytesPerSec', filled.maxBandwidthBytesPerSec, true);
    checkPositive('batchPages', filled.batchPages);
    for (const name of ['batchPages', 'maxRounds'] as const) {
      if (!Number.isSafeInteger(filled[name])) throw new InvalidArgumentError(`${name} must be a whole number, got ${filled[name]}`);
    }
    checkPositive('timeoutMs', filled.timeoutMs);
    checkPositive('persistTimeoutMs', filled.persistTimeoutMs);
    checkPositive('hookTimeoutMs', filled.hookTimeoutMs);
    if (filled.batchPages * (filled.region.pageSize + 20) > MAX_PAYLOAD_BYTES / 2) {
      throw new InvalidArgumentError(`batchPages ${filled.batchPages} makes frames larger than the protocol allows`);
    }
    if (filled.dirtyBitmap && filled.dirtyBitmap.pageCount !== filled.region.pageCount) {
      throw new InvalidArgumentError(
        `dirty bitmap covers ${filled.dirtyBitmap.pageCount} pages, the region has ${filled.region.pageCount}`);
    }
    if (filled.psk) checkPsk(filled.psk);
    if (filled.tls && !filled.psk) throw new InvalidArgumentError('tls needs a pre-shared key (psk): TLS-PSK encrypts with it');
    this.options = filled;
    const { region } = filled;
    this.encoder = new PageBatchEncoder(region, { batchPages: filled.batchPages, cacheBytes: filled.pageCacheBytes });
    this.tracker = filled.dirtyBitmap ? new BitmapTracker(filled.dirtyBitmap) : new HashTracker(region, this.encoder.sentHashes);
    this.summary = {
      status: 'failed', migrationId: this.migrationId.toString('hex'), totalTimeMs: 0, setupTimeMs: 0, downtimeMs: 0,
      downtime: { pauseMs: 0, finalSyncMs: 0, transferMs: 0, verifyAndPersistMs: 0 }, rounds: 0,
      pageSize: region.pageSize, pagesTotal: region.pageCount, pagesTransferred: 0, zeroPages: 0, deltaPages: 0,
      lz4Pages: 0, rawPages: 0, dupPages: 0, bytesTransferred: 0, deviceStateBytes: 0, stopReason: '',
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
      if (signal?.aborted) throw new AbortedError('migration aborted before it started');
      await this.migrate();
      this.summary.status = 'completed';
      this.setPhase('completed');
      return this.metrics;
    } catch (error) {
      throw await this.fail(asPagewireError(error));
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.summary.totalTimeMs = performance.now() - this.startedAt;
      if (this.connection) this.summary.bytesTransferred = this.connection.bytesWritten;
    }
  }

  private abort(): void {
    // Past READY the switch-over cannot be undone; an abort then changes nothing.
    if (this.handedOver) return;
    this.connection?.interrupt(new AbortedError(`migration aborted during ${this.phaseNow}`));
  }

  private async migrate(): Promise<void> {
    const { options } = this;
    const { region } = options;
    this.setPhase('connecting');
    const socket = await connectTcp(options.host, options.port, options.timeoutMs, options.signal,
      options.tls ? options.psk : undefined);
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, options.timeoutMs);
    this.connection = connection;
    if (options.signal?.aborted) throw new AbortedError('migration aborted while connecting');
    await connection.send(MessageType.Hello, encodeHello({
      minVersion: MIN_VERSION, maxVersion: MAX_VERSION, features: options.psk ? FEATURE_PSK : 0,
      pageSize: region.pageSize, regionSize: region.byteLength, migrationId: this.migrationId,
    }));
    if (options.psk) await authenticateTarget(connection, options.psk, this.migrationId, options.timeoutMs);
    const welcome = parseWelcome(await connection.expect(MessageType.Welcome, options.timeoutMs));
    connection.maxPayload = MAX_PAYLOAD_BYTES;
    this.summary.setupTimeMs = performance.now() - this.startedAt;

    this.setPhase('precopy');
    const targetZeroed = (welcome.flags & TARGET_ZEROED) !== 0;
    this.tracker.start();
    let round = 1;
    let report = await this.sendRound(round, allPages(region.pageCount), targetZeroed);
    const pendingHistory: number[] = [];
    for (;;) {
      const pendingPages = this.tracker.pending();
      const decision = decideNextRound({
        round, pendingPages, pendingHistory, pageSize: region.pageSize, bandwidthBytesPerSec: report.pageBandwidthBytesPerSec,
        maxDowntimeMs: options.maxDowntimeMs, maxRounds: options.maxRounds,
      });
      pendingHistory.push(pendingPages);
      this.emit('round', {
        ...report, pendingPages, expectedDowntimeMs: decision.expectedDowntimeMs,
        dirtyRateBytesPerSec: (pendingPages * region.pageSize * 1000) / Math.max(report.durationMs, 1),
      });
      if (decision.action === 'stop-and-copy') {
        this.summary.stopReason = decision.reason;
        break;
      }
      round += 1;
      report = await this.sendRound(round, this.tracker.collect(), false);
    }
    await this.stopAndCopy(round + 1);
  }

  private async stopAndCopy(finalRound: number): Promise<void> {
    const { options, summary } = this;
    const connection = this.connection!;
    this.setPhase('stop-and-copy');
    this.pausedAt = performance.now();
    // Counted as paused from the call on: if the hook fails half-way, fail() still resumes.
    this.paused = true;
    await this.runHook('pause', () => options.hooks.pause());
    const synced = performance.now();
    summary.downtime.pauseMs = synced - this.pausedAt;
    const finalPages = this.tracker.collect();
    const collected = performance.now();
    summary.downtime.finalSyncMs = collected - synced;
    await this.sendRound(finalRound, finalPages, false, STOP_AND_COPY);
    const { deviceState } = options.hooks;
    const state = deviceState ? await this.runHook('deviceState', () => deviceState()) : new Uint8Array(0);
    if (state.byteLength > MAX_DEVICE_STATE_BYTES) {
      throw new InvalidArgumentError(`device state of ${state.byteLength} bytes exceeds ${MAX_DEVICE_STATE_BYTES}`);
    }
    summary.deviceStateBytes = state.byteLength;
    await connection.send(MessageType.DeviceState, Buffer.from(state.buffer, state.byteOffset, state.byteLength));
    await connection.send(MessageType.Final, encodeFinal({
      round: finalRound, regionDigest: regionDigest(this.encoder.sentHashes),
    }));
    const finalSent = performance.now();
    summary.downtime.transferMs = finalSent - collected;

    this.setPhase('awaiting-ready');
    expectEmpty(await connection.expect(MessageType.Ready, options.persistTimeoutMs), 'READY');
    // The point of no return: the target holds a verified, durable image. From here on the source
    // never resumes by itself.
    this.handedOver = true;
    this.setPhase('handed-over');
    summary.downtime.verifyAndPersistMs = performance.now() - finalSent;
    await connection.send(MessageType.Go);
    summary.downtimeMs = performance.now() - this.pausedAt;
    expectEmpty(await connection.expect(MessageType.Done, options.timeoutMs), 'DONE');
    summary.bytesTransferred = connection.bytesWritten;
    await connection.close();
  }

  /** One round: ROUND_BEGIN, the pages in batches, ROUND_END, then the target's ROUND_ACK. */
  private async sendRound(round: number, pages: PageList, skipZero: boolean, flags = 0): Promise<RoundReport> {
    const { options, summary, encoder } = this;
    const connection = this.connection!;
    const started = performance.now();
    const bytesBefore = connection.bytesWritten;
    await connection.send(MessageType.RoundBegin, encodeRoundMarker({ round, pages: pages.count, flags }));
    let records = 0;
    let done = 0;
    const batches = pages.batches(options.batchPages)[Symbol.iterator]();
    // Pipelined: the pool thread encodes batch k+1 while the socket sends batch k. The generator may
    // reuse its index array, so the next batch is taken only once the previous encode has settled.
    const first = batches.next();
    let next = first.done ? undefined : this.encodeBatch(first.value, skipZero);
    // An encode may fail while the loop waits on the socket; the await below still sees the error.
    next?.catch(() => undefined);
    try {
      while (next) {
        const { encoded, pages: batchLength } = await next;
        const following = batches.next();
        next = following.done ? undefined : this.encodeBatch(following.value, skipZero);
        next?.catch(() => undefined);
        done += batchLength;
        summary.zeroPages += encoded.zeroRecords + encoded.zeroSkipped;
        summary.deltaPages += encoded.deltaRecords;
        summary.dupPages += encoded.dupRecords;
        summary.lz4Pages += encoded.lz4Records;
        summary.rawPages += encoded.rawRecords;
        if (encoded.recordCount > 0) {
          await connection.sendThen(() => encoder.release(encoded), MessageType.Pages,
            encodePagesHeader(encoded.recordCount), encoded.records);
          records += encoded.recordCount;
        } else {
          encoder.release(encoded);
        }
        const elapsedMs = performance.now() - started;
        const bytesSent = connection.bytesWritten - bytesBefore;
        this.emit('progress', {
          round, pagesPlanned: pages.count, pagesLeft: pages.count - done, recordsSent: records, bytesSent,
          bytesPerSec: (bytesSent * 1000) / Math.max(elapsedMs, 1), elapsedMs,
        });
        if (options.maxBandwidthBytesPerSec > 0) {
          const dueMs = (bytesSent * 1000) / options.maxBandwidthBytesPerSec;
          if (dueMs > elapsedMs + 1) await this.pace(dueMs - elapsedMs);
        }
      }
    } finally {
      // A failed send leaves the encode in flight; it settles on its own, and nothing waits for it.
      next?.then((late) => encoder.release(late.encoded), () => undefined);
    }
    await connection.send(MessageType.RoundEnd, encodeRoundMarker({ round, pages: records }));
    const acked = parseRoundAck(await connection.expect(MessageType.RoundAck, options.persistTimeoutMs));
    if (acked !== round) throw new ProtocolError(`target acknowledged round ${acked}, expected ${round}`);
    summary.rounds = round;
    summary.pagesTransferred += records;
    const durationMs = performance.now() - started;
    const bytesSent = connection.bytesWritten - bytesBefore;
    return {
      round, pagesSent: records, bytesSent, durationMs,
      bandwidthBytesPerSec: roundBandwidth(bytesSent, durationMs),
      pageBandwidthBytesPerSec: roundBandwidth(records * this.options.region.pageSize, durationMs),
      dirtyRateBytesPerSec: 0, pendingPages: 0, expectedDowntimeMs: 0,
      elapsedMs: performance.now() - this.startedAt,
    };
  }

  private async encodeBatch(indices: Uint32Array, skipZero: boolean): Promise<{ encoded: EncodedBatch; pages: number }> {
    const pages = indices.length;
    return { encoded: await this.encoder.encode(indices, skipZero), pages };
  }

  /**
   * Runs an embedder hook, which may never settle: it fails after hookTimeoutMs, or at once on abort
   * (unless `abortable` is false, as for the resume that follows a failure).
   */
  private async runHook<T>(name: string, hook: () => Promise<T> | T, abortable = true): Promise<T> {
    const { hookTimeoutMs, signal } = this.options;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`the ${name} hook did not finish within ${hookTimeoutMs} ms`)), hookTimeoutMs);
      if (abortable && signal) {
        onAbort = () => reject(new AbortedError(`migration aborted while the ${name} hook ran`));
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    try {
      return await Promise.race([Promise.resolve().then(hook), stop]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Waits for the bandwidth cap; an abort cuts the wait short and fails the next send. */
  private async pace(ms: number): Promise<void> {
    const { signal } = this.options;
    try {
      await sleep(ms, undefined, signal ? { signal } : {});
    } catch {
      throw new AbortedError(`migration aborted during ${this.phaseNow}`);
    }
  }

  /** Puts the source back in a safe state and returns the error to throw. */
  private async fail(error: PagewireError): Promise<PagewireError> {
    this.summary.status = 'failed';
    this.summary.error = error.message;
    this.summary.errorCode = error.code;
    const phase = this.phaseNow;
    this.setPhase('failed');
    const connection = this.connection;
    if (this.handedOver) {
      connection?.fail(error);
      const state = phase === 'handed-over' ? 'handed-over-unconfirmed' : phase;
      const wrapped = error instanceof SwitchoverError ? error : new SwitchoverError(
        `switch-over not confirmed (${error.message}); the source stays paused and handed over: ` +
        'check the target before resuming anything', state, { cause: error });
      this.summary.error = wrapped.message;
      this.summary.errorCode = wrapped.code;
      return wrapped;
    }
    if (connection) await connection.sendErrorAndClose(error);
    if (this.paused) {
      // Before READY the target discards everything, so the workload simply goes on here.
      try {
        await this.runHook('resume', () => this.options.hooks.resume(), false);
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

/** Round 1's list: every page, in order. */
function allPages(pageCount: number): PageList {
  return {
    count: pageCount,
    *batches(batchPages: number) {
      const out = new Uint32Array(batchPages);
      for (let first = 0; first < pageCount; first += batchPages) {
        const n = Math.min(batchPages, pageCount - first);
        for (let i = 0; i < n; i++) out[i] = first + i;
        yield out.subarray(0, n);
      }
    },
  };
}

function checkPositive(name: string, value: number, zeroAllowed = false): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!zeroAllowed && value === 0)) {
    throw new InvalidArgumentError(`${name} must be a ${zeroAllowed ? 'non-negative' : 'positive'} number, got ${value}`);
  }
}

function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
