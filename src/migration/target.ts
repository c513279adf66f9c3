// The target side, as an orchestrator that owns its one state (src/target/target-state.ts): the listener
// admits connections, a session receives the rounds, the switch-over commits; each migration ends in
// `result` (or, serving many, a 'migration' event). docs/PROTOCOL.md has the state table.
import { timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AddressInfo, Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import {
  AbortedError, ConnectionError, HandshakeError, InvalidArgumentError, SwitchoverError, TimeoutError, asPagewireError, type PagewireError,
} from '../errors.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import type { Hello } from '../wire/messages.js';
import type { JoinRegistry } from '../target/join-registry.js';
import { TargetListener, notResumable, type Session, type TargetAdmission } from '../target/listener.js';
import { TargetSession } from '../target/session.js';
import { Switchover } from '../target/switchover.js';
import {
  interruptOf, phaseOf, type ResumableSession, type ResumeRequest, type TargetPhase, type TargetState,
} from '../target/target-state.js';
import { targetSettings, type TargetSettings } from './target-options.js';
import { RoundFlusher } from '../target/round-flusher.js';
import { RegionImages, regionShapes, type PreparedRegion } from '../target/region-images.js';
import type { RegionOffer, TargetImage } from '../target/target-image.js';

export type { TargetPhase } from '../target/target-state.js';

/** What the prepare hook is handed: the verified images and the device state, at the pause point. */
export interface PreparedHandover {
  /** Each region's image, in region order, with the file it is in (if any). */
  images: PreparedRegion[];
  deviceState: Buffer;
}

/** Each hook is bounded by `hookTimeoutMs` and given an AbortSignal that aborts when the target gives up on it. */
export interface TargetHooks {
  /**
   * After FINAL is verified, before READY: get the workload ready on the images (map the files, load the
   * device state) without running it, so that after GO only resume() is left. A throw fails the
   * migration before the switch-over: the source runs on, the images are discarded, discard() is called.
   * Nothing may write to the images until resume().
   */
  prepare?(handover: PreparedHandover, signal: AbortSignal): Promise<void> | void;
  /**
   * The whole device state is in: called as soon as its last chunk arrives, which is often before the
   * last pages (the source sends a state that is ready first), else once FINAL is verified. Load it
   * into the workload there without running it; it runs beside the last pages and the verify, and
   * prepare() (then READY) waits for it. A throw fails the migration before the switch-over, as
   * prepare's does. A failure meanwhile calls discard() without waiting for it.
   */
  deviceStateReceived?(state: Buffer, signal: AbortSignal): Promise<void> | void;
  /**
   * The migration failed before the commit, after the images were opened: throw away whatever was made
   * on them (prepared, or started early on an image's workingPath). Not called once committed. What it
   * throws is ignored: the failure it follows is what is reported.
   */
  discard?(signal: AbortSignal): Promise<void> | void;
  /** The device state the source sent, handed over on GO before resume(). */
  onDeviceState?(state: Buffer, signal: AbortSignal): Promise<void> | void;
  /** Start the workload on this side; called once the image is committed. */
  resume?(signal: AbortSignal): Promise<void> | void;
}

export interface MigrationTargetOptions {
  /**
   * Where the received region goes: an image, or a function that makes one from the source's offer (its
   * region and page size; throw a CapacityError to refuse it). With `serve: 'many'` a function is called
   * for each migration, an image is opened again for each. A migration of several regions needs the
   * function: it is called once per region, in order (the offer says which); an image alone refuses it.
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

export interface TargetSummary {
  status: 'completed' | 'failed';
  error?: string;
  errorCode?: string;
  migrationId: string;
  /** Regions the migration carried (1 unless the source sent several). */
  regions: number;
  /** Region 0's page size. */
  pageSize: number;
  /** Pages of every region together, as are pagesApplied and bytesReceived. */
  pagesTotal: number;
  pagesApplied: number;
  rounds: number;
  /** TCP connections that carried pages (in the last session). */
  streams: number;
  /** Times the source came back after the connections broke. */
  resumes: number;
  bytesReceived: number;
  deviceStateBytes: number;
  /**
   * The region digest of the committed image, or with several regions the digest over theirs, as FINAL
   * carries it (16 hex digits; '' until FINAL was verified).
   */
  regionDigest: string;
  /** Where the verified image was kept when the switch-over was left in doubt. */
  inDoubtImage?: string;
  /** GO to committed: making the last round durable and renaming the image into place (after the downtime). */
  /** From FINAL verified to READY: waiting for deviceStateReceived, then the prepare hook (0 without either). */
  prepareMs: number;
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
  private readonly options: TargetSettings;
  private readonly listener: TargetListener;
  private state: TargetState = { kind: 'listening' };
  private phaseNow: TargetPhase = 'listening';
  private summaryNow: TargetSummary | undefined;
  private settle!: { resolve(s: TargetSummary): void; reject(e: PagewireError): void };
  /** Settles when the one migration this target serves has ended. */
  readonly result: Promise<TargetSummary>;

  private constructor(options: MigrationTargetOptions) {
    super();
    this.options = targetSettings(options);
    this.result = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.result.catch(() => {});
    this.listener = new TargetListener(this.options, this.admission());
  }

  /** Starts listening; the returned target's `result` settles after one migration. */
  static async listen(options: MigrationTargetOptions): Promise<MigrationTarget> {
    const target = new MigrationTarget(options);
    await target.listener.listen();
    const { signal } = target.options;
    if (signal) {
      const onAbort = () => target.stop(new AbortedError('target aborted', { cause: signal.reason }));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      target.result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
    return target;
  }

  /** Serves a connection the embedder opened (an in-process pair, a vsock): as if it had been accepted. */
  accept(stream: Duplex): void {
    this.listener.accept(stream);
  }

  /** The TCP address it listens on (also after the migration); a Unix socket or an embedder's server has none: InvalidArgumentError. */
  get address(): AddressInfo {
    const address = this.listener.address;
    if (!address) throw new InvalidArgumentError('this target does not listen on TCP (it uses a Unix socket path or the embedder\'s server)');
    return address;
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
    this.listener.close();
    const { state } = this;
    if (state.kind === 'listening') {
      this.listener.destroyConnections();
      this.finish(reason);
    } else if (state.kind === 'opening') {
      this.enter({ kind: 'opening', stoppedBy: reason });
    } else {
      interruptOf(state)?.(reason);
    }
  }

  /** The one place the state changes; a state with a phase of its own announces it when it differs. */
  private enter(next: TargetState): void {
    const previous = this.state;
    // A resume that came early is taken by the suspension that follows; if the migration ends instead,
    // its connection is refused here rather than left open until its source gives up.
    if (previous.kind === 'receiving' && previous.earlyResume && next.kind !== 'receiving' && next.kind !== 'suspended') {
      this.refuse(notResumable(), previous.earlyResume.connection);
    }
    this.state = next;
    const phase = phaseOf(next);
    if (phase === undefined || phase === this.phaseNow) return;
    this.phaseNow = phase;
    this.emit('phase', phase);
  }

  /** What the listener asks of the state, and where it hands what it admitted. */
  private admission(): TargetAdmission {
    return {
      refusesConnections: () => this.state.kind !== 'listening' && this.state.kind !== 'joining' && this.state.kind !== 'suspended' &&
        this.options.resumeWindowMs === 0,
      joins: (): JoinRegistry | undefined => (this.state.kind === 'joining' ? this.state.joins : undefined),
      resumable: (hello) => this.resumableSession(hello),
      begin: (connection, hello, session) => {
        this.serve(connection, hello, session).catch((error: unknown) => {
          // serve() settles the migration itself; reaching here is a bug, which must not kill the process.
          this.finish(asPagewireError(error));
        });
      },
      resume: (connection, hello) => this.resumeWith({ connection, hello }),
      refused: (error, remote) => this.emit('refused', error, remote),
    };
  }

  /** The session a resume HELLO naming `hello` may resume: the suspended one, or one still in its pre-copy. */
  private resumableSession(hello: Hello): ResumableSession | undefined {
    const { state } = this;
    const session = state.kind === 'suspended' || (state.kind === 'receiving' && state.resumable()) ? state.session : undefined;
    const served = session?.hello;
    return served !== undefined && timingSafeEqual(served.migrationId, hello.migrationId) && sameRegions(served, hello) ? session : undefined;
  }

  private refuse(error: PagewireError, connection: FramedConnection): void {
    this.emit('refused', error, connection.remote);
    void connection.sendErrorAndClose(error);
  }

  /**
   * A resume HELLO that proved the session secret: handed to the suspended migration it names; if that
   * migration has not yet noticed its connections are gone (they are half-open: its source, the only
   * holder of the secret, has given them up), they are given up now, and the resume waits for it.
   */
  private resumeWith(request: ResumeRequest): void {
    const { state } = this;
    // The migration may have moved on while the resume proved itself.
    if (!this.resumableSession(request.hello)) {
      this.refuse(notResumable(), request.connection);
    } else if (state.kind === 'suspended') {
      state.resume(request);
    } else if (state.kind === 'receiving') {
      state.earlyResume?.connection.fail(new ConnectionError('a newer resume replaced this one'));
      this.enter({ ...state, earlyResume: request });
      state.interrupt(new ConnectionError('the source reconnected to resume: its old connections are gone'));
    }
  }

  /** Suspends the migration until its source resumes it (a resume that came early is taken at once), within resumeWindowMs. */
  private awaitResume(session: ResumableSession, lost: PagewireError): Promise<ResumeRequest> {
    const early = this.state.kind === 'receiving' ? this.state.earlyResume : undefined;
    const { resumeWindowMs } = this.options;
    return new Promise((resolve, reject) => {
      let waiting = true;
      let timer: NodeJS.Timeout | undefined;
      const stopWaiting = () => {
        waiting = false;
        clearTimeout(timer);
      };
      const resume = (request: ResumeRequest) => {
        // Only one resume is taken; a later one finds the migration no longer suspended.
        if (!waiting) return this.refuse(notResumable(), request.connection);
        stopWaiting();
        resolve(request);
      };
      // stop() while suspended ends the wait.
      this.enter({ kind: 'suspended', session, resume, interrupt: (error) => { if (waiting) { stopWaiting(); reject(error); } } });
      if (early) return resume(early);
      timer = setTimeout(() => {
        stopWaiting();
        reject(new TimeoutError(`the connection broke (${lost.message}) and the source did not resume within ${resumeWindowMs} ms`));
      }, resumeWindowMs);
    });
  }

  /** Stops listening for new sources once this migration needs no more connections, unless serving many. */
  private doneAccepting(): void {
    if (this.options.serve === 'one') this.listener.stopListening();
  }

  /** Opens the images for an authenticated HELLO (refusing the source when it cannot), then serves the migration. */
  private async serve(connection: FramedConnection, hello: Hello, session: Session): Promise<void> {
    const started = performance.now();
    if (this.state.kind !== 'listening') {
      this.refuse(new HandshakeError('this target is already serving a migration'), connection);
      return;
    }
    // Taken before the images open (off the event loop): no second HELLO may open them meanwhile, and a
    // stop() meanwhile ends this migration once they are open.
    this.enter({ kind: 'opening' });
    const stoppedWhileOpening = () => (this.state.kind === 'opening' ? this.state.stoppedBy : undefined);
    let images: RegionImages;
    try {
      images = await RegionImages.open(this.options.image, hello);
    } catch (error) {
      // A refusal before the handshake completes: keep listening for a source we can serve.
      const stoppedBy = stoppedWhileOpening();
      this.enter({ kind: 'listening' });
      const refused = asPagewireError(error);
      this.emit('refused', refused, connection.remote);
      await connection.sendErrorAndClose(refused);
      // A stop() that came while the image was opening ends the target, refusal or not.
      if (stoppedBy) this.finish(stoppedBy);
      return;
    }
    const stoppedBy = stoppedWhileOpening();
    if (stoppedBy) {
      images.discard();
      await connection.sendErrorAndClose(stoppedBy);
      this.finish(stoppedBy);
      return;
    }
    await this.migrate(connection, hello, session, images, started);
  }

  /** Receives, switches over and reports one migration whose images are open. */
  private async migrate(connection: FramedConnection, hello: Hello, keys: Session, images: RegionImages,
    started: number): Promise<void> {
    const flusher = new RoundFlusher(images);
    const host = {
      enter: (state: TargetState) => this.enter(state),
      doneAccepting: () => this.doneAccepting(),
      awaitResume: (session: ResumableSession, lost: PagewireError) => this.awaitResume(session, lost),
      round: (event: TargetRoundEvent) => this.emit('round', event),
      resumed: (resumes: number, remote: string) => this.emit('resumed', resumes, remote),
    };
    const session = new TargetSession(host, this.options, images, flusher, connection, hello, keys, started);
    const switchover = new Switchover(host, this.options, images, flusher);
    const { summary } = session;
    this.summaryNow = summary;
    // From here stop() interrupts the session's connections.
    this.enter({ kind: 'welcoming', interrupt: session.interrupt });
    try {
      this.emit('accepted', hello, connection.remote);
      await session.receive();
      await switchover.run(session);
      session.refresh();
      summary.status = 'completed';
      this.enter({ kind: 'completed' });
      this.finish(undefined, summary);
    } catch (error) {
      this.enter({ kind: 'failing', interrupt: session.interrupt });
      const failure = await switchover.failure(await session.failure(error));
      if (failure instanceof SwitchoverError && failure.inDoubtImage) summary.inDoubtImage = failure.inDoubtImage;
      await session.connection.sendErrorAndClose(failure);
      // Told after the source, which may be paused waiting for the reason.
      await switchover.discardWorkload(session, failure);
      session.refresh();
      summary.error = failure.message;
      summary.errorCode = failure.code;
      this.enter({ kind: 'failed' });
      this.finish(failure, summary);
    }
  }

  private finish(error: PagewireError | undefined, summary?: TargetSummary): void {
    if (summary || this.state.kind !== 'listening') this.emit('migration', summary, error);
    if (this.options.serve === 'many' && !this.listener.closed) {
      // A daemon: ready for the next source. Connections in their handshake may be it.
      this.enter({ kind: 'listening' });
      return;
    }
    this.enter({ kind: 'ended' });
    this.listener.stopListening();
    // Connections still in their handshake are not served any more.
    this.listener.destroyConnections();
    if (error) this.settle.reject(error);
    else if (this.options.serve === 'many') this.settle.reject(new AbortedError('target stopped'));
    else this.settle.resolve(summary!);
  }
}

/** Whether a resume HELLO offers the same regions, in the same order, as the migration's first. */
function sameRegions(served: Hello, hello: Hello): boolean {
  const [a, b] = [regionShapes(served), regionShapes(hello)];
  return a.length === b.length && a.every((shape, i) => shape.regionSize === b[i]!.regionSize && shape.pageSize === b[i]!.pageSize);
}
