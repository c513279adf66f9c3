// The migration's connections to the target: stream 0 says HELLO (to begin, or to resume), the key and
// the session secret authenticate it, and the extra streams JOIN it. Every connection opened, joined or
// not, is held here so that a failure or an abort reaches all of them, and so are the bytes they wrote.
import { performance } from 'node:perf_hooks';
import { AbortedError, ProtocolError, asPagewireError, type PagewireError } from '../errors.js';
import { openConnection } from '../transport/connect.js';
import { FramedConnection } from '../transport/framed-connection.js';
import type { FrameKeys } from '../transport/frame-auth.js';
import { authenticateTarget } from '../transport/psk-auth.js';
import { SessionKeyPair, joinProof, resumeKey } from '../transport/session-secret.js';
import {
  FEATURE_PSK, FEATURE_REPLICATION, FEATURE_RESUME, FEATURE_SEED, HANDSHAKE_PAYLOAD_LIMIT, MAX_PAYLOAD_BYTES, MAX_VERSION, MIN_VERSION, MessageType, SESSION_KEY_BYTES, TARGET_SEEDED,
  encodeHello, encodeJoinHead, expectEmpty, parseHeld, parseWelcome, type Welcome,
} from '../wire/messages.js';
import type { SourceSettings } from '../migration/source-options.js';
import { streamsWanted } from './stripe-planner.js';

/** What the target holds when a migration resumes: the last round it completed and every page's hash. */
export interface Held {
  lastRound: number;
  /** Each region's page hashes, in region order. */
  hashes: BigUint64Array[];
}

/** An opened set: the target's WELCOME, every stream's connection (stream 0 first), and on a resume HELD. */
export interface OpenedSet {
  welcome: Welcome;
  streams: FramedConnection[];
  held?: Held;
}

export class ConnectionSet {
  private readonly sessionKeys = SessionKeyPair.generate();
  /** Agreed at the first WELCOME: a resume and every JOIN prove it (docs/PROTOCOL.md, section 3). */
  private sessionSecret: Buffer | undefined;
  /** Connections opened so far, joined or not (all of them are closed on failure). */
  private readonly connections: FramedConnection[] = [];
  /** Bytes written to connections given up for a resume. */
  private bytesOfClosedConnections = 0;
  /** Set once the migration fails: a stream still connecting then closes at once. */
  private failing = false;
  private readonly wantedStreams: number;
  /** The shortest round trip seen (HELLO to WELCOME, JOIN to JOINED; at connect and each resume). */
  private shortestRoundTripMs = Infinity;

  constructor(private readonly settings: SourceSettings, private readonly migrationId: Buffer) {
    this.wantedStreams = streamsWanted(settings.streams, Math.max(...settings.regions.map(({ region }) => region.pageCount)));
  }

  /** The control connection: HELLO, ROUND_ACK and the switch-over travel on it. */
  get control(): FramedConnection {
    return this.connections[0]!;
  }

  /** Every connection opened since the last resume, stream 0 first. */
  get all(): readonly FramedConnection[] {
    return this.connections;
  }

  /** The stop rule's measure of what each round trip of the switch-over will cost. */
  get roundTripMs(): number {
    return this.shortestRoundTripMs;
  }

  /** Every byte written to the target, on connections open or given up. */
  bytesWritten(): number {
    let bytes = this.bytesOfClosedConnections;
    for (const connection of this.connections) bytes += connection.bytesWritten;
    return bytes;
  }

  /** Wakes every connection's waits with `error` (an abort, or another stream's failure). */
  interruptAll(error: PagewireError): void {
    for (const connection of this.connections) connection.interrupt(error);
  }

  /** From here a connection still being opened is closed at once rather than joined. */
  markFailing(): void {
    this.failing = true;
  }

