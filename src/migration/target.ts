// The target side: listens, refuses any connection whose handshake fails (and keeps listening), then
// serves exactly one migration: applies verified pages, checks the region digest, persists, answers
// READY, and commits only on GO (docs/PROTOCOL.md has the state table).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, createServer as createTlsServer } from 'node:tls';
import { performance } from 'node:perf_hooks';
import {
  AbortedError, AuthError, ConnectionError, CapacityError, ChecksumError, HandshakeError, InvalidArgumentError, ListenError, PagewireError, PeerError,
  ProtocolError, SwitchoverError, TimeoutError, VersionError, asPagewireError,
} from '../errors.js';
import { PageBatchDecoder } from '../codec/page-batch-decoder.js';
import { formatDigest, regionDigest } from '../codec/page-hashes.js';
import { validatePageSize, validateRegionSize } from '../memory/region.js';
import { FramedConnection, PEER_REASON_GRACE_MS, READ_AHEAD_BYTES } from '../transport/framed-connection.js';
import type { FrameKeys } from '../transport/frame-auth.js';
import { authenticateSource } from '../transport/psk-auth.js';
import { SessionKeyPair, joinProof, resumeKey } from '../transport/session-secret.js';
import { tlsServerOptions, type TlsCertificates } from '../transport/tls-certs.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from '../transport/tls-psk.js';
import {
  FEATURE_PSK, FEATURE_RESUME, HANDSHAKE_PAYLOAD_LIMIT, HELD_PAGES_PER_FRAME, MAX_PAYLOAD_BYTES, MAX_VERSION, MIN_VERSION, MessageType,
  SESSION_KEY_BYTES, SUPPORTED_FEATURES,
  TARGET_ZEROED,
  encodeHeld, encodeReady, encodeRoundAck, encodeWelcome, expectEmpty, messageName, parseFinal, parseHello, parseJoin,
  type Hello, type Join,
} from '../wire/messages.js';
import { STRIPE_PAGES } from '../wire/streams.js';
import { ExtraStreamReader, StreamReceiver, type RoundEnd } from './stream-receiver.js';
import { HookRunner } from './hook-runner.js';
import { targetSettings, type TargetSettings } from './target-options.js';
import { RoundFlusher, type RegionOffer, type TargetImage } from './target-image.js';

/** Each hook is bounded by `hookTimeoutMs` and given an AbortSignal that aborts when the target gives up on it. */
export interface TargetHooks {
  /** The device state the source sent, handed over on GO before resume(). */
  onDeviceState?(state: Buffer, signal: AbortSignal): Promise<void> | void;
  /** Start the workload on this side; called once the image is committed. */
  resume?(signal: AbortSignal): Promise<void> | void;
}

export interface MigrationTargetOptions {
  /**
   * Where the received region goes: an image, or a function that makes one from the source's offer (its
   * region and page size; throw a CapacityError to refuse it). With `serve: 'many'` a function is called
   * for each migration, an image is opened again for each.
   */
  image: TargetImage | ((offer: RegionOffer) => TargetImage | Promise<TargetImage>);
  hooks?: TargetHooks;
  /** TCP (the default, on 127.0.0.1): the address to listen on. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Listen on this Unix domain socket instead of TCP. */
  path?: string;
  /**
   * Or take connections from a server the embedder made and listens with (a net.Server, or a tls.Server
   * whose options are the embedder's): the target adds its listener and removes it when done. Sources
   * may also be handed in one by one with `accept()`.
   */
  server?: Server;
  /** 'many': serve one migration after another until stop(), as a daemon; each ends with a 'migration' event (default 'one'). */
  serve?: 'one' | 'many';
  /** Longest silence from the source during a migration (default 30 s). */
  timeoutMs?: number;
  /** Longest wait for a complete HELLO after a connection opens (default 5 s). */
  handshakeTimeoutMs?: number;
  /** Longest wait for each hook (default 30 s); a hook that takes longer fails the migration as `committed-resume-failed`. */
  hookTimeoutMs?: number;
  /**
   * The pre-shared key: with it, a source must prove it holds the same key before an image is opened or
   * a page accepted, and this target proves it in turn. Without it, only sources without a key connect.
   */
  psk?: Uint8Array;
  /** Accept only TLS 1.2 PSK connections under `psk`: every frame encrypted and authenticated. */
  tls?: boolean;
  /**
   * Or accept only TLS 1.3 with this certificate and key; with `ca`, sources must present a client
   * certificate it signed (mutual TLS), which authenticates them without a pre-shared key.
   */
  tlsCertificates?: TlsCertificates;
  /**
   * Listen beyond loopback with nothing that authenticates the source (no `psk`, no `tlsCertificates`
   * with a `ca`). Refused unless set: anyone who reaches the address could write the image.
   */
  insecure?: boolean;
  /** Connections one migration may use, the first included (default 16, at most 64). */
  maxStreams?: number;
  /**
   * How long a migration whose connections broke during the pre-copy waits for its source to resume it
   * (default 10 s; 0: fail at once). The image and the page hashes are kept meanwhile.
   */
  resumeWindowMs?: number;
  signal?: AbortSignal;
}

