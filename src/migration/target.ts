// The target side: listens, refuses any connection whose handshake fails (and keeps listening), then
// serves exactly one migration: applies verified pages, checks the region digest, persists, answers
// READY, and commits only on GO (docs/PROTOCOL.md has the state table).
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { performance } from 'node:perf_hooks';
import {
  AbortedError, AuthError, CapacityError, ChecksumError, HandshakeError, InvalidArgumentError, PagewireError, PeerError,
  ProtocolError, SwitchoverError, VersionError, asPagewireError,
} from '../errors.js';
import { PageBatchDecoder } from '../codec/page-batch-decoder.js';
import { regionDigest } from '../codec/page-hashes.js';
import { validatePageSize, validateRegionSize } from '../memory/region.js';
import { FramedConnection } from '../transport/framed-connection.js';
import { authenticateSource, checkPsk } from '../transport/psk-auth.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from '../transport/tls-psk.js';
import {
  FEATURE_PSK, HANDSHAKE_PAYLOAD_LIMIT, MAX_PAYLOAD_BYTES, MAX_VERSION, MIN_VERSION, MessageType, STOP_AND_COPY, SUPPORTED_FEATURES,
  TARGET_ZEROED,
  encodeRoundAck, encodeWelcome, expectEmpty, messageName, parseFinal, parseHello, parsePages, parseRoundMarker,
  type Hello,
} from '../wire/messages.js';
import type { TargetImage } from './target-image.js';

export interface TargetHooks {
  /** The device state the source sent, handed over on GO before resume(). */
  onDeviceState?(state: Buffer): Promise<void> | void;
  /** Start the workload on this side; called once the image is committed. */
  resume?(): Promise<void> | void;
}

export interface MigrationTargetOptions {
  image: TargetImage;
  hooks?: TargetHooks;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Longest silence from the source during a migration (default 30 s). */
  timeoutMs?: number;
  /** Longest wait for a complete HELLO after a connection opens (default 5 s). */
  handshakeTimeoutMs?: number;
  /**
   * The pre-shared key: with it, a source must prove it holds the same key before an image is opened or
   * a page accepted, and this target proves it in turn. Without it, only sources without a key connect.
   */
  psk?: Uint8Array;
  /** Accept only TLS 1.2 PSK connections under `psk`: every frame encrypted and authenticated. */
  tls?: boolean;
  signal?: AbortSignal;
}

export type TargetPhase = 'listening' | 'receiving' | 'persisting' | 'ready-sent' | 'committing' | 'completed' | 'failed';

/** 2^27 pages: 64 GiB in 512-byte pages, 512 GiB in 4 KiB pages; 1 GiB of page hashes. */
const MAX_TARGET_PAGES = 2 ** 27;
/** PAGES frames received but not yet applied, beyond which the target stops reading (about 4 MiB). */
const MAX_QUEUED_BATCHES = 4;

/** How far the switch-over got on this side: decides what a failure means. */
type SwitchoverStage = 'receiving' | 'ready-sent' | 'go-received' | 'committed';

export interface TargetSummary {
  status: 'completed' | 'failed';
  error?: string;
  errorCode?: string;
  migrationId: string;
  pageSize: number;
  pagesTotal: number;
  pagesApplied: number;
  rounds: number;
  bytesReceived: number;
  deviceStateBytes: number;
  /** Where the verified image was kept when the switch-over was left in doubt. */
  inDoubtImage?: string;
  totalTimeMs: number;
}

export interface TargetRoundEvent {
  round: number;
  pagesApplied: number;
  bytesReceived: number;
}

interface TargetEvents {
  refused: [error: PagewireError, remote: string];
  accepted: [hello: Hello, remote: string];
  phase: [TargetPhase];
  round: [TargetRoundEvent];
}

export class MigrationTarget extends EventEmitter<TargetEvents> {
  private readonly server: Server;
  private readonly options: Required<Omit<MigrationTargetOptions, 'signal' | 'hooks' | 'psk' | 'tls'>> &
    Pick<MigrationTargetOptions, 'signal' | 'psk' | 'tls'> & { hooks: TargetHooks };
  private active = false;
  private readonly sockets = new Set<Socket>();
  private settle!: { resolve(s: TargetSummary): void; reject(e: PagewireError): void };
  private phaseNow: TargetPhase = 'listening';
  private summaryNow: TargetSummary | undefined;
  /** Fails the migration in flight (set while one is served). */
  private interrupt: ((error: PagewireError) => void) | undefined;
  /** Settles when the one migration this target serves has ended. */
  readonly result: Promise<TargetSummary>;