  /** Fails every connection, to open a new set for a resume; their bytes stay counted. */
  closeForResume(error: PagewireError): void {
    for (const connection of this.connections) connection.fail(error);
    this.bytesOfClosedConnections = this.bytesWritten();
    this.connections.length = 0;
  }

  /**
   * Connects, says HELLO (to begin, or to resume), authenticates, and opens the extra streams. On a
   * resume, and to a standby (`features` FEATURE_REPLICATION), also returns what the target holds.
   */
  async open(resume: boolean, features = 0): Promise<OpenedSet> {
    const { settings } = this;
    const [first, ...extra] = settings.regions.map(({ region }) => ({ pageSize: region.pageSize, regionSize: region.byteLength }));
    const connection = await this.connect();
    // A first HELLO of a migration takes a seeded target: its HELD then follows WELCOME.
    const offersSeed = !resume && (features & FEATURE_REPLICATION) === 0;
    const helloSent = performance.now();
    const hello = encodeHello({
      minVersion: MIN_VERSION, maxVersion: MAX_VERSION, features: (settings.psk ? FEATURE_PSK : 0) | (resume ? FEATURE_RESUME : 0) | (offersSeed ? FEATURE_SEED : 0) | features,
      ...first!, extraRegions: extra, migrationId: this.migrationId,
      extraStreams: this.wantedStreams - 1,
      // A resume proves the secret it already holds rather than agreeing on a new one.
      sessionKey: resume ? Buffer.alloc(SESSION_KEY_BYTES) : this.sessionKeys.publicKey,
    });
    await connection.send(MessageType.Hello, hello);
    const replicating = (features & FEATURE_REPLICATION) !== 0;
    // A standby's HELD follows its WELCOME at once, maybe in the same read: its frames must pass.
    const heldMayFollow = replicating || offersSeed;
    if (heldMayFollow && !settings.psk) connection.maxPayload = MAX_PAYLOAD_BYTES;
    if (resume) {
      // HELD follows WELCOME at once, possibly in the same read as the proof: its 8 MiB frames must pass.
      this.authenticated(connection, await authenticateTarget(connection, resumeKey(this.sessionSecret!, settings.psk), hello,
        settings.timeoutMs, 'this migration\'s session secret'), MAX_PAYLOAD_BYTES);
    } else if (settings.psk) {
      this.authenticated(connection, await authenticateTarget(connection, settings.psk, hello, settings.timeoutMs),
        heldMayFollow ? MAX_PAYLOAD_BYTES : undefined);
    }
    const welcome = parseWelcome(await connection.expect(MessageType.Welcome, settings.timeoutMs));
    this.noteRoundTrip(performance.now() - helloSent);
    if (!resume) this.sessionSecret = this.sessionKeys.secretWith(welcome.sessionKey, hello, welcome.sessionKey);
    if (welcome.extraStreams > this.wantedStreams - 1) {
      throw new ProtocolError(`target offered ${welcome.extraStreams} extra streams, ${this.wantedStreams - 1} were asked for`);
    }
    if (replicating && (welcome.features & FEATURE_REPLICATION) === 0) {
      throw new ProtocolError('the peer is a migration target, not a standby: start it with `pagewire standby`');
    }
    connection.maxPayload = MAX_PAYLOAD_BYTES;
    const seeded = offersSeed && (welcome.flags & TARGET_SEEDED) !== 0;
    const held = resume || replicating || seeded ? await this.receiveHeld(connection) : undefined;
    // Every connection is open and authenticated before the rounds: nothing of this is left for the pause.
    const streams = [connection, ...await this.joinStreams(welcome.extraStreams, welcome.sessionKey)];
    return held ? { welcome, streams, held } : { welcome, streams };
  }