export type TargetPhase = 'listening' | 'receiving' | 'suspended' | 'ready-sent' | 'committing' | 'completed' | 'failed';

/** 2^27 pages: 64 GiB in 512-byte pages, 512 GiB in 4 KiB pages; 1 GiB of page hashes. */
const MAX_TARGET_PAGES = 2 ** 27;
/** Each stream's share of the read-ahead budget, at least this (eight frames of the default size). */
const MIN_READ_AHEAD_BYTES = 8 * 1024 * 1024;

/** The extra connections a migration being set up still waits for. */
interface Joining {
  migrationId: Buffer;
  expected: number;
  joined: Map<number, FramedConnection>;
  /** What each JOIN must prove: the session secret, over this connection set's WELCOME key. */
  secret: Buffer;
  welcomeKey: Buffer;
  complete(): void;
}

/** A migration's session: agreed at its first WELCOME, proven by every resume and JOIN. */
interface Session {
  secret: Buffer;
  /** WELCOME's session key field: this side's X25519 public key. */
  welcomeKey: Buffer;
}

type FirstFrame = { kind: 'hello'; hello: Hello; session?: Session } | { kind: 'join'; join: Join };

interface Resuming {
  hello: Hello;
  resume(connection: FramedConnection, hello: Hello): void;
}

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
  /** TCP connections that carried pages (in the last session). */
  streams: number;
  /** Times the source came back after the connections broke. */
  resumes: number;
  bytesReceived: number;
  deviceStateBytes: number;
  /** The region digest of the committed image (16 hex digits; '' until FINAL was verified). */
  regionDigest: string;
  /** Where the verified image was kept when the switch-over was left in doubt. */
  inDoubtImage?: string;
  /** GO to committed: making the last round durable and renaming the image into place (after the downtime). */
  commitMs: number;
  totalTimeMs: number;
}

export interface TargetRoundEvent {
  round: number;
  pagesApplied: number;
  bytesReceived: number;
}

/** MigrationTarget's events and their arguments (`remote` is the peer's HOST:PORT). */
export interface TargetEvents {
  /** A connection's handshake failed; the target keeps listening. */
  refused: [error: PagewireError, remote: string];
  /** A source's HELLO was accepted: the migration it offers has begun. */
  accepted: [hello: Hello, remote: string];
  /** The target entered a phase. */
  phase: [TargetPhase];
  /** A round was applied and acknowledged. */
  round: [TargetRoundEvent];
  /** The source came back after the connections broke (the count so far). */
  resumed: [resumes: number, remote: string];
  /** A migration ended (with `serve: 'many'`, each one; the error when it failed). */
  migration: [summary: TargetSummary | undefined, error: PagewireError | undefined];
}

export class MigrationTarget extends EventEmitter<TargetEvents> {
  private readonly server: Server;
  /** Kept from listen(): the server's own address() is null once it has closed; undefined for a Unix socket or an embedder's server. */
  private boundAddress: AddressInfo | undefined;
  private readonly options: TargetSettings;
  /** The server connections come from, and whether this target made it (and so listens and closes it). */
  private readonly ownServer: boolean;
  private readonly onServerConnection = (socket: Socket) => this.onConnection(socket);
  /** Set by stop(): nothing more is served. */
  private stopped = false;
  private active = false;
  private joining: Joining | undefined;
  /** The migration waiting for its source to come back, while it is suspended. */
  private resuming: Resuming | undefined;
  /** The HELLO of the migration being served (a resume must match it), and its session secret. */
  private served: Hello | undefined;
  private sessionSecret: Buffer | undefined;
  /** A resume that arrived before this side noticed the old connections were gone. */
  private earlyResume: { connection: FramedConnection; hello: Hello } | undefined;
  /** Whether the session being served could still be resumed (pre-copy rounds only). */
  private sessionResumable: () => boolean = () => false;
  private readonly sockets = new Set<Duplex>();
  private settle!: { resolve(s: TargetSummary): void; reject(e: PagewireError): void };
  private phaseNow: TargetPhase = 'listening';
  private summaryNow: TargetSummary | undefined;
  /** Fails the migration in flight (set while one is served). */
  private interrupt: ((error: PagewireError) => void) | undefined;
  /** Settles when the one migration this target serves has ended. */
  readonly result: Promise<TargetSummary>;

