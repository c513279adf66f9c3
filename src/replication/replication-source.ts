// The primary of continuous replication (docs/PROTOCOL.md section 9). It connects to a standby, syncs it
// (only the pages whose hashes differ from what the standby holds), then runs epochs: pause the
// workload, take the dirty pages, copy them into the staging copy, resume; encode and send the epoch;
// the standby's EPOCH_ACK commits it, and only then is the embedder told it may release the output
// produced up to that capture. A lost standby leaves the workload running, unprotected: nothing more is
// released (unless releaseWhenUnprotected) while the primary reconnects and syncs again.
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import {
  AbortedError, HookError, InvalidArgumentError, ProtocolError, TimeoutError, asPagewireError, type PagewireError,
} from '../errors.js';
import { PageBatchEncoder } from '../codec/page-batch-encoder.js';
import { formatDigest, regionDigest } from '../codec/page-hashes.js';
import type { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { pageListOf, type DirtyScan, type DirtyTracker, type PageList } from '../memory/dirty-tracker.js';
import type { MemoryRegion } from '../memory/region.js';
import { HookRunner } from '../migration/hook-runner.js';
import { sourceSettings, type SourceSettings } from '../migration/source-options.js';
import { ConnectionSet } from '../source/connection-set.js';
import { trackRegions, type TrackedRegion } from '../source/tracked-regions.js';
import type { EndpointOptions } from '../transport/connect.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import {
  FEATURE_REPLICATION, MAX_DEVICE_STATE_BYTES, MessageType, encodeDeviceStateHead, encodePagesHeader, messageName,
} from '../wire/messages.js';
import { EPOCH_SYNC, encodeEpochBegin, encodeEpochEnd, parseEpochNumber } from '../wire/replication-messages.js';
import { nextEpoch } from './epoch-policy.js';
import { Heartbeat, MIN_FAILOVER_TIMEOUT_MS } from './heartbeat.js';
import type { PrimaryLease } from './primary-lease.js';
import { ShadowCopy } from './shadow-copy.js';

/** The shortest epoch `epochMs` may ask for. */
export const MIN_EPOCH_MS = 10;
/** Catch-up rounds after a sync end below this many dirty pages, or when they stop shrinking, or after so many. */
const CATCH_UP_DONE_PAGES = 256;
const MAX_CATCH_UP_ROUNDS = 5;
/** Small enough that a chunk crosses a slow link well within the standby's failover timeout. */
const DEVICE_STATE_CHUNK_BYTES = 1024 * 1024;

/** An epoch the standby has committed. */
export interface EpochReport {
  epoch: number;
  /** The region digest at the epoch's capture, 16 hex digits (as `pagewire digest` prints it). */
  digest: string;
  /** Pages the epoch carried (the dirty pages captured). */
  pages: number;
  /** Bytes written to the connection for the epoch, frames included. */
  bytes: number;
  /** The workload's pause for the capture: pause hook called to resume hook returned. */
  pauseMs: number;
  /** Capture begun to EPOCH_ACK received. */
  commitMs: number;
  /** The epoch length in force (stretched when cycles fall behind; see epoch-policy.ts). */
  intervalMs: number;
  /** The fencing token the epoch carried (0 without a coordinator). */
  token: number;
  /**
   * Set on the captures released with no standby (releaseWhenUnprotected): nobody holds them, and
   * `bytes` and `commitMs` are 0.
   */
  unprotected?: true;
}

export interface ReplicationHooks {
  /** Stop the workload; resolve once it can write no more. Called for every capture. */
  pause(signal: AbortSignal): Promise<void> | void;
  /** Let it run again after the capture. */
  resume(signal: AbortSignal): Promise<void> | void;
  /** The opaque device state at the capture, taken while paused (at most 1 GiB); the standby gets the committed one. */
  deviceState?(signal: AbortSignal): Promise<Uint8Array> | Uint8Array;
  /**
   * Output commit: everything the workload produced up to this epoch's capture may now be released;
   * the standby holds it. Called once per committed epoch, in order.
   */
  onCommitted?(epoch: EpochReport, signal: AbortSignal): Promise<void> | void;
}