  private constructor(options: MigrationTargetOptions) {
    super();
    this.options = {
      host: '127.0.0.1', port: 0, timeoutMs: 30_000, handshakeTimeoutMs: 5_000, hooks: {},
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as MigrationTarget['options'];
    const { psk, tls } = this.options;
    if (psk) checkPsk(psk);
    if (tls && !psk) throw new InvalidArgumentError('tls needs a pre-shared key (psk): TLS-PSK encrypts with it');
    this.result = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.result.catch(() => {});
    this.server = tls && psk ? this.tlsServer(psk) : createServer((socket) => this.onConnection(socket));
  }

  /** A TLS-PSK server: a client without the key (or without TLS) fails the TLS handshake and is refused. */
  private tlsServer(psk: Uint8Array): Server {
    const key = Buffer.from(psk);
    const server = createTlsServer({
      ...tlsPskOptions(), pskIdentityHint: TLS_PSK_IDENTITY,
      pskCallback: (_socket, identity) => (identity === TLS_PSK_IDENTITY ? key : null),
    }, (socket) => this.onConnection(socket));
    server.on('tlsClientError', (error, socket) => this.emit('refused', new AuthError(
      `TLS-PSK handshake failed (${(error as Error & { code?: string }).code ?? 'no TLS'}): the source does not hold this ` +
      'key or does not use --tls', { cause: error }), `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`));
    return server;
  }

  /** Starts listening; the returned target's `result` settles after one migration. */
  static async listen(options: MigrationTargetOptions): Promise<MigrationTarget> {
    const target = new MigrationTarget(options);
    await new Promise<void>((resolve, reject) => {
      target.server.once('error', reject);
      target.server.listen(target.options.port, target.options.host, () => {
        target.server.off('error', reject);
        resolve();
      });
    });
    const { signal } = target.options;
    if (signal) {
      const onAbort = () => target.stop(new AbortedError('target aborted'));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      target.result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
    return target;
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  get phase(): TargetPhase {
    return this.phaseNow;
  }

  /** The summary so far (undefined until a migration was accepted). */
  get metrics(): TargetSummary | undefined {
    return this.summaryNow && { ...this.summaryNow };
  }

  /** Stops listening; a migration in flight fails with `reason` and the image is discarded. */
  stop(reason: PagewireError = new AbortedError('target stopped')): void {
    this.server.close();
    if (!this.active) {
      for (const socket of this.sockets) socket.destroy();
      this.finish(reason);
    } else {
      this.interrupt?.(reason);
    }
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, this.options.timeoutMs);
    const remote = connection.remote;
    if (this.active) {
      void connection.sendErrorAndClose(new HandshakeError('this target is already serving a migration'));
      return;
    }
    this.handshake(connection).then((hello) => this.serve(connection, hello).catch((error: unknown) => {
      // serve() settles the migration itself; reaching here is a bug, which must not kill the process.
      this.finish(asPagewireError(error));
    }), (error: unknown) => {
      const refused = asPagewireError(error);
      this.emit('refused', refused, remote);
      void connection.sendErrorAndClose(refused);
    });
  }

  /** Reads and checks HELLO. */
  private async handshake(connection: FramedConnection): Promise<Hello> {
    let frame;
    try {
      frame = await connection.receive(this.options.handshakeTimeoutMs);
    } catch (error) {
      const e = asPagewireError(error);
      throw e instanceof ProtocolError ? new HandshakeError(`not a pagewire handshake: ${e.message}`) : e;
    }
    if (frame.type !== MessageType.Hello) throw new HandshakeError(`expected HELLO, received ${messageName(frame.type)}`);
    const hello = parseHello(frame.payload);
    if (hello.maxVersion < MIN_VERSION || hello.minVersion > MAX_VERSION) {
      throw new VersionError(
        `source speaks protocol versions ${hello.minVersion}..${hello.maxVersion}; this target speaks ${MIN_VERSION}..${MAX_VERSION}`);
    }
    let pages: number;
    try {
      validatePageSize(hello.pageSize);
      pages = validateRegionSize(hello.regionSize, hello.pageSize);
    } catch (error) {
      throw new HandshakeError(`invalid region in HELLO: ${(error as Error).message}`);
    }
    if (pages > MAX_TARGET_PAGES) {
      // Each page costs the target 8 bytes of hash in memory: bound what an unknown peer can ask for.
      throw new CapacityError(`region of ${pages} pages exceeds this target's limit of ${MAX_TARGET_PAGES}; use larger pages`);
    }
    const { psk, handshakeTimeoutMs } = this.options;
    const offersPsk = (hello.features & FEATURE_PSK) !== 0;
    if (psk && !offersPsk) throw new AuthError('this target requires a pre-shared key: give the source --psk-file with its key');
    if (!psk && offersPsk) throw new AuthError('this target has no pre-shared key: start it with --psk-file, or the source without one');
    if (psk) await authenticateSource(connection, psk, hello.migrationId, handshakeTimeoutMs);
    return hello;
  }

  private async serve(connection: FramedConnection, hello: Hello): Promise<void> {
    const { image, hooks, timeoutMs } = this.options;
    const started = performance.now();
    const migrationId = hello.migrationId.toString('hex');
    if (this.active) {
      const busy = new HandshakeError('this target is already serving a migration');
      this.emit('refused', busy, connection.remote);
      await connection.sendErrorAndClose(busy);
      return;
    }
    let store;
    let decoder;
    try {
      store = image.open({ regionSize: hello.regionSize, pageSize: hello.pageSize, migrationId });
      decoder = new PageBatchDecoder(store);
    } catch (error) {
      // A refusal before the handshake completes: keep listening for a source we can serve.
      const refused = asPagewireError(error);
      image.discard();
      this.emit('refused', refused, connection.remote);
      await connection.sendErrorAndClose(refused);
      return;
    }
    this.active = true;
    this.server.close();
    this.interrupt = (error) => connection.interrupt(error);
    const summary: TargetSummary = {
      status: 'failed', migrationId, pageSize: hello.pageSize, pagesTotal: store.pageCount, pagesApplied: 0,
      rounds: 0, bytesReceived: 0, deviceStateBytes: 0, totalTimeMs: 0,
    };
    this.summaryNow = summary;
    let deviceState = Buffer.alloc(0);
    let stage: SwitchoverStage = 'receiving';
    const refresh = () => {
      summary.pagesApplied = decoder.pagesApplied;
      summary.bytesReceived = connection.bytesRead;
      summary.totalTimeMs = performance.now() - started;
    };
    try {
      this.emit('accepted', hello, connection.remote);
      await connection.send(MessageType.Welcome, encodeWelcome({
        version: Math.min(hello.maxVersion, MAX_VERSION), features: hello.features & SUPPORTED_FEATURES,
        flags: image.zeroed ? TARGET_ZEROED : 0,
      }));
      connection.maxPayload = MAX_PAYLOAD_BYTES;
      this.setPhase('receiving');
      let round = 0;
      let inRound = false;
      let roundRecords = 0;
      let roundAnnounced = 0;
      let finalRound = false;
      for (;;) {
        const frame = await connection.receive(timeoutMs);
        if (frame.type === MessageType.RoundBegin) {
          const marker = parseRoundMarker(frame.payload, 'ROUND_BEGIN');
          if (inRound || marker.round !== round + 1) throw new ProtocolError(`ROUND_BEGIN ${marker.round} out of order after round ${round}`);
          if (finalRound) throw new ProtocolError(`ROUND_BEGIN ${marker.round} after the stop-and-copy round`);
          // A round sends each page at most once: a larger announcement can only be an attack, since a
          // 20-byte ZERO record costs this side a whole page of writing.
          if (marker.pages > store.pageCount) {
            throw new ProtocolError(`ROUND_BEGIN ${marker.round} announces ${marker.pages} pages, the region has ${store.pageCount}`);
          }
          round = marker.round;
          inRound = true;
          roundRecords = 0;
          roundAnnounced = marker.pages;
          finalRound = (marker.flags & STOP_AND_COPY) !== 0;
        } else if (frame.type === MessageType.Pages) {
          if (!inRound) throw new ProtocolError('PAGES outside a round');
          const batch = parsePages(frame.payload);
          if (roundRecords + batch.recordCount > roundAnnounced) {
            throw new ProtocolError(`round ${round} carries more page records than the ${roundAnnounced} its ROUND_BEGIN announced`);
          }
          decoder.enqueue(batch.records, batch.recordCount);
          roundRecords += batch.recordCount;
          // Every record writes a whole page, ZERO records included.
          image.noteWritten(batch.recordCount * store.pageSize);
          // Reading goes on while the pool thread decodes; past a few queued batches the socket waits.
          await decoder.drainTo(MAX_QUEUED_BATCHES);
        } else if (frame.type === MessageType.RoundEnd) {
          const marker = parseRoundMarker(frame.payload, 'ROUND_END');
          if (!inRound || marker.round !== round) throw new ProtocolError(`ROUND_END ${marker.round} does not close round ${round}`);
          if (marker.flags !== 0) throw new ProtocolError('ROUND_END carries flags');
          if (marker.pages !== roundRecords) {
            throw new ProtocolError(`round ${round} carried ${roundRecords} page records, the source says it sent ${marker.pages}`);
          }
          inRound = false;
          await decoder.settled();
          summary.rounds = round;
          // A pre-copy round is acknowledged once durable: the source's bandwidth figure then includes
          // the disk, and the fsync before READY (inside the downtime) only has the last round's pages.
          if (!finalRound) image.persist();
          await connection.send(MessageType.RoundAck, encodeRoundAck(round));
          refresh();
          this.emit('round', { round, pagesApplied: decoder.pagesApplied, bytesReceived: connection.bytesRead });
        } else if (frame.type === MessageType.DeviceState) {
          if (inRound) throw new ProtocolError('DEVICE_STATE inside a round');
          deviceState = Buffer.from(frame.payload);
          summary.deviceStateBytes = deviceState.length;
        } else if (frame.type === MessageType.Final) {
          if (inRound || !finalRound) throw new ProtocolError('FINAL before a complete stop-and-copy round');
          const final = parseFinal(frame.payload);
          if (final.round !== round) throw new ProtocolError(`FINAL names round ${final.round}, last round was ${round}`);
          const digest = regionDigest(decoder.heldHashes);
          if (digest !== final.regionDigest) {
            throw new ChecksumError('region digest differs from the source\'s: a page is missing or stale', -1);
          }
          break;
        } else {
          throw new ProtocolError(`unexpected ${messageName(frame.type)} during the pre-copy`);
        }
      }
      this.setPhase('persisting');
      image.persist();
      // Set before the write: once any byte of READY may be on the wire, the source may hand over.
      stage = 'ready-sent';
      this.setPhase('ready-sent');
      await connection.send(MessageType.Ready);
      expectEmpty(await connection.expect(MessageType.Go, timeoutMs), 'GO');
      stage = 'go-received';
      this.setPhase('committing');
      image.commit();
      stage = 'committed';
      // DONE means committed: the source's wait for it does not depend on how long the hooks take,
      // and a hook that fails afterwards is this side's to report.
      try {
        await connection.send(MessageType.Done);
        await connection.close();
      } catch {
        // This side has committed; a source that misses DONE reports the hand-over as unconfirmed.
      }
      await hooks.onDeviceState?.(deviceState);
      await hooks.resume?.();
      refresh();
      summary.status = 'completed';
      this.setPhase('completed');
      this.finish(undefined, summary);
    } catch (error) {
      let failure = asPagewireError(error);
      // No pool thread may still write into the image once this side reports the failure. A batch that
      // failed there came first, and explains more than what followed (often the peer hanging up).
      const decodeFailure = await decoder.settled().then(() => undefined, (e: unknown) => e);
      if (decodeFailure) failure = asPagewireError(decodeFailure);
      if (stage === 'receiving' || (stage === 'ready-sent' && failure instanceof PeerError)) {
        // Before READY, or the source said it gave up (it sends ERROR only before it hands over):
        // the source keeps running, so this side drops what it received.
        image.discard();
        await connection.sendErrorAndClose(failure);
      } else {
        const switchover = this.switchoverFailure(stage, failure, image);
        if (switchover.inDoubtImage) summary.inDoubtImage = switchover.inDoubtImage;
        failure = switchover;
        await connection.sendErrorAndClose(failure);
      }
      refresh();
      summary.error = failure.message;
      summary.errorCode = failure.code;
      this.setPhase('failed');
      this.finish(failure, summary);
    }
  }

  /** The exact state after the point where the source may have handed over. */
  private switchoverFailure(stage: SwitchoverStage, cause: PagewireError, image: TargetImage): SwitchoverError {
    if (stage === 'committed') {
      return new SwitchoverError(
        `the image is committed but the device-state or resume hook failed (${cause.message}); the source is ` +
        'handed over and paused: start the workload here by hand', 'committed-resume-failed', { cause });
    }
    let kept: string;
    try { kept = image.keepInDoubt(); } catch (keepError) { kept = `nowhere (${(keepError as Error).message})`; }
    return stage === 'go-received'
      ? new SwitchoverError(
        `GO received but committing the image failed (${cause.message}); the verified image is at ${kept} and the ` +
        'source is handed over and paused: repair this side and commit that image by hand', 'go-received-commit-failed',
        { cause, inDoubtImage: kept })
      : new SwitchoverError(
        `switch-over in doubt: READY was sent but GO never arrived (${cause.message}); the verified image is kept at ` +
        `${kept} and nothing was resumed here: check whether the source resumed before using it`, 'ready-sent-go-missing',
        { cause, inDoubtImage: kept });
  }

  private finish(error: PagewireError | undefined, summary?: TargetSummary): void {
    this.server.close();
    // Connections still in their handshake are not served any more.
    for (const socket of this.sockets) socket.destroy();
    if (error) this.settle.reject(error);
    else this.settle.resolve(summary!);
  }

  private setPhase(phase: TargetPhase): void {
    this.phaseNow = phase;
    this.emit('phase', phase);
  }
}