  private constructor(options: MigrationTargetOptions) {
    super();
    this.options = targetSettings(options);
    const { psk, tls, tlsCertificates, server } = this.options;
    this.result = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.result.catch(() => {});
    this.ownServer = server === undefined;
    this.server = server ?? (tls && psk ? this.tlsPskServer(psk)
      : tlsCertificates ? this.tlsCertServer(tlsCertificates) : createServer(this.onServerConnection));
    if (server) server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', this.onServerConnection);
  }

  /** Serves a connection the embedder opened (an in-process pair, a vsock): as if it had been accepted. */
  accept(stream: Duplex): void {
    if (this.stopped) {
      stream.destroy();
      return;
    }
    this.onConnection(stream);
  }

  /** No more connections from the server; an embedder's server is left listening, without our listener. */
  private stopListening(): void {
    if (this.ownServer) this.server.close();
    else this.server.off(this.server instanceof TlsServer ? 'secureConnection' : 'connection', this.onServerConnection);
  }

  /** Stops listening for new sources once this migration needs no more connections, unless serving many. */
  private doneAccepting(): void {
    if (this.options.serve === 'one') this.stopListening();
  }

  /** A TLS 1.3 server with a certificate: a source that does not trust it, or lacks a client certificate, is refused. */
  private tlsCertServer(certificates: TlsCertificates): Server {
    const server = createTlsServer(tlsServerOptions(certificates), (socket) => this.onConnection(socket));
    server.on('tlsClientError', (error, socket) => this.emit('refused', new AuthError(
      `TLS handshake failed (${(error as Error & { code?: string }).code ?? error.message}): the source does not trust this ` +
      'certificate, has no client certificate this target\'s CA signed, or does not use TLS', { cause: error }),
    `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`));
    return server;
  }