  /**
   * Waits for all; on the first failure, or a failure of the control connection (where the target's
   * ERROR arrives), interrupts every connection so the others stop too, and throws it.
   */
  async allOrInterrupt<T>(work: Promise<T>[]): Promise<T[]> {
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

  /**
   * An exchange's time, as a round trip: one, or two with the key's challenge and proof. The shortest is
   * the stop rule's measure of what each round trip of the switch-over will cost.
   */
  private noteRoundTrip(exchangeMs: number): void {
    this.shortestRoundTripMs = Math.min(this.shortestRoundTripMs, exchangeMs / (this.settings.psk ? 2 : 1));
  }

  private async connect(): Promise<FramedConnection> {
    const { settings } = this;
    const tls = settings.tls && settings.psk ? { psk: settings.psk }
      : settings.tlsCertificates ? { certificates: settings.tlsCertificates } : undefined;
    const socket = await openConnection(settings.endpoint, settings.timeoutMs, settings.signal, tls);
    const connection = new FramedConnection(socket, HANDSHAKE_PAYLOAD_LIMIT, settings.timeoutMs, 'the target');
    if (this.failing) {
      socket.destroy();
      throw new AbortedError('the migration failed while this stream connected');
    }
    this.connections.push(connection);
    if (settings.signal?.aborted) throw new AbortedError('migration aborted while connecting', { cause: settings.signal.reason });
    return connection;
  }

  /** HELD: every page's hash as the target holds it, region by region, in parts that follow each other. */
  private async receiveHeld(connection: FramedConnection): Promise<Held> {
    const { regions, timeoutMs } = this.settings;
    let lastRound = 0;
    const hashes = regions.map(({ region }) => new BigUint64Array(region.pageCount));
    for (const [index, held] of hashes.entries()) {
      for (let first = 0; first < held.length;) {
        const part = parseHeld(await connection.expect(MessageType.Held, timeoutMs));
        if (part.region !== index || part.firstPage !== first || part.hashes.length === 0 || first + part.hashes.length > held.length) {
          throw new ProtocolError(`HELD covers pages ${part.firstPage}..+${part.hashes.length} of region ${part.region}, ` +
            `expected region ${index} from page ${first}`);
        }
        held.set(part.hashes, first);
        first += part.hashes.length;
        lastRound = part.lastRound;
      }
    }
    return { lastRound, hashes };
  }

  /** Opens the extra connections, each joining this migration. */
  private async joinStreams(extra: number, welcomeKey: Buffer): Promise<FramedConnection[]> {
    const { settings } = this;
    const joins: Promise<FramedConnection>[] = [];
    for (let stream = 1; stream <= extra; stream++) {
      joins.push((async () => {
        const connection = await this.connect();
        const joinSent = performance.now();
        const head = encodeJoinHead({ version: MAX_VERSION, stream, migrationId: this.migrationId });
        const join = Buffer.concat([head, joinProof(this.sessionSecret!, welcomeKey, head)]);
        await connection.send(MessageType.Join, join);
        if (settings.psk) this.authenticated(connection, await authenticateTarget(connection, settings.psk, join, settings.timeoutMs));
        expectEmpty(await connection.expect(MessageType.Joined, settings.timeoutMs), 'JOINED');
        // JOIN to JOINED involves no storage on the target, unlike HELLO to WELCOME (the image opens there).
        this.noteRoundTrip(performance.now() - joinSent);
        connection.maxPayload = MAX_PAYLOAD_BYTES;
        return connection;
      })());
    }
    return this.allOrInterrupt(joins);
  }

  /**
   * After the AUTH exchange: with a pre-shared key and no TLS, every later frame of the connection is
   * tagged and checked; then (with the payload limit raised to `maxPayload` if given) what the target
   * sent after its proof is decoded.
   */
  private authenticated(connection: FramedConnection, keys: FrameKeys, maxPayload?: number): void {
    // Only pagewire's own TLS stands in for the tags, as on the target.
    if (this.settings.psk && !this.settings.tls && !this.settings.tlsCertificates) connection.authenticateFrames(keys);
    if (maxPayload !== undefined) connection.maxPayload = maxPayload;
    connection.release();
  }
}