export interface ReplicationSourceOptions extends EndpointOptions {
  region: MemoryRegion;
  /** Set by the workload's writers; without it (or dirtyTracker), pages are tracked by hashing. */
  dirtyBitmap?: DirtyBitmap;
  dirtyTracker?: DirtyTracker;
  hooks: ReplicationHooks;
  /** Epoch length (default 50 ms, at least 10). */
  epochMs?: number;
  /** Silence from the standby (no ACK, no heartbeat) for this long means it is lost (default 1000 ms, at least 300). */
  failoverTimeoutMs?: number;
  /** Wait between attempts to reach a lost standby again (default 500 ms). */
  reconnectBackoffMs?: number;
  /**
   * While no standby holds the epochs, go on capturing and calling onCommitted (with `unprotected`
   * set). Off by default: output waits until a standby has committed it.
   */
  releaseWhenUnprotected?: boolean;
  /** The coordinator's lease (see PrimaryLease): its token is carried in every epoch, and losing it stops the workload. */
  lease?: PrimaryLease;
  psk?: Uint8Array;
  tls?: boolean;
  tlsCertificates?: TlsCertificates;
  /** Bytes of page cache for DELTA (default 64 MiB). */
  pageCacheBytes?: number;
  /** Longest wait for a hook (default 30 s). */
  hookTimeoutMs?: number;
  /** Longest wait for the standby's handshake or for the socket to drain (default 30 s). */
  timeoutMs?: number;
  /**
   * Stops replication: run() then resolves. Without a lease the workload is left running (the standby
   * takes over once it has heard nothing for its failover timeout); with one, the workload is paused
   * and the lease released, so that the standby takes over after its failover timeout without waiting
   * for the lease to lapse, and never beside it.
   */
  signal?: AbortSignal;
}

export interface ReplicationEvents {
  /** The standby holds the workload from here on (after each sync). */
  protected: [{ syncedPages: number; syncMs: number }];
  /** An epoch was committed. */
  epoch: [EpochReport];
  /** The standby is lost: the workload runs on, and nothing more is released. */
  unprotected: [PagewireError];
  /** The lease is lost: the workload was paused, and run() rejects with FencedError. */
  fenced: [PagewireError];
}

export interface ReplicationSummary {
  /** The last committed epoch (0: none). */
  committedEpoch: number;
  epochs: number;
  syncs: number;
}

interface Settings {
  epochMs: number;
  failoverTimeoutMs: number;
  reconnectBackoffMs: number;
  releaseWhenUnprotected: boolean;
  lease?: PrimaryLease;
  hooks: ReplicationHooks;
}

export class ReplicationSource extends EventEmitter<ReplicationEvents> {
  private readonly source: SourceSettings;
  private readonly settings: Settings;
  private readonly tracked: TrackedRegion;
  private readonly shadow: ShadowCopy;
  private readonly hooks: HookRunner;
  private readonly stopped = new AbortController();
  private epoch = 0;
  private committedEpoch = 0;
  private syncs = 0;
  private intervalMs: number;
  private ran = false;

