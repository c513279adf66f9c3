// One migration's rounds on the target, over one connection set after another: WELCOME (and after a
// resume, HELD: what this side holds), the JOINs of the extra streams, the stream receivers and the
// barrier that ends each round on every stream, DEVICE_STATE, and FINAL's digest of every region. A
// connection set that breaks during the pre-copy is suspended until its source resumes; the switch-over
// follows.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ChecksumError, ConnectionError, PeerError, ProtocolError, TimeoutError, asPagewireError, type PagewireError } from '../errors.js';
import { PageBatchDecoder } from '../codec/page-batch-decoder.js';
import { formatDigest } from '../codec/page-hashes.js';
import type { TargetRoundEvent, TargetSummary } from '../migration/target.js';
import type { TargetSettings } from '../migration/target-options.js';
import type { RoundFlusher } from './round-flusher.js';
import type { RegionImages } from './region-images.js';
import { HookRunner } from '../migration/hook-runner.js';
import { ExtraStreamReader, StreamReceiver, type RoundEnd, type StreamRegion } from '../migration/stream-receiver.js';
import { FramedConnection, PEER_REASON_GRACE_MS, READ_AHEAD_BYTES } from '../transport/framed-connection.js';
import {
  FEATURE_SEED, MAX_DEVICE_STATE_BYTES, MAX_PAYLOAD_BYTES, MAX_VERSION, MessageType, SESSION_KEY_BYTES, SUPPORTED_FEATURES, TARGET_SEEDED, TARGET_ZEROED,
  encodeRoundAck, encodeWelcome, parseDeviceState, parseFinal, type Hello,
} from '../wire/messages.js';
import { STRIPE_PAGES } from '../wire/streams.js';
import { sendHeld } from './held-frames.js';
import { JoinRegistry } from './join-registry.js';
import type { Session } from './listener.js';
import type { ResumableSession, ResumeRequest, TargetState } from './target-state.js';

/** Each stream's share of the read-ahead budget, at least this (eight frames of the default size). */
const MIN_READ_AHEAD_BYTES = 8 * 1024 * 1024;

/** What the session asks of the target that owns the state. */
export interface SessionHost {
  enter(state: TargetState): void;
  /** Suspends the migration until its source resumes it (or the resume window ends: TimeoutError). */
  awaitResume(session: ResumableSession, lost: PagewireError): Promise<ResumeRequest>;
  /** This migration needs no more connections: stop listening, unless serving many. */
  doneAccepting(): void;
  round(event: TargetRoundEvent): void;
  resumed(resumes: number, remote: string): void;
}

export class TargetSession {
  readonly summary: TargetSummary;
  /** The DEVICE_STATE frames received, in order: the device state is all of them. */
  private readonly deviceStateChunks: Buffer[] = [];
  private deviceStateComplete = false;
  private deviceStateLoading: Promise<PagewireError | undefined> | undefined;
  private readonly stopLoading = new AbortController();
  private loadRunner: HookRunner | undefined;
  /** How long checking FINAL's digest took. */
  verifyMicros = 0;

  /**
   * The deviceStateReceived hook, run once the whole device state is in: as soon as its last chunk
   * arrives (often before the last pages), else at FINAL. Settles with its failure, if any.
   */
  deviceStateLoaded(): Promise<PagewireError | undefined> {
    if (!this.deviceStateComplete) this.completeDeviceState();
    return this.deviceStateLoading!;
  }

  /** The migration failed: a deviceStateReceived still running is told to stop, and waited for (within its timeout). */
  async stopDeviceStateLoad(reason: PagewireError): Promise<void> {
    this.stopLoading.abort(reason);
    await this.deviceStateLoading;
    // The hook given up on may still run: wait for it to settle (at most hookTimeoutMs).
    await this.loadRunner?.settled();
  }

  private completeDeviceState(): void {
    this.deviceStateComplete = true;
    const { deviceStateReceived } = this.settings.hooks;
    const state = this.deviceState;
    const signals = [this.stopLoading.signal, ...(this.settings.signal ? [this.settings.signal] : [])];
    this.loadRunner = new HookRunner(this.settings.hookTimeoutMs, AbortSignal.any(signals));
    this.deviceStateLoading = deviceStateReceived
      ? this.loadRunner.run('deviceStateReceived', (signal) => deviceStateReceived(state, signal))
        .then(() => undefined, (error: PagewireError) => error)
      : Promise.resolve(undefined);
  }

