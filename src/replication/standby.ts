// The standby of continuous replication (docs/PROTOCOL.md section 9). It listens for one primary at a
// time, tells it what it holds (HELD), and applies its epochs to a working file beside `--out`, each as
// a unit (standby-image.ts). When it has heard nothing from the primary for the failover timeout and
// holds a committed epoch, it activates: with a coordinator only once it has taken the workload's key
// (the primary's lease gone), then `--out` made the committed epoch, then the onActivate hook.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import {
  AbortedError, CapacityError, ConnectionError, FencedError, HandshakeError, InvalidArgumentError, PeerError, ProtocolError, StorageError,
  TimeoutError, asPagewireError, type PagewireError,
} from '../errors.js';
import { formatDigest } from '../codec/page-hashes.js';
import { HookRunner } from '../migration/hook-runner.js';
import { validatePageSize, validateRegionSize } from '../memory/region.js';
import { sendHeld } from '../target/held-frames.js';
import { TargetListener, type ListenerSettings, type Session, type TargetAdmission } from '../target/listener.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import { checkPsk } from '../transport/psk-auth.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import {
  FEATURE_PSK, FEATURE_REPLICATION, MAX_DEVICE_STATE_BYTES, MAX_PAYLOAD_BYTES, MAX_VERSION, MessageType, encodeWelcome, messageName,
  parseDeviceState, parsePages, type Hello,
} from '../wire/messages.js';
import { EPOCH_SYNC, encodeEpochNumber, parseEpochBegin, parseEpochEnd, parseEpochNumber } from '../wire/replication-messages.js';
import { Heartbeat, MIN_FAILOVER_TIMEOUT_MS } from './heartbeat.js';
import type { StandbyClaim } from './standby-claim.js';
import { StandbyImage } from './standby-image.js';

/** How often the standby looks at the silence timer. */
const WATCH_MS = 20;
/** How often, once silent, it asks the coordinator whether the primary's lease is gone. */
const CLAIM_RETRY_MS = 100;
/** Batches queued for the pool thread before the standby stops reading. */
const MAX_QUEUED_BATCHES = 4;

/** What the standby activated with. */
export interface Activation {
  epoch: number;
  /** The committed epoch's region digest, 16 hex digits. */
  digest: string;
  /** The device state committed with it (empty without one). */
  deviceState: Buffer;
  /** The fencing token this copy now runs under (the coordinator key's revision it created), else the primary's last. */
  token: number;
  /** `--out`, holding the epoch (durable). */
  out: string;
  /** Silence waited: the last frame heard to the decision to activate (with a coordinator, to the key taken). */
  detectMs: number;
}

export interface ActivationReport extends Activation {
  /** The decision to activate to the onActivate hook's return: `--out` made durable, the hook run. */
  activateMs: number;
}

export interface StandbyHooks {
  /** Run the workload from `activation.out` (and its device state): the standby's last step. */
  onActivate?(activation: Activation, signal: AbortSignal): Promise<void> | void;
}

export interface StandbyOptions {
  /** Where to listen (default 127.0.0.1, port 0: a free one). */
  host?: string;
  port?: number;
  /** The image file the standby writes at activation (and whose contents it offers a primary at a re-protect). */
  out: string;
  /** Silence from the primary for this long means it is gone (default 1000 ms, at least 300). */
  failoverTimeoutMs?: number;
  hooks?: StandbyHooks;
  /** The coordinator's side of fencing (see StandbyClaim); without it, silence alone decides. */
  claim?: StandbyClaim;
  psk?: Uint8Array;
  tls?: boolean;
  tlsCertificates?: TlsCertificates;
  /** Longest handshake, frame drain or hook wait (default 30 s; the handshake 5 s). */
  timeoutMs?: number;
  hookTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface StandbyEvents {
  listening: [{ host: string; port: number }];
  /** A primary connected and was welcomed. */
  connected: [{ remote: string }];
  /** A sync epoch finished (the first sync, or a catch-up round): not yet a consistent point. */
  synced: [{ epoch: number; pages: number }];
  /** An epoch was committed. */
  epoch: [{ epoch: number; digest: string; pages: number }];
  /** The primary's connection ended; the standby keeps its last committed epoch. */
  lost: [PagewireError];
  /** Silent past the failover timeout, but the coordinator shows the primary alive: not activating. */
  'primary-alive': [];
  /** Silent past the failover timeout, and the coordinator cannot be asked: not activating without its word. */
  'coordinator-unreachable': [PagewireError];
  /** A connection refused in its handshake. */
  refused: [PagewireError, string];
}

/** An epoch being received. */
interface OpenEpoch {
  epoch: number;
  sync: boolean;
  token: number;
  records: number;
  deviceState: Buffer[];
  deviceStateBytes: number;
  deviceStateDone: boolean;
}

export class Standby extends EventEmitter<StandbyEvents> {
  private readonly listener: TargetListener;
  private readonly failoverTimeoutMs: number;
  private readonly hooks: HookRunner;
  private readonly out: string;
  private image: StandbyImage | undefined;
  private shape: { pageSize: number; regionSize: number } | undefined;
  private active: FramedConnection | undefined;
  private lastHeard = performance.now();
  private highestToken = 0;
  private ran = false;
  /** A roll-back that failed: the working image is torn, and the standby stops. */
  private broken: PagewireError | undefined;
  /** Past the decision to activate: the working file is kept whatever happens. */
  private tookOver = false;

