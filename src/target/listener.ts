// Where the target's connections come from (its own TCP, TLS or Unix listener, an embedder's server, or
// accept()), and the admission of each one's first frame: a HELLO (versions, region, key, session secret)
// or a resume HELLO (the session secret's proof), or a JOIN (checked against the JOIN registry). What is
// admitted is handed to the orchestrator; what is refused is told to the source and reported.
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, createServer as createTlsServer } from 'node:tls';
import {
  AuthError, CapacityError, HandshakeError, ListenError, ProtocolError, VersionError, asPagewireError, type PagewireError,
} from '../errors.js';
import type { TargetSettings } from '../migration/target-options.js';
import { validatePageSize, validateRegionSize } from '../memory/region.js';
import type { FrameKeys } from '../transport/frame-auth.js';
import { FramedConnection } from '../transport/framed-connection.js';
import { authenticateSource } from '../transport/psk-auth.js';
import { SessionKeyPair, resumeKey } from '../transport/session-secret.js';
import { tlsServerOptions, type TlsCertificates } from '../transport/tls-certs.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from '../transport/tls-psk.js';
import {
  FEATURE_PSK, FEATURE_REPLICATION, FEATURE_RESUME, HANDSHAKE_PAYLOAD_LIMIT, MAX_VERSION, MIN_VERSION, MessageType, messageName, parseHello, parseJoin,
  type Hello, type Join,
} from '../wire/messages.js';
import { joinTooLate, unknownJoin, type JoinRegistry } from './join-registry.js';
import { regionShapes } from './region-images.js';
import type { ResumableSession } from './target-state.js';

/** 2^27 pages, all regions together: 64 GiB in 512-byte pages, 512 GiB in 4 KiB pages; 1 GiB of page hashes. */
const MAX_TARGET_PAGES = 2 ** 27;

/** A migration's session: agreed at its first WELCOME, proven by every resume and JOIN. */
export interface Session {
  secret: Buffer;
  /** WELCOME's session key field: this side's X25519 public key. */
  welcomeKey: Buffer;
}

/** What the orchestrator's state says about new connections, and where admitted ones go. */
export interface TargetAdmission {
  /** Whether a connection gets no hearing at all: a migration runs that waits for neither an extra stream nor a resume. */
  refusesConnections(): boolean;
  /** The registry of the migration waiting for its extra streams. */
  joins(): JoinRegistry | undefined;
  /** The session a resume HELLO naming `hello` may resume now. */
  resumable(hello: Hello): ResumableSession | undefined;
  /** An authenticated HELLO that begins a migration. */
  begin(connection: FramedConnection, hello: Hello, session: Session): void;
  /** A resume HELLO that proved the session secret. */
  resume(connection: FramedConnection, hello: Hello): void;
  refused(error: PagewireError, remote: string): void;
}

type FirstFrame = { kind: 'hello'; hello: Hello; session: Session } | { kind: 'resume'; hello: Hello } |
  { kind: 'join'; join: Join; registry: JoinRegistry };

/** What the listener needs of a target's (or a standby's) settings. */
export type ListenerSettings = Pick<TargetSettings, 'psk' | 'tls' | 'tlsCertificates' | 'server' | 'host' | 'port' | 'path' |
  'timeoutMs' | 'handshakeTimeoutMs'>;

export function notResumable(): HandshakeError {
  return new HandshakeError('HELLO asks to resume a migration this target is not serving');
}

export class TargetListener {
  private readonly server: Server;
  /** Kept from listen(): the server's own address() is null once it has closed; undefined for a Unix socket or an embedder's server. */
  private boundAddress: AddressInfo | undefined;
  /** Whether this listener made the server (and so listens and closes it). */
  private readonly ownServer: boolean;
  private readonly onServerConnection = (socket: Socket) => this.onConnection(socket);
  /** Set by close(): nothing more is accepted. */
  private closedNow = false;
  private readonly sockets = new Set<Duplex>();