  /** The device state the source sent (empty without DEVICE_STATE). */
  get deviceState(): Buffer {
    if (this.deviceStateChunks.length !== 1) this.deviceStateChunks.splice(0, Infinity, Buffer.concat(this.deviceStateChunks));
    return this.deviceStateChunks[0]!;
  }
  private controlConnection: FramedConnection;
  private hello: Hello;
  /** This connection set's WELCOME key: its JOINs prove the secret over it. */
  private keys: Session;
  /** Every decoder of the current connection set: one per stream and region. */
  private decoders: PageBatchDecoder[] = [];
  private extras: ExtraStreamReader[] = [];
  private control: StreamReceiver | undefined;
  /** The first extra stream to fail: it explains the failure better than the interruption it caused on the control connection. */
  private failedStream: PagewireError | undefined;
  /** Pages and bytes of the connection sets before the last resume. */
  private pagesBefore = 0;
  private bytesBefore = 0;

  constructor(private readonly host: SessionHost, private readonly settings: TargetSettings, private readonly images: RegionImages,
    private readonly flusher: RoundFlusher, connection: FramedConnection, private readonly served: Hello, session: Session,
    private readonly started: number) {
    this.controlConnection = connection;
    this.hello = served;
    this.keys = session;
    const { regions } = images;
    this.summary = {
      status: 'failed', migrationId: served.migrationId.toString('hex'), regions: regions.length, pageSize: served.pageSize,
      pagesTotal: regions.reduce((n, r) => n + r.store.pageCount, 0), pagesApplied: 0, rounds: 0, streams: 1, resumes: 0,
      bytesReceived: 0, deviceStateBytes: 0, regionDigest: '', prepareMs: 0, commitMs: 0, totalTimeMs: 0,
    };
  }

  /** The control connection of the current connection set. */
  get connection(): FramedConnection {
    return this.controlConnection;
  }

  /** Fails every connection of the current set. */
  readonly interrupt = (error: PagewireError): void => {
    this.controlConnection.interrupt(error);
    for (const extra of this.extras) extra.receiver.connection.interrupt(error);
  };

  /** Updates the summary's counters. */
  refresh(): void {
    this.summary.pagesApplied = this.pagesApplied();
    this.summary.bytesReceived = this.bytesRead();
    this.summary.totalTimeMs = performance.now() - this.started;
  }

  /**
   * Receives rounds until FINAL's region digest matches the pages held; resumes the connection set when it
   * breaks in the pre-copy. The target has entered `welcoming` with this session's interrupt.
   */
  async receive(): Promise<void> {
    const { resumeWindowMs } = this.settings;
    // One connection set after another: the first, then one per resume after the connections broke.
    for (let resumed = false; ; resumed = true) {
      this.failedStream = undefined;
      try {
        await this.receiveOn(resumed);
        return;
      } catch (error) {
        const first = asPagewireError(error);
        let lost = first instanceof PeerError ? first : this.failedStream ?? first;
        // A source that gave up says why on the control connection before its other connections close.
        if (lost instanceof ConnectionError) lost = await this.controlConnection.peerError(PEER_REASON_GRACE_MS) ?? lost;
        // Only a broken or silent network during the pre-copy is worth waiting out: the source has not
        // paused, and everything applied so far is verified and recorded in each region's heldHashes.
        // Device state comes only once the source has paused: past that, nothing resumes either.
        if (resumeWindowMs === 0 || this.inFinalRound() || this.deviceStateChunks.length > 0 ||
          !(lost instanceof ConnectionError || lost instanceof TimeoutError)) throw error;
        // The connection set's failure is told in the suspension's outcome, not as the next one's cause.
        this.failedStream = undefined;
        for (const extra of this.extras) {
          extra.stop();
          extra.receiver.connection.fail(lost);
        }
        await Promise.all(this.extras.map((extra) => extra.done));
        for (const d of this.decoders) await d.settled();
        this.controlConnection.fail(lost);
        this.pagesBefore = this.pagesApplied();
        this.bytesBefore = this.bytesRead();
        this.extras = [];
        this.control = undefined;
        const back = await this.host.awaitResume(this.resumableSession(), lost);
        this.host.enter({ kind: 'welcoming', interrupt: this.interrupt });
        this.controlConnection = back.connection;
        this.hello = back.hello;
        // This connection set's JOINs prove the secret over a WELCOME key of their own.
        this.keys = { secret: this.keys.secret, welcomeKey: randomBytes(SESSION_KEY_BYTES) };
        this.decoders = [];
        this.summary.resumes += 1;
        this.host.resumed(this.summary.resumes, back.connection.remote);
      }
    }
  }