  constructor(private readonly options: StandbyOptions) {
    super();
    if (typeof options?.out !== 'string' || options.out === '') throw new InvalidArgumentError('options.out must be a file path');
    this.out = resolve(options.out);
    this.failoverTimeoutMs = options.failoverTimeoutMs ?? 1000;
    if (!Number.isFinite(this.failoverTimeoutMs) || this.failoverTimeoutMs < MIN_FAILOVER_TIMEOUT_MS) {
      throw new InvalidArgumentError(`options.failoverTimeoutMs must be at least ${MIN_FAILOVER_TIMEOUT_MS}, got ${options.failoverTimeoutMs}`);
    }
    if (options.psk) checkPsk(options.psk);
    if (options.tls && !options.psk) throw new InvalidArgumentError('options.tls needs a pre-shared key (options.psk)');
    const timeoutMs = options.timeoutMs ?? 30_000;
    const settings: ListenerSettings = {
      host: options.host ?? '127.0.0.1', port: options.port ?? 0, timeoutMs, handshakeTimeoutMs: Math.min(timeoutMs, 5_000),
      ...(options.psk ? { psk: options.psk } : {}), ...(options.tls ? { tls: options.tls } : {}),
      ...(options.tlsCertificates ? { tlsCertificates: options.tlsCertificates } : {}),
    };
    this.listener = new TargetListener(settings, this.admission(), true);
    this.hooks = new HookRunner(options.hookTimeoutMs ?? 30_000, options.signal);
  }

  /** The copy this standby is, as the coordinator's owner key names it: this host and `out`. */
  static copyName(out: string): string {
    return `${hostname()}:${resolve(out)}`;
  }

  /** Listens and serves primaries until it activates (resolves) or is aborted (rejects; `out` untouched). */
  async run(): Promise<ActivationReport> {
    if (this.ran) throw new InvalidArgumentError('a Standby runs once; create another');
    this.ran = true;
    const { signal } = this.options;
    await this.listener.listen();
    const address = this.listener.address;
    if (address) this.emit('listening', { host: address.address, port: address.port });
    try {
      const { activation, decided } = await this.watch();
      const { onActivate } = this.options.hooks ?? {};
      if (onActivate) {
        await this.hooks.run('onActivate', (hookSignal) => onActivate(activation, hookSignal), false).catch((error: unknown) => {
          const failure = asPagewireError(error);
          failure.message = `${activation.out} holds epoch ${activation.epoch} and this copy owns the workload, but ${failure.message}`;
          throw failure;
        });
      }
      return { ...activation, activateMs: performance.now() - decided };
    } catch (error) {
      // Once taken over, the working file may be the only copy of the committed epoch: it stays.
      if (!this.tookOver) await this.image?.discard().catch(() => undefined);
      throw signal?.aborted && !this.tookOver ? new AbortedError('the standby was stopped', { cause: signal.reason }) : asPagewireError(error);
    } finally {
      this.listener.close();
      this.listener.destroyConnections();
    }
  }