  /** `replication`: this listener is a standby's, and admits only a replication primary's HELLO (and no other). */
  constructor(private readonly options: ListenerSettings, private readonly admission: TargetAdmission, private readonly replication = false) {
    const { psk, tls, tlsCertificates, server } = options;
    this.ownServer = server === undefined;
    this.server = server ?? (tls && psk ? this.tlsPskServer(psk)
      : tlsCertificates ? this.tlsCertServer(tlsCertificates) : createServer(this.onServerConnection));
    if (server) server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', this.onServerConnection);
  }

  /** Listens on the address or path of the options (an embedder's server already listens). */
  async listen(): Promise<void> {
    const { host, port, path } = this.options;
    if (this.ownServer) {
      const where = path === undefined ? `${host}:${port}` : `unix:${path}`;
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error) => reject(new ListenError(`cannot listen on ${where}: ${error.message}`, { cause: error }));
        this.server.once('error', onError);
        const listening = () => {
          this.server.off('error', onError);
          resolve();
        };
        if (path !== undefined) this.server.listen(path, listening);
        else this.server.listen(port, host, listening);
      });
    }
    const bound = this.server.address();
    if (bound !== null && typeof bound === 'object') this.boundAddress = bound;
  }

  /** The TCP address listened on (also after closing); undefined for a Unix socket or an embedder's server. */
  get address(): AddressInfo | undefined {
    return this.boundAddress;
  }

  get closed(): boolean {
    return this.closedNow;
  }

  /** A connection the embedder opened, served as if it had been accepted. */
  accept(stream: Duplex): void {
    if (this.closedNow) {
      stream.destroy();
      return;
    }
    this.onConnection(stream);
  }

  /** No more connections from the server; an embedder's server is left listening, without our listener. */
  stopListening(): void {
    if (this.ownServer) this.server.close();
    else this.server.off(this.server instanceof TlsServer ? 'secureConnection' : 'connection', this.onServerConnection);
  }

  /** Stops listening and accepting for good. */
  close(): void {
    this.closedNow = true;
    this.stopListening();
  }

  /** Destroys every connection still open, those in their handshake included. */
  destroyConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** A TLS 1.3 server with a certificate: a source that does not trust it, or lacks a client certificate, is refused. */
  private tlsCertServer(certificates: TlsCertificates): Server {
    const server = createTlsServer(tlsServerOptions(certificates), (socket) => this.onConnection(socket));
    server.on('tlsClientError', (error, socket) => this.admission.refused(new AuthError(
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
    server.on('tlsClientError', (error, socket) => this.admission.refused(new AuthError(
      `TLS-PSK handshake failed (${(error as Error & { code?: string }).code ?? 'no TLS'}): the source does not hold this ` +
      'key or does not use --tls', { cause: error }), `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`));
    return server;
  }

  private onConnection(socket: Duplex): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, this.options.timeoutMs, 'a source');
    const remote = connection.remote;
    // While a migration runs, only its extra streams, and its source coming back, get a hearing.
    if (this.admission.refusesConnections()) {
      void connection.sendErrorAndClose(new HandshakeError(this.replication ? 'this standby is already serving a primary'
        : 'this target is already serving a migration'));
      return;
    }
    this.handshake(connection).then((first) => {
      if (first.kind === 'join') {
        // Only into the connection set whose WELCOME the JOIN proved: a resume may have begun another
        // while its key exchange ran.
        const joins = this.admission.joins();
        if (joins && joins === first.registry) joins.admit(connection, first.join);
        else void connection.sendErrorAndClose(joinTooLate());
      } else if (first.kind === 'resume') {
        this.admission.resume(connection, first.hello);
      } else {
        this.admission.begin(connection, first.hello, first.session);
      }
    }, (error: unknown) => {
      const refused = asPagewireError(error);
      this.admission.refused(refused, remote);
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
    if (frame.type === MessageType.Join) return { kind: 'join', ...await this.checkJoin(connection, frame.payload) };
    if (frame.type !== MessageType.Hello) throw new HandshakeError(`expected HELLO, received ${messageName(frame.type)}`);
    const hello = parseHello(frame.payload);
    checkVersions(hello.minVersion, hello.maxVersion);
    if (((hello.features & FEATURE_REPLICATION) !== 0) !== this.replication) {
      throw new HandshakeError(this.replication
        ? 'this is a standby: it takes replication from `pagewire replicate`, not a migration'
        : 'this is a migration target: a replication primary needs `pagewire standby`');
    }
    const shapes = regionShapes(hello);
    let pages = 0;
    for (const [i, { pageSize, regionSize }] of shapes.entries()) {
      try {
        validatePageSize(pageSize);
        pages += validateRegionSize(regionSize, pageSize);
      } catch (error) {
        throw new HandshakeError(`invalid region${i > 0 ? ` ${i}` : ''} in HELLO: ${(error as Error).message}`);
      }
    }
    if (pages > MAX_TARGET_PAGES) {
      // Each page costs the target 8 bytes of hash in memory: bound what an unknown peer can ask for.
      const what = shapes.length > 1 ? `${shapes.length} regions of ${pages} pages in all exceed` : `region of ${pages} pages exceeds`;
      throw new CapacityError(`${what} this target's limit of ${MAX_TARGET_PAGES}; use larger pages`);
    }
    const { psk, handshakeTimeoutMs } = this.options;
    const offersPsk = (hello.features & FEATURE_PSK) !== 0;
    if (psk && !offersPsk) throw new AuthError('this target requires a pre-shared key: give the source --psk-file with its key');
    if (!psk && offersPsk) throw new AuthError('this target has no pre-shared key: start it with --psk-file, or the source without one');
    if ((hello.features & FEATURE_RESUME) !== 0) {
      // Only the source that began the session holds its secret: a resume proves it before anything
      // of the live migration is touched (a third party may have read the migration id).
      const session = this.admission.resumable(hello);
      if (!session) throw notResumable();
      this.authenticated(connection, await authenticateSource(connection, resumeKey(session.secret, psk), frame.payload, handshakeTimeoutMs,
        `the secret of the session it asks to resume${psk ? ' and this target\'s pre-shared key' : ''}`));
      return { kind: 'resume', hello };
    }
    if (psk) this.authenticated(connection, await authenticateSource(connection, psk, frame.payload, handshakeTimeoutMs));
    const keys = SessionKeyPair.generate();
    const session = { secret: keys.secretWith(hello.sessionKey, frame.payload, keys.publicKey), welcomeKey: keys.publicKey };
    return { kind: 'hello', hello, session };
  }

  /** With a pre-shared key and no TLS, every later frame of the connection is tagged and checked. */
  private authenticated(connection: FramedConnection, keys: FrameKeys): void {
    // Only pagewire's own TLS stands in for the tags: an embedder's TLS server may not authenticate anyone.
    if (this.options.psk && !this.options.tls && !this.options.tlsCertificates) connection.authenticateFrames(keys);
  }

  /**
   * A JOIN names the migration being set up and a stream not yet joined, proves the session secret, and
   * proves the key; returns it with the registry it was checked against.
   */
  private async checkJoin(connection: FramedConnection, payload: Buffer): Promise<{ join: Join; registry: JoinRegistry }> {
    const join = parseJoin(payload);
    checkVersions(join.version, join.version);
    const registry = this.admission.joins();
    if (!registry) throw unknownJoin();
    registry.check(join);
    const { psk, handshakeTimeoutMs } = this.options;
    if (psk) this.authenticated(connection, await authenticateSource(connection, psk, payload, handshakeTimeoutMs));
    return { join, registry };
  }
}

function checkVersions(min: number, max: number): void {
  if (max < MIN_VERSION || min > MAX_VERSION) {
    throw new VersionError(`source speaks protocol versions ${min}..${max}; this target speaks ${MIN_VERSION}..${MAX_VERSION}`);
  }
}