  /**
   * Why the migration failed, once every stream has stopped and no pool thread writes into the image any
   * more: a failed batch came first and explains more than what followed (often the peer hanging up).
   */
  async failure(error: unknown): Promise<PagewireError> {
    let failure = asPagewireError(error);
    // An extra stream that broke first explains more than the interruption it caused here; but a
    // connection loss may only be the source tearing down after saying why on this connection.
    if (!(failure instanceof PeerError)) failure = this.failedStream ?? failure;
    if (failure instanceof ConnectionError && this.extras.length > 0) {
      failure = await this.controlConnection.peerError(PEER_REASON_GRACE_MS) ?? failure;
    }
    // The control connection tells the source why; the others close once it has heard it.
    for (const extra of this.extras) {
      extra.stop();
      extra.receiver.connection.interrupt(failure);
    }
    await Promise.all(this.extras.map((extra) => extra.done));
    const decodeFailures = await Promise.all(this.decoders.map((d) => d.settled().then(() => undefined, (e: unknown) => e)));
    const decodeFailure = decodeFailures.find((e) => e !== undefined);
    return decodeFailure ? asPagewireError(decodeFailure) : failure;
  }

  /** One connection set: WELCOME, HELD after a resume, the joins, then rounds until FINAL. */
  private async receiveOn(resumed: boolean): Promise<void> {
    const { resumeWindowMs, timeoutMs, maxStreams, handshakeTimeoutMs } = this.settings;
    const { summary, hello } = this;
    const { regions } = this.images;
    const connection = this.controlConnection;
    // No more streams than the largest region's stripes, nor than this target's limit: each costs it read buffers.
    const largest = Math.max(...regions.map((r) => r.store.pageCount));
    const extraStreams = Math.min(hello.extraStreams, maxStreams - 1, Math.ceil(largest / STRIPE_PAGES) - 1);
    const streams = 1 + extraStreams;
    summary.streams = streams;
    // Listening goes on for the extra streams, and for a resume while one is possible.
    if (extraStreams === 0 && resumeWindowMs === 0) this.host.doneAccepting();
    // The source sends nothing more before WELCOME: the addon takes over reading at a frame boundary.
    connection.readNatively();
    // A seeded image (a receive started from a snapshot) is described by HELD, to a source that takes it.
    const seeded = !resumed && this.images.seeded && (hello.features & FEATURE_SEED) !== 0;
    await connection.send(MessageType.Welcome, encodeWelcome({
      version: Math.min(hello.maxVersion, MAX_VERSION), extraStreams, features: hello.features & SUPPORTED_FEATURES,
      flags: (this.images.zeroed ? TARGET_ZEROED : 0) | (seeded ? TARGET_SEEDED : 0), sessionKey: this.keys.welcomeKey,
    }));
    connection.maxPayload = MAX_PAYLOAD_BYTES;
    if (resumed || seeded) {
      // What this side holds, so that the source sends (again) only what differs: region by region.
      await sendHeld(connection, summary.rounds, regions.map(({ heldHashes }) => heldHashes));
    }
    let joined: FramedConnection[] = [];
    if (extraStreams > 0) {
      const joins = new JoinRegistry(hello.migrationId, extraStreams, this.keys.secret, this.keys.welcomeKey);
      this.host.enter({ kind: 'joining', joins, interrupt: this.interrupt });
      joined = await joins.wait(connection, handshakeTimeoutMs);
    }
    for (const stream of [connection, ...joined]) stream.readAheadBytes = Math.max(MIN_READ_AHEAD_BYTES, READ_AHEAD_BYTES / streams);
    if (resumeWindowMs === 0) this.host.doneAccepting();
    const lastRound = summary.rounds;
    const controlRegions = this.streamRegions();
    this.extras = joined.map((extra, i) => {
      const receiver = new StreamReceiver(i + 1, streams, extra, this.streamRegions(), lastRound);
      return new ExtraStreamReader(receiver, timeoutMs, (error) => {
        // The first stream to fail explains the failure; the control connection stops with it.
        this.failedStream ??= error;
        connection.interrupt(error);
      });
    });
    const control = new StreamReceiver(0, streams, connection, controlRegions, lastRound);
    this.control = control;
    // A resume HELLO may retire this connection set only before its stop-and-copy round.
    this.host.enter({
      kind: 'receiving', session: this.resumableSession(), interrupt: this.interrupt,
      // Device state comes only once the source has paused: past that, nothing resumes.
      resumable: () => resumeWindowMs > 0 && this.control === control && !this.inFinalRound() && this.deviceStateChunks.length === 0,
    });
    let last: RoundEnd | undefined;
    for (;;) {
      const frame = await connection.receive(timeoutMs);
      if (frame.type === MessageType.DeviceState) {
        if (control.inProgress) throw new ProtocolError('DEVICE_STATE inside a round');
        const chunk = parseDeviceState(frame.payload);
        if (this.deviceStateComplete) throw new ProtocolError('DEVICE_STATE after the device state\'s last chunk');
        // Chunks of one state, in order (copied: the frame's buffer is the reader's).
        if (summary.deviceStateBytes + chunk.bytes.length > MAX_DEVICE_STATE_BYTES) {
          throw new ProtocolError(`device state larger than ${MAX_DEVICE_STATE_BYTES} bytes`);
        }
        this.deviceStateChunks.push(Buffer.from(chunk.bytes));
        summary.deviceStateBytes += chunk.bytes.length;
        if (chunk.last) this.completeDeviceState();
        continue;
      }
      if (frame.type === MessageType.Final) {
        if (control.inProgress || !last?.final) throw new ProtocolError('FINAL before a complete stop-and-copy round');
        if (this.deviceStateChunks.length > 0 && !this.deviceStateComplete) throw new ProtocolError('FINAL before the device state\'s last chunk');
        const final = parseFinal(frame.payload);
        if (final.round !== last.round) throw new ProtocolError(`FINAL names round ${final.round}, last round was ${last.round}`);
        const verifyStarted = performance.now();
        const digest = this.images.digest();
        this.verifyMicros = (performance.now() - verifyStarted) * 1000;
        if (digest !== final.regionDigest) {
          throw new ChecksumError('region digest differs from the source\'s: a page is missing or stale', -1);
        }
        summary.regionDigest = formatDigest(digest);
        return;
      }
      const end = await control.take(frame);
      if (!end) continue;
      // Every stream must end the same round the same way before it counts as received.
      for (const other of await connection.guard(Promise.all(this.extras.map((extra) => extra.roundEnded())))) {
        if (other.round !== end.round || other.final !== end.final) {
          throw new ProtocolError(`streams disagree on round ${end.round}: one ended round ${other.round}${other.final ? ' (stop-and-copy)' : ''}`);
        }
      }
      last = end;
      summary.rounds = end.round;
      if (!end.final) this.flusher.flush();
      await connection.send(MessageType.RoundAck, encodeRoundAck(end.round));
      for (const extra of this.extras) extra.acknowledge();
      this.refresh();
      this.host.round({ round: end.round, pagesApplied: summary.pagesApplied, bytesReceived: summary.bytesReceived });
    }
  }

  /** One stream's view of every region, with decoders of its own (sharing each region's held hashes). */
  private streamRegions(): StreamRegion[] {
    return this.images.regions.map(({ image, store, heldHashes }) => {
      const decoder = new PageBatchDecoder(store, heldHashes);
      this.decoders.push(decoder);
      return { decoder, pageCount: store.pageCount, pageSize: store.pageSize, noteWritten: (bytes: number) => image.noteWritten(bytes) };
    });
  }

  /** Whether any stream of the current set has begun the stop-and-copy round: from there the source has paused. */
  private inFinalRound(): boolean {
    return this.control?.inFinalRound === true || this.extras.some((extra) => extra.receiver.inFinalRound);
  }

  private pagesApplied(): number {
    return this.decoders.reduce((n, d) => n + d.pagesApplied, this.pagesBefore);
  }

  private bytesRead(): number {
    return this.extras.reduce((n, extra) => n + extra.receiver.connection.bytesRead, this.bytesBefore + this.controlConnection.bytesRead);
  }

  private resumableSession(): ResumableSession {
    return { hello: this.served, secret: this.keys.secret };
  }
}