  constructor(options: ReplicationSourceOptions) {
    super();
    const { region, dirtyBitmap, dirtyTracker, hooks, host, port, path, connect, psk, tls, tlsCertificates, pageCacheBytes,
      hookTimeoutMs, timeoutMs, signal } = options;
    const given = { region, dirtyBitmap, dirtyTracker, host, port, path, connect, psk, tls, tlsCertificates, pageCacheBytes, hookTimeoutMs, timeoutMs };
    // The migration source's checks cover the shared options; replication runs on one connection.
    this.source = sourceSettings({
      ...Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined)),
      hooks: { pause: hooks?.pause, resume: hooks?.resume }, streams: 1, signal: this.stopped.signal,
    } as Parameters<typeof sourceSettings>[0]);
    if (hooks.deviceState !== undefined && typeof hooks.deviceState !== 'function') throw new InvalidArgumentError('options.hooks.deviceState must be a function');
    if (hooks.onCommitted !== undefined && typeof hooks.onCommitted !== 'function') throw new InvalidArgumentError('options.hooks.onCommitted must be a function');
    const epochMs = options.epochMs ?? 50;
    if (!Number.isFinite(epochMs) || epochMs < MIN_EPOCH_MS) throw new InvalidArgumentError(`options.epochMs must be at least ${MIN_EPOCH_MS}, got ${epochMs}`);
    const failoverTimeoutMs = options.failoverTimeoutMs ?? 1000;
    if (!Number.isFinite(failoverTimeoutMs) || failoverTimeoutMs < MIN_FAILOVER_TIMEOUT_MS) {
      throw new InvalidArgumentError(`options.failoverTimeoutMs must be at least ${MIN_FAILOVER_TIMEOUT_MS}, got ${failoverTimeoutMs}`);
    }
    const reconnectBackoffMs = options.reconnectBackoffMs ?? 500;
    if (!Number.isFinite(reconnectBackoffMs) || reconnectBackoffMs < 0) throw new InvalidArgumentError(`options.reconnectBackoffMs must be >= 0, got ${reconnectBackoffMs}`);
    this.settings = {
      epochMs, failoverTimeoutMs, reconnectBackoffMs, releaseWhenUnprotected: options.releaseWhenUnprotected ?? false, hooks,
      ...(options.lease ? { lease: options.lease } : {}),
    };
    this.intervalMs = epochMs;
    this.tracked = trackRegions(this.source)[0]!;
    this.shadow = new ShadowCopy(region);
    this.hooks = new HookRunner(this.source.hookTimeoutMs, this.stopped.signal);
    if (signal?.aborted) this.stopped.abort(signal.reason);
    signal?.addEventListener('abort', () => this.stopped.abort(signal.reason), { once: true });
  }

  /**
   * Replicates until the signal aborts (resolves), the lease is lost (rejects with FencedError; the
   * workload paused), or a hook fails (rejects with its error). With a lease still held, an end hands
   * over: the workload is paused and the lease given up, so that the standby takes over without waiting
   * for the lease to lapse; a workload that cannot be paused keeps the lease (see handOver).
   */
  async run(): Promise<ReplicationSummary> {
    if (this.ran) throw new InvalidArgumentError('a ReplicationSource runs once; create another');
    this.ran = true;
    const { lease } = this.settings;
    const unsubscribe = lease?.onLost(() => void this.fence());
    try {
      while (!this.stopped.signal.aborted) {
        try {
          await this.protectAndReplicate();
        } catch (error) {
          if (this.stopped.signal.aborted) break;
          // A hook that failed leaves the workload in a state only the embedder knows: stop, say why.
          if (this.hookFailure) throw this.hookFailure;
          // Once per loss, not once per failed attempt to reach the standby again.
          if (this.protectedNow || this.syncs === 0 && !this.reportedUnprotected) this.emit('unprotected', asPagewireError(error));
          this.protectedNow = false;
          this.reportedUnprotected = true;
          await this.whileUnprotected();
        }
      }
      if (this.fencedBy) throw this.fencedBy;
    } catch (error) {
      if (lease && !this.fencedBy) {
        await this.handOver(lease).catch((handOver: unknown) => {
          const failure = asPagewireError(error);
          failure.message = `${failure.message}; then ${asPagewireError(handOver).message}`;
          throw failure;
        });
      }
      throw error;
    } finally {
      unsubscribe?.();
    }
    if (lease) await this.handOver(lease);
    return { committedEpoch: this.committedEpoch, epochs: this.epoch, syncs: this.syncs };
  }

  /**
   * Ends with the lease held: pauses the workload and gives the lease up. A workload that would not
   * pause keeps the lease, renewing, since giving it up would let the standby start beside it.
   */
  private async handOver(lease: PrimaryLease): Promise<void> {
    this.fencedBy = lease.lostError();
    const failure = await this.pauseForGood();
    if (failure) {
      throw new HookError('pause', new Error(`${failure.message}; the lease on ${lease.name} is kept (renewing) so that no other copy ` +
        'starts beside the workload: stop it, then call lease.release()'));
    }
    await lease.release().catch(() => undefined);
  }

  /** Pauses the workload, not through the runner (bound to the replication's signal, which has stopped); returns its failure. */
  private async pauseForGood(): Promise<PagewireError | undefined> {
    const { hookTimeoutMs } = this.source;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`the pause hook did not finish within ${hookTimeoutMs} ms`)), hookTimeoutMs);
    });
    try {
      await Promise.race([Promise.resolve(this.settings.hooks.pause(AbortSignal.timeout(hookTimeoutMs))), late]);
      return undefined;
    } catch (error) {
      return asPagewireError(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A hook's run; its failure is kept, so that run() fails with it rather than taking it for a lost standby. */
  private async runHook<T>(name: string, hook: (signal: AbortSignal) => Promise<T> | T, abortable = true): Promise<T> {
    try {
      return await this.hooks.run(name, hook, abortable);
    } catch (error) {
      if (!this.stopped.signal.aborted) this.hookFailure ??= asPagewireError(error);
      throw error;
    }
  }

  private hookFailure: PagewireError | undefined;

  private fencedBy: PagewireError | undefined;
  /** A standby holds the workload (from a sync's acknowledgement to the connection's loss). */
  private protectedNow = false;
  private reportedUnprotected = false;

  /** The lease is gone (or about to be): stop the workload before another copy may start, and stop. */
  private async fence(): Promise<void> {
    const error = this.settings.lease!.lostError();
    this.fencedBy = error;
    await this.pauseForGood();
    this.emit('fenced', error);
    this.stopped.abort(error);
  }

  /** Connects, syncs and runs epochs until the connection fails. */
  private async protectAndReplicate(): Promise<void> {
    const connections = new ConnectionSet(this.source, randomBytes(16));
    const stop = () => connections.interruptAll(new AbortedError('replication stopped'));
    this.stopped.signal.addEventListener('abort', stop, { once: true });
    let heartbeat: Heartbeat | undefined;
    try {
      const { streams: [connection], held } = await connections.open(false, FEATURE_REPLICATION);
      if (!held) throw new ProtocolError('the standby sent no HELD');
      const link = new StandbyLink(connection!, this.settings.failoverTimeoutMs);
      heartbeat = new Heartbeat(connection!, () => this.epoch);
      // What the standby holds is what was sent: a hash tracker compares the live pages with it.
      this.tracked.sentHashes.set(held.hashes[0]!);
      const encoder = new PageBatchEncoder(this.shadow.region, {
        sentHashes: this.tracked.sentHashes, cacheBytes: this.source.pageCacheBytes, batchPages: this.tracked.batchPages,
      });
      await this.sync(link, encoder);
      for (;;) {
        const began = performance.now();
        await this.epochCycle(link, encoder);
        const cycleMs = performance.now() - began;
        // The next capture comes one interval after this one began (the interval stretched when a cycle runs over).
        const decision = nextEpoch({ configuredMs: this.settings.epochMs, currentMs: this.intervalMs, lastCycleMs: cycleMs });
        this.intervalMs = decision.intervalMs;
        await link.guard(this.sleep(Math.max(0, began + this.intervalMs - performance.now())));
      }
    } finally {
      heartbeat?.stop();
      this.stopped.signal.removeEventListener('abort', stop);
      connections.interruptAll(new AbortedError('replication connection closed'));
      for (const connection of connections.all) void connection.close(0);
    }
  }

  /**
   * The first epochs of a connection, none a consistent point: every page that differs from what the
   * standby holds, then (like pre-copy rounds, the workload running) the pages written meanwhile, while
   * they shrink, so that the first capture's pause is an ordinary one.
   */
  private async sync(link: StandbyLink, encoder: PageBatchEncoder): Promise<void> {
    const began = performance.now();
    this.tracked.tracker.start();
    await link.guard(this.shadow.copyAll());
    const ours = this.shadow.pageHashes();
    const differing: number[] = [];
    for (let page = 0; page < ours.length; page++) if (ours[page] !== encoder.sentHashes[page]) differing.push(page);
    let epoch = ++this.epoch;
    await this.sendEpoch(link, encoder, epoch, EPOCH_SYNC, pageListOf(Uint32Array.from(differing)), undefined);
    await link.acknowledged(epoch);
    let pending = Infinity;
    for (let round = 0; round < MAX_CATCH_UP_ROUNDS; round++) {
      const scan = await this.tracked.tracker.scan({ paused: false });
      if (scan.count <= CATCH_UP_DONE_PAGES || scan.count >= pending * 0.9) break;
      pending = scan.count;
      const pages = this.takeIntoShadow(scan);
      epoch = ++this.epoch;
      await this.sendEpoch(link, encoder, epoch, EPOCH_SYNC, pages, undefined);
      await link.acknowledged(epoch);
    }
    this.syncs += 1;
    this.protectedNow = true;
    this.emit('protected', { syncedPages: differing.length, syncMs: performance.now() - began });
  }

  /** Takes the dirty pages and copies them into the staging copy; returns them (read again to encode). */
  private takeIntoShadow(scan: DirtyScan): PageList {
    const taken = scan.take();
    const all = new Uint32Array(taken.count);
    let n = 0;
    for (const batch of taken.batches(65_536)) {
      all.set(batch, n);
      n += batch.length;
    }
    const pages = pageListOf(all.subarray(0, n));
    this.shadow.copyPages(pages, 65_536);
    return pages;
  }

  /** Capture, send, commit; then output commit. */
  private async epochCycle(link: StandbyLink, encoder: PageBatchEncoder): Promise<void> {
    const began = performance.now();
    const { pages, deviceState, pauseMs } = await this.capture();
    const epoch = ++this.epoch;
    const bytes = await this.sendEpoch(link, encoder, epoch, 0, pages, deviceState);
    await link.acknowledged(epoch);
    this.committedEpoch = epoch;
    const report: EpochReport = {
      epoch, digest: formatDigest(regionDigest(encoder.sentHashes)), pages: pages.count, bytes, pauseMs,
      commitMs: performance.now() - began, intervalMs: this.intervalMs, token: this.settings.lease?.token ?? 0,
    };
    this.emit('epoch', report);
    const { onCommitted } = this.settings.hooks;
    if (onCommitted) await this.runHook('onCommitted', (signal) => onCommitted(report, signal));
  }

  /** Pause, take the dirty pages into the staging copy (and the device state), resume. */
  private async capture(): Promise<{ pages: PageList; deviceState: Uint8Array | undefined; pauseMs: number }> {
    const { hooks } = this.settings;
    const began = performance.now();
    let pages: PageList;
    let deviceState: Uint8Array | undefined;
    try {
      // Counted as paused from the call on: a pause that fails or is given up on is still resumed.
      await this.runHook('pause', (signal) => hooks.pause(signal));
      pages = this.takeIntoShadow(await this.tracked.tracker.scan({ paused: true }));
      if (hooks.deviceState) {
        deviceState = await this.runHook('deviceState', (signal) => hooks.deviceState!(signal));
        if (!(deviceState instanceof Uint8Array) || deviceState.byteLength > MAX_DEVICE_STATE_BYTES) {
          this.hookFailure = new InvalidArgumentError(`the deviceState hook must return a Uint8Array of at most ${MAX_DEVICE_STATE_BYTES} bytes`);
          throw this.hookFailure;
        }
        deviceState = Buffer.from(deviceState);
      }
    } finally {
      // A workload fenced meanwhile stays paused: another copy may be about to run it. A pause given up
      // on may still be running: resume only once it has settled.
      if (!this.fencedBy && await this.hooks.settled()) await this.runHook('resume', (signal) => hooks.resume(signal), false);
    }
    return { pages, deviceState, pauseMs: performance.now() - began };
  }

  /** EPOCH_BEGIN, the pages from the staging copy, the device state, EPOCH_END; returns the bytes written. */
  private async sendEpoch(link: StandbyLink, encoder: PageBatchEncoder, epoch: number, flags: number, pages: PageList,
    deviceState: Uint8Array | undefined): Promise<number> {
    const { connection } = link;
    const before = connection.bytesWritten;
    await link.guard(connection.send(MessageType.EpochBegin, encodeEpochBegin({ epoch, token: this.settings.lease?.token ?? 0, flags })));
    let records = 0;
    for (const batch of pages.batches(encoder.batchPages)) {
      const encoded = await link.guard(encoder.encode(batch, false, (flags & EPOCH_SYNC) !== 0));
      records += encoded.recordCount;
      await link.guard(connection.sendThen(() => encoder.release(encoded), MessageType.Pages,
        encodePagesHeader(encoded.recordCount, 0), encoded.records));
    }
    if (deviceState) {
      const bytes = Buffer.from(deviceState.buffer, deviceState.byteOffset, deviceState.byteLength);
      for (let at = 0; ; at += DEVICE_STATE_CHUNK_BYTES) {
        const last = at + DEVICE_STATE_CHUNK_BYTES >= bytes.length;
        await link.guard(connection.send(MessageType.DeviceState, encodeDeviceStateHead(last),
          bytes.subarray(at, Math.min(bytes.length, at + DEVICE_STATE_CHUNK_BYTES))));
        if (last) break;
      }
    }
    link.ended = epoch;
    await link.guard(connection.send(MessageType.EpochEnd, encodeEpochEnd({ epoch, records, digest: regionDigest(encoder.sentHashes) })));
    return connection.bytesWritten - before;
  }

  /** No standby: keep capturing only if told to release anyway; try to reach one again every backoff. */
  private async whileUnprotected(): Promise<void> {
    const { releaseWhenUnprotected, reconnectBackoffMs, hooks } = this.settings;
    if (!releaseWhenUnprotected) {
      await this.sleep(reconnectBackoffMs);
      return;
    }
    const { pages, pauseMs } = await this.capture();
    const epoch = ++this.epoch;
    // Counted as sent, so that a hash tracker reports only what changes after this capture.
    const captured = this.shadow.pageHashes();
    this.tracked.sentHashes.set(captured);
    const report: EpochReport = {
      epoch, digest: formatDigest(regionDigest(captured)), pages: pages.count, bytes: 0, pauseMs, commitMs: 0,
      intervalMs: this.intervalMs, token: this.settings.lease?.token ?? 0, unprotected: true,
    };
    if (hooks.onCommitted) await this.runHook('onCommitted', (signal) => hooks.onCommitted!(report, signal));
    await this.sleep(Math.max(reconnectBackoffMs, this.settings.epochMs));
  }

  /** Waits, or ends at once when replication stops. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.stopped.signal;
      if (signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

/**
 * The standby's side of the connection as the primary reads it: EPOCH_ACKs and heartbeats. Silence for
 * the failover timeout, an ERROR, or a malformed frame fails the link, and every wait on it.
 */
class StandbyLink {
  private failure: PagewireError | undefined;
  private readonly failed: Promise<never>;
  private acked = 0;
  private ackWaiter: (() => void) | undefined;
  /** The last epoch whose EPOCH_END was sent: no acknowledgement may go beyond it. */
  ended = 0;

  constructor(readonly connection: FramedConnection, private readonly silenceMs: number) {
    let fail!: (error: PagewireError) => void;
    this.failed = new Promise<never>((_, reject) => { fail = reject; });
    this.failed.catch(() => undefined);
    void this.read().catch((error: unknown) => {
      this.failure = asPagewireError(error);
      connection.fail(this.failure);
      fail(this.failure);
    });
  }

  /** Resolves once the standby has acknowledged `epoch`. */
  async acknowledged(epoch: number): Promise<void> {
    while (this.acked < epoch) await this.guard(new Promise<void>((resolve) => { this.ackWaiter = resolve; }));
  }

  /** The promise, or the link's failure if that comes first. */
  guard<T>(promise: Promise<T>): Promise<T> {
    if (this.failure) {
      // Nobody waits for `promise` any more; its own failure must not go unhandled.
      promise.catch(() => undefined);
      return Promise.reject(this.failure);
    }
    return Promise.race([promise, this.failed]);
  }

  private async read(): Promise<void> {
    for (;;) {
      let frame;
      try {
        frame = await this.connection.receive(this.silenceMs);
      } catch (error) {
        const e = asPagewireError(error);
        if (e instanceof TimeoutError) throw new TimeoutError(`the standby ${this.connection.remote} fell silent for ${this.silenceMs} ms`);
        throw e;
      }
      if (frame.type === MessageType.EpochAck) {
        const epoch = parseEpochNumber(frame.payload, 'EPOCH_ACK');
        if (epoch <= this.acked || epoch > this.ended) {
          throw new ProtocolError(`EPOCH_ACK ${epoch} acknowledges no epoch waiting for it (last acknowledged ${this.acked}, last ended ${this.ended})`);
        }
        this.acked = epoch;
        this.ackWaiter?.();
      } else if (frame.type === MessageType.Heartbeat) {
        parseEpochNumber(frame.payload, 'HEARTBEAT');
      } else {
        throw new ProtocolError(`unexpected ${messageName(frame.type)} from the standby`);
      }
      frame.release?.();
    }
  }
}