  /** Waits for the silence that means the primary is gone; then takes over and writes `out`. */
  private async watch(): Promise<{ activation: Activation; decided: number }> {
    const { signal, claim } = this.options;
    let aliveReported = false;
    let nextClaim = 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, WATCH_MS));
      if (signal?.aborted) throw new AbortedError('the standby was stopped');
      if (this.broken) throw this.broken;
      const committed = this.image?.committed;
      if (!committed || this.active) {
        aliveReported = false;
        continue;
      }
      const silentMs = performance.now() - this.lastHeard;
      if (silentMs < this.failoverTimeoutMs) continue;
      let token = committed.token;
      if (claim) {
        if (performance.now() < nextClaim) continue;
        nextClaim = performance.now() + CLAIM_RETRY_MS;
        let taken;
        try {
          taken = await claim.tryTakeOver();
        } catch (error) {
          // etcd unreachable: no proof the primary's lease is gone, so no activation; try again.
          if (error instanceof FencedError) throw error;
          if (!aliveReported) this.emit('coordinator-unreachable', asPagewireError(error));
          aliveReported = true;
          continue;
        }
        if (!taken.taken) {
          if (!aliveReported) this.emit('primary-alive');
          aliveReported = true;
          continue;
        }
        token = taken.token;
      }
      const detectMs = performance.now() - this.lastHeard;
      const decided = performance.now();
      this.tookOver = true;
      // No primary may begin a sync from here on; one that connected meanwhile is cut off and undone.
      this.listener.close();
      this.listener.destroyConnections();
      while (this.active) await new Promise((r) => setTimeout(r, WATCH_MS));
      const image = this.image!;
      const epoch = await image.activate().catch(async (error: unknown) => {
        const where = await image.keep(committed.epoch);
        throw new StorageError(`took over epoch ${committed.epoch} but could not make it ${this.out} durable ` +
          `(${asPagewireError(error).message}); it is in ${where}`, { cause: error });
      });
      return {
        activation: { epoch: epoch.epoch, digest: formatDigest(epoch.digest), deviceState: epoch.deviceState, token, out: this.out, detectMs },
        decided,
      };
    }
  }

  private admission(): TargetAdmission {
    return {
      refusesConnections: () => this.active !== undefined || this.listener.closed,
      joins: () => undefined,
      resumable: () => undefined,
      begin: (connection, hello, session) => {
        // Two handshakes may have run side by side: the first to finish is served.
        if (this.active) {
          const busy = new HandshakeError('this standby is already serving a primary');
          this.emit('refused', busy, connection.remote);
          void connection.sendErrorAndClose(busy);
          return;
        }
        this.active = connection;
        this.lastHeard = performance.now();
        this.serve(connection, hello, session).catch((error: unknown) => this.connectionEnded(connection, asPagewireError(error)));
      },
      resume: (connection) => void connection.sendErrorAndClose(new HandshakeError('a standby resumes nothing: the primary syncs again')),
      refused: (error, remote) => this.emit('refused', error, remote),
    };
  }

  private async connectionEnded(connection: FramedConnection, error: PagewireError): Promise<void> {
    // The primary hears why, unless the connection itself is what failed.
    if (error instanceof ConnectionError || error instanceof TimeoutError || error instanceof PeerError) void connection.close(0);
    else await connection.sendErrorAndClose(error);
    // Whatever of an epoch arrived is undone: the committed one stays. If that fails, the image can be
    // trusted no more: the standby stops (run() rejects) rather than serve or activate it.
    try {
      await this.image?.rollBack();
    } catch (rollBack) {
      this.broken = asPagewireError(rollBack);
    }
    this.active = undefined;
    this.emit('lost', error);
  }

  /** WELCOME, HELD, then epochs until the connection fails or falls silent. */
  private async serve(connection: FramedConnection, hello: Hello, session: Session): Promise<void> {
    const shape = { pageSize: hello.pageSize, regionSize: hello.regionSize };
    if (hello.extraRegions.length > 0) throw new HandshakeError('replication carries one region; the primary offers several');
    if (this.shape && (this.shape.pageSize !== shape.pageSize || this.shape.regionSize !== shape.regionSize)) {
      throw new HandshakeError(`this standby holds a region of ${this.shape.regionSize} bytes in ${this.shape.pageSize}-byte pages; ` +
        `the primary offers ${shape.regionSize} in ${shape.pageSize}`);
    }
    validateRegionSize(shape.regionSize, validatePageSize(shape.pageSize));
    this.shape = shape;
    this.image ??= await StandbyImage.open(this.out, shape.regionSize, shape.pageSize);
    const image = this.image;
    await connection.send(MessageType.Welcome, encodeWelcome({
      version: Math.min(hello.maxVersion, MAX_VERSION), extraStreams: 0, features: hello.features & (FEATURE_PSK | FEATURE_REPLICATION),
      flags: 0, sessionKey: session.welcomeKey,
    }));
    connection.maxPayload = MAX_PAYLOAD_BYTES;
    await sendHeld(connection, 0, [image.heldHashes]);
    this.emit('connected', { remote: connection.remote });
    const heartbeat = new Heartbeat(connection, () => image.committed?.epoch ?? 0);
    let open: OpenEpoch | undefined;
    let connectionToken: number | undefined;
    // Epochs count up within a connection; a new primary (a restart, a re-protect) counts afresh.
    let lastEpoch = 0;
    let consistent = false;
    try {
      for (;;) {
        let frame;
        try {
          frame = await connection.receive(this.failoverTimeoutMs);
        } catch (error) {
          const e = asPagewireError(error);
          throw e instanceof TimeoutError ? new TimeoutError(`the primary ${connection.remote} fell silent for ${this.failoverTimeoutMs} ms`) : e;
        }
        this.lastHeard = performance.now();
        const { type, payload } = frame;
        if (type === MessageType.Heartbeat) {
          parseEpochNumber(payload, 'HEARTBEAT');
        } else if (type === MessageType.EpochBegin) {
          if (open) throw new ProtocolError(`EPOCH_BEGIN while epoch ${open.epoch} is open`);
          const begin = parseEpochBegin(payload);
          if (begin.epoch <= lastEpoch) throw new ProtocolError(`epoch ${begin.epoch} does not follow epoch ${lastEpoch}`);
          if (begin.token < this.highestToken || (connectionToken !== undefined && begin.token !== connectionToken)) {
            throw new FencedError(`stale fencing token ${begin.token}: this standby has seen ${Math.max(this.highestToken, connectionToken ?? 0)}`);
          }
          const sync = (begin.flags & EPOCH_SYNC) !== 0;
          // A connection's epochs: one or more syncs (the first checked with the coordinator), then consistent ones.
          if (sync && consistent) throw new ProtocolError('a sync after a consistent epoch');
          if (!sync && connectionToken === undefined) throw new ProtocolError('an epoch before the sync');
          if (connectionToken === undefined && this.options.claim) await this.options.claim.checkPrimary(begin.token);
          consistent = !sync;
          connectionToken = begin.token;
          this.highestToken = begin.token;
          open = { epoch: begin.epoch, sync, token: begin.token, records: 0, deviceState: [], deviceStateBytes: 0, deviceStateDone: false };
        } else if (type === MessageType.Pages) {
          if (!open) throw new ProtocolError('PAGES outside an epoch');
          const batch = parsePages(payload);
          if (batch.region !== 0) throw new ProtocolError(`PAGES of region ${batch.region}; replication carries region 0 only`);
          open.records += batch.recordCount;
          image.enqueue(batch.records, batch.recordCount, frame.release);
          await connection.guard(image.drainTo(MAX_QUEUED_BATCHES));
          continue;
        } else if (type === MessageType.DeviceState) {
          if (!open || open.deviceStateDone) throw new ProtocolError('DEVICE_STATE outside an epoch, or after its last chunk');
          const chunk = parseDeviceState(payload);
          open.deviceStateBytes += chunk.bytes.length;
          if (open.deviceStateBytes > MAX_DEVICE_STATE_BYTES) throw new CapacityError(`device state over ${MAX_DEVICE_STATE_BYTES} bytes`);
          open.deviceState.push(Buffer.from(chunk.bytes));
          open.deviceStateDone = chunk.last;
        } else if (type === MessageType.EpochEnd) {
          if (!open) throw new ProtocolError('EPOCH_END outside an epoch');
          const end = parseEpochEnd(payload);
          if (end.epoch !== open.epoch) throw new ProtocolError(`EPOCH_END ${end.epoch} ends epoch ${open.epoch}`);
          if (end.records !== open.records) throw new ProtocolError(`EPOCH_END counts ${end.records} records; ${open.records} arrived`);
          if (open.deviceState.length > 0 && !open.deviceStateDone) throw new ProtocolError('EPOCH_END before the device state\'s last chunk');
          await connection.guard(image.commit({
            epoch: end.epoch, digest: end.digest, deviceState: Buffer.concat(open.deviceState), token: open.token,
          }, !open.sync));
          lastEpoch = end.epoch;
          await connection.send(MessageType.EpochAck, encodeEpochNumber(end.epoch));
          if (open.sync) this.emit('synced', { epoch: end.epoch, pages: open.records });
          else this.emit('epoch', { epoch: end.epoch, digest: formatDigest(end.digest), pages: open.records });
          open = undefined;
        } else {
          throw new ProtocolError(`unexpected ${messageName(type)} from a replication primary`);
        }
        frame.release?.();
      }
    } finally {
      heartbeat.stop();
    }
  }
}