  /** A TLS-PSK server: a client without the key (or without TLS) fails the TLS handshake and is refused. */
  private tlsPskServer(psk: Uint8Array): Server {
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
    const { host, port, path, signal } = target.options;
    if (target.ownServer) {
      const where = path === undefined ? `${host}:${port}` : `unix:${path}`;
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error) => reject(new ListenError(`cannot listen on ${where}: ${error.message}`, { cause: error }));
        target.server.once('error', onError);
        const listening = () => {
          target.server.off('error', onError);
          resolve();
        };
        if (path !== undefined) target.server.listen(path, listening);
        else target.server.listen(port, host, listening);
      });
    }
    const bound = target.server.address();
    if (bound !== null && typeof bound === 'object') target.boundAddress = bound;
    if (signal) {
      const onAbort = () => target.stop(new AbortedError('target aborted', { cause: signal.reason }));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      target.result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
    return target;
  }

  /** The TCP address it listens on (also after the migration); a Unix socket or an embedder's server has none: InvalidArgumentError. */
  get address(): AddressInfo {
    if (!this.boundAddress) throw new InvalidArgumentError('this target does not listen on TCP (it uses a Unix socket path or the embedder\'s server)');
    return this.boundAddress;
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
    this.stopped = true;
    this.stopListening();
    if (!this.active) {
      for (const socket of this.sockets) socket.destroy();
      this.finish(reason);
    } else {
      this.interrupt?.(reason);
    }
  }

  private onConnection(socket: Duplex): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, this.options.timeoutMs, 'a source');
    const remote = connection.remote;
    // While a migration runs, only its extra streams, and its source coming back, get a hearing.
    if (this.active && !this.joining && !this.resuming && this.options.resumeWindowMs === 0) {
      void connection.sendErrorAndClose(new HandshakeError('this target is already serving a migration'));
      return;
    }
    this.handshake(connection).then((first) => {
      if (first.kind === 'join') {
        this.admit(connection, first.join);
        return;
      }
      if ((first.hello.features & FEATURE_RESUME) !== 0) {
        this.resumeWith(connection, first.hello);
        return;
      }
      this.serve(connection, first.hello, first.session!).catch((error: unknown) => {
        // serve() settles the migration itself; reaching here is a bug, which must not kill the process.
        this.finish(asPagewireError(error));
      });
    }, (error: unknown) => {
      const refused = asPagewireError(error);
      this.emit('refused', refused, remote);
      void connection.sendErrorAndClose(refused);
    });
  }

  /** Reads and checks HELLO, or the JOIN of an extra stream of the migration being set up. */
  private async handshake(connection: FramedConnection): Promise<FirstFrame> {
    let frame;
    try {
      frame = await connection.receive(this.options.handshakeTimeoutMs);
    } catch (error) {
      const e = asPagewireError(error);
      throw e instanceof ProtocolError ? new HandshakeError(`not a pagewire handshake: ${e.message}`) : e;
    }
    if (frame.type === MessageType.Join) return { kind: 'join', join: await this.checkJoin(connection, frame.payload) };
    if (frame.type !== MessageType.Hello) throw new HandshakeError(`expected HELLO, received ${messageName(frame.type)}`);
    const hello = parseHello(frame.payload);
    checkVersions(hello.minVersion, hello.maxVersion);
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
    if ((hello.features & FEATURE_RESUME) !== 0) {
      // Only the source that began the session holds its secret: a resume proves it before anything
      // of the live migration is touched (a third party may have read the migration id).
      if (!this.resumable(hello) || !this.sessionSecret) throw notResumable();
      this.authenticated(connection, await authenticateSource(connection, resumeKey(this.sessionSecret, psk), frame.payload, handshakeTimeoutMs,
        `the secret of the session it asks to resume${psk ? ' and this target\'s pre-shared key' : ''}`));
      return { kind: 'hello', hello };
    }
    if (psk) this.authenticated(connection, await authenticateSource(connection, psk, frame.payload, handshakeTimeoutMs));
    const keys = SessionKeyPair.generate();
    const session = { secret: keys.secretWith(hello.sessionKey, frame.payload, keys.publicKey), welcomeKey: keys.publicKey };
    return { kind: 'hello', hello, session };
  }

  /** With a pre-shared key and no TLS, every later frame of the connection is tagged and checked. */
  private authenticated(connection: FramedConnection, keys: FrameKeys): void {
    if (this.options.psk && !connection.encrypted) connection.authenticateFrames(keys);
  }

  /**
   * A JOIN names the migration being set up and a stream not yet joined, proves the session secret,
   * and proves the key.
   */
  private async checkJoin(connection: FramedConnection, payload: Buffer): Promise<Join> {
    const join = parseJoin(payload);
    checkVersions(join.version, join.version);
    const joining = this.joining;
    if (!joining || !timingSafeEqual(joining.migrationId, join.migrationId)) {
      throw new HandshakeError('JOIN names no migration this target is setting up');
    }
    if (!timingSafeEqual(join.proof, joinProof(joining.secret, joining.welcomeKey, join.head))) {
      throw new AuthError('JOIN does not prove the session secret: it does not come from the source of this migration');
    }
    if (join.stream < 1 || join.stream > joining.expected || joining.joined.has(join.stream)) {
      throw new HandshakeError(`JOIN names stream ${join.stream}; streams 1..${joining.expected} may join, once each`);
    }
    const { psk, handshakeTimeoutMs } = this.options;
    if (psk) this.authenticated(connection, await authenticateSource(connection, psk, payload, handshakeTimeoutMs));
    return join;
  }

  /** Whether `hello` names the migration being served, which can still be resumed. */
  private resumable(hello: Hello): boolean {
    const target = this.resuming?.hello ?? (this.sessionResumable() ? this.served : undefined);
    return target !== undefined && timingSafeEqual(target.migrationId, hello.migrationId) && target.regionSize === hello.regionSize &&
      target.pageSize === hello.pageSize;
  }

  private admit(connection: FramedConnection, join: Join): void {
    const joining = this.joining;
    // The migration may have failed, or the stream joined, while this one authenticated.
    if (!joining || joining.joined.has(join.stream) || !joining.migrationId.equals(join.migrationId)) {
      void connection.sendErrorAndClose(new HandshakeError('JOIN came too late: the migration is not waiting for it'));
      return;
    }
    joining.joined.set(join.stream, connection);
    // The source sends this stream's pages only after JOINED, so Node has read nothing past it.
    connection.readNatively();
    connection.send(MessageType.Joined).then(() => {
      connection.maxPayload = MAX_PAYLOAD_BYTES;
      if (joining.joined.size === joining.expected) joining.complete();
    }, () => {
      // The stream may join again on a new connection.
      if (joining.joined.get(join.stream) === connection) joining.joined.delete(join.stream);
    });
  }

  /**
   * A resume HELLO that proved the session secret: handed to the suspended migration it names; if that
   * migration has not yet noticed its connections are gone (they are half-open: its source, the only
   * holder of the secret, has given them up), they are given up now, and the resume waits for it.
   */
  private resumeWith(connection: FramedConnection, hello: Hello): void {
    // The migration may have moved on while the resume proved itself.
    if (!this.resumable(hello)) {
      const refused = notResumable();
      this.emit('refused', refused, connection.remote);
      void connection.sendErrorAndClose(refused);
      return;
    }
    if (this.resuming) {
      this.resuming.resume(connection, hello);
      return;
    }
    this.earlyResume?.connection.fail(new ConnectionError('a newer resume replaced this one'));
    this.earlyResume = { connection, hello };
    this.interrupt?.(new ConnectionError('the source reconnected to resume: its old connections are gone'));
  }

  /** Waits up to resumeWindowMs for the source to resume the migration `hello` began. */
  private awaitResume(hello: Hello, lost: PagewireError): Promise<{ connection: FramedConnection; hello: Hello }> {
    const early = this.earlyResume;
    this.earlyResume = undefined;
    if (early) return Promise.resolve(early);
    const { resumeWindowMs } = this.options;
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.resuming = undefined;
      };
      const timer = setTimeout(() => {
        done();
        reject(new TimeoutError(`the connection broke (${lost.message}) and the source did not resume within ${resumeWindowMs} ms`));
      }, resumeWindowMs);
      this.resuming = { hello, resume: (connection, again) => { done(); resolve({ connection, hello: again }); } };
      // stop() while suspended ends the wait.
      this.interrupt = (error) => { done(); reject(error); };
    });
  }

  /**
   * Waits until the extra streams WELCOME granted have joined (within the handshake timeout), while
   * still hearing the control connection: a source's ERROR there, or stop(), ends the wait at once.
   */
  private async awaitJoins(control: FramedConnection, migrationId: Buffer, expected: number, session: Session): Promise<FramedConnection[]> {
    if (expected === 0) return [];
    const joined = new Map<number, FramedConnection>();
    let timer: NodeJS.Timeout | undefined;
    try {
      await control.guard(new Promise<void>((resolve, reject) => {
        this.joining = { migrationId, expected, joined, ...session, complete: resolve };
        const { handshakeTimeoutMs } = this.options;
        timer = setTimeout(() => reject(new TimeoutError(
          `only ${joined.size} of ${expected} extra streams joined within ${handshakeTimeoutMs} ms`)), handshakeTimeoutMs);
      }));
    } catch (error) {
      for (const connection of joined.values()) connection.fail(asPagewireError(error));
      throw error;
    } finally {
      clearTimeout(timer);
      this.joining = undefined;
    }
    return [...joined.keys()].sort((a, b) => a - b).map((stream) => joined.get(stream)!);
  }

  private async serve(connection: FramedConnection, hello: Hello, session: Session): Promise<void> {
    const { hooks, timeoutMs } = this.options;
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
    let image: TargetImage | undefined;
    // Taken before the image opens (off the event loop): no second HELLO may open it meanwhile, and a
    // stop() meanwhile ends this migration once the image is open.
    this.active = true;
    let stoppedWhileOpening: PagewireError | undefined;
    this.interrupt = (error) => { stoppedWhileOpening = error; };
    try {
      const offer = { regionSize: hello.regionSize, pageSize: hello.pageSize, migrationId };
      const given = this.options.image;
      image = typeof given === 'function' ? await given(offer) : given;
      store = await image.open(offer);
      decoder = new PageBatchDecoder(store);
    } catch (error) {
      // A refusal before the handshake completes: keep listening for a source we can serve.
      this.active = false;
      this.interrupt = undefined;
      const refused = asPagewireError(error);
      image?.discard();
      this.emit('refused', refused, connection.remote);
      await connection.sendErrorAndClose(refused);
      // A stop() that came while the image was opening ends the target, refusal or not.
      if (stoppedWhileOpening) this.finish(stoppedWhileOpening);
      return;
    }
    if (stoppedWhileOpening) {
      image.discard();
      await connection.sendErrorAndClose(stoppedWhileOpening);
      this.finish(stoppedWhileOpening);
      return;
    }
    this.served = hello;
    this.sessionSecret = session.secret;
    const { resumeWindowMs } = this.options;
    let extras: ExtraStreamReader[] = [];
    let failedStream: PagewireError | undefined;
    const interruptSession = (error: PagewireError) => {
      connection.interrupt(error);
      for (const extra of extras) extra.receiver.connection.interrupt(error);
    };
    this.interrupt = interruptSession;
    const summary: TargetSummary = {
      status: 'failed', migrationId, pageSize: hello.pageSize, pagesTotal: store.pageCount, pagesApplied: 0,
      rounds: 0, streams: 1, resumes: 0, bytesReceived: 0, deviceStateBytes: 0, regionDigest: '', commitMs: 0, totalTimeMs: 0,
    };
    this.summaryNow = summary;
    let deviceState = Buffer.alloc(0);
    let stage: SwitchoverStage = 'receiving';
    const heldHashes = decoder.heldHashes;
    let decoders = [decoder];
    let pagesBefore = 0;
    let bytesBefore = 0;
    const bytesRead = () => extras.reduce((n, extra) => n + extra.receiver.connection.bytesRead, bytesBefore + connection.bytesRead);
    const pagesApplied = () => decoders.reduce((n, d) => n + d.pagesApplied, pagesBefore);
    const refresh = () => {
      summary.pagesApplied = pagesApplied();
      summary.bytesReceived = bytesRead();
      summary.totalTimeMs = performance.now() - started;
    };
    let verifyMicros = 0;
    const flusher = new RoundFlusher(image);
    /** After GO, making the image durable failed: it cannot be trusted (a failed fsync may have lost pages). */
    let notDurable = false;
    const noteWritten = (bytes: number) => image.noteWritten(bytes);
    let control: StreamReceiver | undefined;
    try {
      this.emit('accepted', hello, connection.remote);
      // One session per connection set: the first, then one per resume after the connections broke.
      for (let resumed = false; ; resumed = true) {
        failedStream = undefined;
        // No more streams than stripes, nor than this target's limit: each costs it read buffers.
        const extraStreams = Math.min(hello.extraStreams, this.options.maxStreams - 1, Math.ceil(store.pageCount / STRIPE_PAGES) - 1);
        const streams = 1 + extraStreams;
        summary.streams = streams;
        // Listening goes on for the extra streams, and for a resume while one is possible.
        if (extraStreams === 0 && resumeWindowMs === 0) this.doneAccepting();
        try {
          // The source sends nothing more before WELCOME: the addon takes over reading at a frame boundary.
          connection.readNatively();
          await connection.send(MessageType.Welcome, encodeWelcome({
            version: Math.min(hello.maxVersion, MAX_VERSION), extraStreams, features: hello.features & SUPPORTED_FEATURES,
            flags: image.zeroed ? TARGET_ZEROED : 0, sessionKey: session.welcomeKey,
          }));
          connection.maxPayload = MAX_PAYLOAD_BYTES;
          if (resumed) {
            // What this side holds, so that the source sends again only what differs.
            for (let first = 0; first < store.pageCount; first += HELD_PAGES_PER_FRAME) {
              const count = Math.min(HELD_PAGES_PER_FRAME, store.pageCount - first);
              await connection.send(MessageType.Held, encodeHeld(summary.rounds, first, heldHashes.subarray(first, first + count)));
            }
          }
          const joined = await this.awaitJoins(connection, hello.migrationId, extraStreams, session);
          for (const stream of [connection, ...joined]) stream.readAheadBytes = Math.max(MIN_READ_AHEAD_BYTES, READ_AHEAD_BYTES / streams);
          if (resumeWindowMs === 0) this.doneAccepting();
          this.setPhase('receiving');
          const lastRound = summary.rounds;
          extras = joined.map((extra, i) => {
            const extraDecoder = new PageBatchDecoder(store, heldHashes);
            decoders.push(extraDecoder);
            const receiver = new StreamReceiver(i + 1, streams, extra, extraDecoder, store.pageCount, noteWritten, store.pageSize, lastRound);
            return new ExtraStreamReader(receiver, timeoutMs, (error) => {
              // The first stream to fail explains the failure; the control connection stops with it.
              failedStream ??= error;
              connection.interrupt(error);
            });
          });
          control = new StreamReceiver(0, streams, connection, decoders[0]!, store.pageCount, noteWritten, store.pageSize, lastRound);
          const current = control;
          // A resume HELLO may retire this session only before its stop-and-copy round.
          this.sessionResumable = () => resumeWindowMs > 0 && control === current && !current.inFinalRound &&
            !extras.some((extra) => extra.receiver.inFinalRound);
          let last: RoundEnd | undefined;
          for (;;) {
            const frame = await connection.receive(timeoutMs);
            if (frame.type === MessageType.DeviceState) {
              if (control.inProgress) throw new ProtocolError('DEVICE_STATE inside a round');
              deviceState = Buffer.from(frame.payload);
              summary.deviceStateBytes = deviceState.length;
              continue;
            }
            if (frame.type === MessageType.Final) {
              if (control.inProgress || !last?.final) throw new ProtocolError('FINAL before a complete stop-and-copy round');
              const final = parseFinal(frame.payload);
              if (final.round !== last.round) throw new ProtocolError(`FINAL names round ${final.round}, last round was ${last.round}`);
              const verifyStarted = performance.now();
              const digest = regionDigest(heldHashes);
              verifyMicros = (performance.now() - verifyStarted) * 1000;
              if (digest !== final.regionDigest) {
                throw new ChecksumError('region digest differs from the source\'s: a page is missing or stale', -1);
              }
              summary.regionDigest = formatDigest(digest);
              break;
            }
            const end = await control.take(frame);
            if (!end) continue;
            // Every stream must end the same round the same way before it counts as received.
            for (const other of await connection.guard(Promise.all(extras.map((extra) => extra.roundEnded())))) {
              if (other.round !== end.round || other.final !== end.final) {
                throw new ProtocolError(`streams disagree on round ${end.round}: one ended round ${other.round}${other.final ? ' (stop-and-copy)' : ''}`);
              }
            }
            last = end;
            summary.rounds = end.round;
            if (!end.final) flusher.flush();
            await connection.send(MessageType.RoundAck, encodeRoundAck(end.round));
            for (const extra of extras) extra.acknowledge();
            refresh();
            this.emit('round', { round: end.round, pagesApplied: pagesApplied(), bytesReceived: bytesRead() });
          }
          break;
        } catch (error) {
          const first = asPagewireError(error);
          let lost = first instanceof PeerError ? first : failedStream ?? first;
          // A source that gave up says why on the control connection before its other connections close.
          if (lost instanceof ConnectionError) lost = await connection.peerError(PEER_REASON_GRACE_MS) ?? lost;
          const inFinalRound = control?.inFinalRound === true || extras.some((extra) => extra.receiver.inFinalRound);
          // Only a broken or silent network during the pre-copy is worth waiting out: the source has not
          // paused, and everything applied so far is verified and recorded in heldHashes.
          if (resumeWindowMs === 0 || inFinalRound || !(lost instanceof ConnectionError || lost instanceof TimeoutError)) throw error;
          // The session's failure is told in the suspension's outcome, not as the next one's cause.
          failedStream = undefined;
          for (const extra of extras) {
            extra.stop();
            extra.receiver.connection.fail(lost);
          }
          await Promise.all(extras.map((extra) => extra.done));
          for (const d of decoders) await d.settled();
          connection.fail(lost);
          pagesBefore = pagesApplied();
          bytesBefore = bytesRead();
          extras = [];
          control = undefined;
          this.setPhase('suspended');
          const back = await this.awaitResume(hello, lost);
          this.interrupt = interruptSession;
          connection = back.connection;
          hello = back.hello;
          // This connection set's JOINs prove the secret over a WELCOME key of their own.
          session = { secret: session.secret, welcomeKey: randomBytes(SESSION_KEY_BYTES) };
          decoders = [new PageBatchDecoder(store, heldHashes)];
          summary.resumes += 1;
          this.emit('resumed', summary.resumes, connection.remote);
        }
      }
      this.sessionResumable = () => false;
      // A round that could not be made durable fails the migration before READY, not after GO.
      flusher.check();
      this.doneAccepting();
      // READY as soon as the image is verified: the source holds the state at the pause point until DONE,
      // so making the last round durable waits for GO, outside the downtime (PROTOCOL.md, section 6).
      // Set before the write: once any byte of READY may be on the wire, the source may hand over.
      stage = 'ready-sent';
      this.setPhase('ready-sent');
      await connection.send(MessageType.Ready, encodeReady({ verifyMicros, persistMicros: 0 }));
      expectEmpty(await connection.expect(MessageType.Go, timeoutMs), 'GO');
      stage = 'go-received';
      // Handed over: an abort now would only keep DONE from the source, not undo anything.
      this.interrupt = () => {};
      this.setPhase('committing');
      const commitStarted = performance.now();
      try {
        await flusher.settled();
        await image.persist();
      } catch (error) {
        notDurable = true;
        throw error;
      }
      await image.commit();
      summary.commitMs = performance.now() - commitStarted;
      stage = 'committed';
      // DONE means committed: the source's wait for it does not depend on how long the hooks take,
      // and a hook that fails afterwards is this side's to report.
      try {
        await connection.send(MessageType.Done);
        await connection.close();
      } catch {
        // This side has committed; a source that misses DONE reports the hand-over as unconfirmed.
      }
      // After the commit: an abort no longer undoes anything, so only the timeout bounds them.
      const hookRunner = new HookRunner(this.options.hookTimeoutMs);
      const { onDeviceState, resume } = hooks;
      if (onDeviceState) await hookRunner.run('onDeviceState', (signal) => onDeviceState(deviceState, signal));
      if (resume) await hookRunner.run('resume', (signal) => resume(signal));
      refresh();
      summary.status = 'completed';
      this.setPhase('completed');
      this.finish(undefined, summary);
    } catch (error) {
      this.sessionResumable = () => false;
      let failure = asPagewireError(error);
      // An extra stream that broke first explains more than the interruption it caused here; but a
      // connection loss may only be the source tearing down after saying why on this connection.
      if (!(failure instanceof PeerError)) failure = failedStream ?? failure;
      if (failure instanceof ConnectionError && extras.length > 0) {
        failure = await connection.peerError(PEER_REASON_GRACE_MS) ?? failure;
      }
      // The control connection tells the source why; the others close once it has heard it.
      for (const extra of extras) {
        extra.stop();
        extra.receiver.connection.interrupt(failure);
      }
      await Promise.all(extras.map((extra) => extra.done));
      // No pool thread may still write into the image once this side reports the failure. A batch that
      // failed there came first, and explains more than what followed (often the peer hanging up).
      const decodeFailures = await Promise.all(decoders.map((d) => d.settled().then(() => undefined, (e: unknown) => e)));
      const decodeFailure = decodeFailures.find((e) => e !== undefined);
      if (decodeFailure) failure = asPagewireError(decodeFailure);
      if (stage === 'receiving' || (stage === 'ready-sent' && failure instanceof PeerError)) {
        // Before READY, or the source said it gave up (it sends ERROR only before it hands over):
        // the source keeps running, so this side drops what it received.
        image.discard();
        await connection.sendErrorAndClose(failure);
      } else {
        const switchover = await this.switchoverFailure(stage, failure, image, notDurable);
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
  private async switchoverFailure(stage: SwitchoverStage, cause: PagewireError, image: TargetImage,
    notDurable: boolean): Promise<SwitchoverError> {
    if (stage === 'go-received' && notDurable) {
      image.discard();
      return new SwitchoverError(
        `GO received but the image could not be made durable (${cause.message}); it was discarded, since a failed ` +
        'fsync may have lost pages. The source is handed over and paused at the pause point: resume the workload there',
        'go-received-commit-failed', { cause });
    }
    if (stage === 'committed') {
      return new SwitchoverError(
        `the image is committed but the device-state or resume hook failed (${cause.message}); the source is ` +
        'handed over and paused: start the workload here by hand', 'committed-resume-failed', { cause });
    }
    let kept: string;
    try { kept = await image.keepInDoubt(); } catch (keepError) { kept = `nowhere (${(keepError as Error).message})`; }
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
    if (summary || this.active) this.emit('migration', summary, error);
    if (this.options.serve === 'many' && !this.stopped) {
      // A daemon: ready for the next source. Connections in their handshake may be it.
      this.active = false;
      this.served = undefined;
      this.sessionSecret = undefined;
      this.earlyResume = undefined;
      this.sessionResumable = () => false;
      this.interrupt = undefined;
      this.setPhase('listening');
      return;
    }
    this.stopListening();
    // Connections still in their handshake are not served any more.
    for (const socket of this.sockets) socket.destroy();
    if (error) this.settle.reject(error);
    else if (this.options.serve === 'many') this.settle.reject(new AbortedError('target stopped'));
    else this.settle.resolve(summary!);
  }

  private setPhase(phase: TargetPhase): void {
    this.phaseNow = phase;
    this.emit('phase', phase);
  }
}

function notResumable(): HandshakeError {
  return new HandshakeError('HELLO asks to resume a migration this target is not serving');
}

function checkVersions(min: number, max: number): void {
  if (max < MIN_VERSION || min > MAX_VERSION) {
    throw new VersionError(`source speaks protocol versions ${min}..${max}; this target speaks ${MIN_VERSION}..${MAX_VERSION}`);
  }
}
