// One connection carrying frames both ways (TCP, TLS, a Unix socket, or any Duplex an embedder hands in),
// with backpressure: send() waits for 'drain' when the stream's buffer is full, and reading pauses when
// unread frames pile up. With a key and no TLS every frame is tagged and checked (frame-auth.ts). An
// ERROR frame from the peer surfaces as a PeerError from receive(), so the peer's code and reason reach
// the caller.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ConnectionError, PagewireError, PeerError, ProtocolError, TimeoutError, asPagewireError } from '../errors.js';
import { FrameDecoder } from '../wire/frame-decoder.js';
import { FRAME_TAG_BYTES, FrameAuthenticator, type FrameKeys } from './frame-auth.js';
import { NativeFrameReads } from './native-frame-reads.js';
import {
  MessageType, encodeError, frameHeader, messageName, parseError, type Frame,
} from '../wire/messages.js';

const PAUSE_READING_AT = 16;
/** Unread frames stop reading at this many payload bytes too, whatever their count. */
export const READ_AHEAD_BYTES = 64 * 1024 * 1024;
const KEEPALIVE_DELAY_MS = 5_000;
const RESUME_READING_AT = 4;
/**
 * How long a side with several connections waits for the peer's ERROR after one connection was lost:
 * the peer says why on its first connection, then closes the others.
 */
export const PEER_REASON_GRACE_MS = 200;

interface Waiter {
  resolve(frame: Frame): void;
  reject(error: PagewireError): void;
}

export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private readonly frames: Frame[] = [];
  private queuedBytes = 0;
  private waiter: Waiter | undefined;
  private failure: PagewireError | undefined;
  private readonly drainWaiters = new Set<() => void>();
  private readonly failureListeners = new Set<(error: PagewireError) => void>();
  /** The peer's ERROR, kept even when it arrives after another failure. */
  private peerFailure: PagewireError | undefined;
  private readonly peerErrorWaiters = new Set<() => void>();
  /** Set once the addon reads this connection's frames instead of Node (readNatively()). */
  private nativeReads: NativeFrameReads | undefined;
  /** The native reader waiting for the queue of unread frames to shrink. */
  private wakeReader: (() => void) | undefined;
  /** Set once every frame is tagged and checked (authenticateFrames()). */
  private sealer: FrameAuthenticator | undefined;
  private opener: FrameAuthenticator | undefined;
  /** A frame failed its tag: what follows is dropped unread. */
  private forged = false;
  /** Frames Node may still cut from the stream before it holds (holdAfterNextFrame(), release()). */
  private frameBudget = Infinity;

  /** Bytes of frames handed to the stream, and bytes Node read from it (the addon's reads come on top). */
  private written = 0;
  private read = 0;

  /**
   * sendTimeoutMs bounds how long a send may wait for a peer that stops reading; `label` names the peer
   * in messages when the stream is not a socket with an address.
   */
  constructor(readonly socket: Duplex, maxPayload: number, private readonly sendTimeoutMs = 30_000, private readonly label = 'the peer') {
    this.decoder = new FrameDecoder(maxPayload);
    if (socket instanceof Socket && socket.remotePort !== undefined) {
      socket.setNoDelay(true);
      // A peer that vanishes without FIN or RST is noticed by keepalive probes, not after the kernel's
      // retransmission timeout of many minutes.
      socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    }
    socket.on('data', (chunk: Buffer) => {
      this.read += chunk.length;
      this.onData(chunk);
    });
    socket.on('drain', () => this.wakeWriters());
    socket.on('error', (error) => this.fail(new ConnectionError(`connection failed: ${error.message}`, { cause: error })));
    socket.on('close', () => this.fail(new ConnectionError('the peer closed the connection')));
  }

  /**
   * Payload bytes of unread frames beyond which reading pauses. A target with several streams shares
   * one budget among them, so that more connections do not mean more memory.
   */
  readAheadBytes = READ_AHEAD_BYTES;

  /** Raises the payload limit once the handshake has passed. */
  set maxPayload(bytes: number) {
    this.decoder.maxPayload = bytes + (this.opener ? FRAME_TAG_BYTES : 0);
  }

  /**
   * From now on every frame sent carries a tag, and every frame received must carry a valid one
   * (src/transport/frame-auth.ts). Call it right after the AUTH exchange: frames already queued are
   * checked now, in order, since the peer tags everything after its own last AUTH frame.
   */
  authenticateFrames(keys: FrameKeys): void {
    this.sealer = new FrameAuthenticator(keys.send);
    this.opener = new FrameAuthenticator(keys.receive);
    this.decoder.maxPayload += FRAME_TAG_BYTES;
    const queued = this.frames.splice(0);
    this.queuedBytes = 0;
    this.deliver(queued);
  }

  /**
   * Cuts one more frame from the stream, then holds: nothing after it is decoded (its header not even
   * checked against the payload limit) until release(). For the last frame before the keys or the limit
   * change: whatever the peer sent after it in the same read must be judged by the new ones.
   */
  holdAfterNextFrame(): void {
    this.frameBudget = 1;
  }

  /** Decodes what was held back, under the keys and limit now in force, and reads on. */
  release(): void {
    if (this.frameBudget === Infinity) return;
    this.frameBudget = Infinity;
    this.onData(Buffer.alloc(0));
    if (!this.full && !this.nativeReads && this.socket.isPaused() && !this.failure) this.socket.resume();
  }

  get bytesWritten(): number {
    return this.written;
  }

  get bytesRead(): number {
    return this.read + (this.nativeReads?.bytesRead ?? 0);
  }

  /**
   * From now on the addon reads this connection's frames (src/transport/native-frame-reads.ts), if it
   * can: a plain TCP socket, the addon loaded, no partial frame buffered. Call it only where the peer
   * waits for this side before it sends more, so that Node has read nothing past a frame. Returns
   * whether it switched.
   */
  readNatively(): boolean {
    if (this.nativeReads || this.failure || this.decoder.pendingBytes > 0 || !(this.socket instanceof Socket)) return false;
    // With frame tags, the reader checks them on its own thread (call authenticateFrames() first).
    const tags = this.opener && { key: this.opener.key, nextNumber: this.opener.nextNumber };
    this.nativeReads = NativeFrameReads.start(this.socket, {
      maxPayload: () => this.decoder.maxPayload,
      deliver: (frame) => this.deliver([frame]),
      room: () => (this.full ? new Promise<void>((resolve) => { this.wakeReader = resolve; }) : Promise.resolve()),
      // A stream that ended or broke is a lost connection, as Node's 'close' and 'error' say; a
      // malformed header stops reading but keeps the socket, so the owner can tell the peer why.
      failed: (error) => (error instanceof ConnectionError ? this.fail(error) : this.interrupt(error)),
    }, tags);
    return this.nativeReads !== undefined;
  }

  get remote(): string {
    const socket = this.socket;
    return socket instanceof Socket && socket.remotePort !== undefined ? `${socket.remoteAddress ?? '?'}:${socket.remotePort}` : this.label;
  }

  /** The next frame; a peer ERROR becomes PeerError. Queued frames are delivered before a failure. */
  receive(timeoutMs: number): Promise<Frame> {
    const frame = this.frames.shift();
    if (frame) {
      this.queuedBytes -= frame.payload.length;
      this.afterShift();
      return Promise.resolve(frame).then(checkPeerError);
    }
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new TimeoutError(`no message from ${this.remote} for ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (f) => { clearTimeout(timer); resolve(f); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    }).then(checkPeerError);
  }

  /** Receives a frame that must be of `type`; returns its payload. */
  async expect(type: MessageType, timeoutMs: number): Promise<Buffer> {
    const frame = await this.receive(timeoutMs);
    if (frame.type !== type) {
      throw new ProtocolError(`expected ${messageName(type)}, received ${messageName(frame.type)}`);
    }
    return frame.payload;
  }

  /**
   * `promise`, or this connection's failure if that comes first (a peer's ERROR included): for waits on
   * other connections, so that the reason the peer sends here is heard at once.
   */
  guard<T>(promise: Promise<T>): Promise<T> {
    if (this.failure) {
      // Nobody waits for `promise` any more; its own failure must not go unhandled.
      promise.catch(() => undefined);
      return Promise.reject(this.failure);
    }
    return new Promise<T>((resolve, reject) => {
      const listener = (error: PagewireError) => reject(error);
      this.failureListeners.add(listener);
      promise.then(resolve, reject).finally(() => this.failureListeners.delete(listener));
    });
  }

  /**
   * The ERROR the peer sent on this connection, waiting up to graceMs for one: when another connection
   * of the migration broke first, the peer's reason may still be on its way here.
   */
  async peerError(graceMs: number): Promise<PagewireError | undefined> {
    if (!this.peerFailure && graceMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, graceMs);
        const waiters = this.peerErrorWaiters;
        function done(): void {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
        waiters.add(done);
      });
    }
    return this.peerFailure;
  }

  /** Writes one frame; resolves once the socket can take more (real backpressure). */
  send(type: MessageType, ...parts: Buffer[]): Promise<void> {
    return this.sendThen(undefined, type, ...parts);
  }

  /**
   * As send(), and calls `written` once the socket no longer needs the parts (flushed to the kernel,
   * or failed), so their buffers can be reused.
   */
  async sendThen(written: (() => void) | undefined, type: MessageType, ...parts: Buffer[]): Promise<void> {
    if (this.failure) {
      written?.();
      throw this.failure;
    }
    const socket = this.socket;
    socket.cork();
    // Write callbacks run in order, so the last write's tells that every part is done with.
    const done = written && (() => written());
    const all = this.framed(type, parts);
    const last = all.length - 1;
    all.forEach((part, i) => {
      this.written += part.length;
      socket.write(part, i === last ? done : undefined);
    });
    socket.uncork();
    while (socket.writableNeedDrain && !this.failure) {
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), this.sendTimeoutMs);
        this.drainWaiters.add(() => { clearTimeout(timer); resolve(true); });
      });
      // One frame (at most a few MiB) not taken in the whole interval: the peer has stopped reading.
      if (!drained) this.fail(new TimeoutError(`${this.remote} did not take a frame within ${this.sendTimeoutMs} ms`));
    }
    if (this.failure) throw this.failure;
  }

  /** Tells the peer why we stop (best effort), then closes. */
  async sendErrorAndClose(error: PagewireError): Promise<void> {
    if (!this.socket.destroyed && this.socket.writable) {
      const frame = Buffer.concat(this.framed(MessageType.Error, [encodeError(error.code, error.message)]));
      this.written += frame.length;
      this.socket.write(frame);
    }
    await this.close();
  }

  /** Ends our side and waits (briefly) for the socket to close. */
  async close(graceMs = 1000): Promise<void> {
    const socket = this.socket;
    // Node reads again from where the addon stopped, so that the peer's FIN is seen.
    if (this.nativeReads) await this.nativeReads.stop(socket as Socket);
    if (socket.destroyed) return;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => { socket.destroy(); }, graceMs);
      socket.once('close', () => { clearTimeout(timer); resolve(); });
      // Read (and drop) whatever still comes, so the peer's FIN is seen even if reading was paused.
      socket.removeAllListeners('data');
      socket.on('data', () => {});
      socket.resume();
      socket.end();
    });
  }

  /** Stops everything at once: pending receives and sends reject with `error`. */
  fail(error: PagewireError): void {
    this.interrupt(error);
    // The addon's duplicate of the descriptor keeps the socket open until its read has ended.
    void this.nativeReads?.stop();
    if (!this.socket.destroyed) this.socket.destroy();
  }

  /** Rejects pending receives and sends with `error` but keeps the socket, so the owner can still tell the peer why. */
  interrupt(error: PagewireError): void {
    if (!this.failure) {
      this.failure = error;
      for (const listener of this.failureListeners) listener(error);
    }
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure);
    this.wakeWriters();
  }

  /** A frame's header, its payload parts, and its tag when frames are authenticated. */
  private framed(type: MessageType, parts: Buffer[]): Buffer[] {
    let length = 0;
    for (const part of parts) length += part.length;
    if (!this.sealer) return [frameHeader(type, length), ...parts];
    const header = frameHeader(type, length + FRAME_TAG_BYTES);
    return [header, ...parts, this.sealer.tag(header, parts)];
  }

  private onData(chunk: Buffer): void {
    const { frames, error } = this.decoder.push(chunk, this.frameBudget);
    if (this.frameBudget !== Infinity) {
      this.frameBudget -= frames.length;
      // Held: read no further until release(), so nothing piles up meanwhile.
      if (this.frameBudget === 0) this.socket.pause();
    }
    this.deliver(frames);
    if (error) {
      // Malformed input: stop reading but keep the socket, so the owner can tell the peer why.
      this.socket.pause();
      this.socket.removeAllListeners('data');
      this.interrupt(error);
    }
  }

  private deliver(frames: Frame[]): void {
    for (let frame of frames) {
      if (this.forged) {
        frame.release?.();
        continue;
      }
      if (this.opener && frame.authenticated) {
        this.opener.skip();
        frame = { ...frame, payload: frame.payload.subarray(0, frame.payload.length - FRAME_TAG_BYTES), authenticated: false };
      } else if (this.opener) {
        try {
          frame = { ...frame, payload: this.opener.open(frame.type, frame.payload) };
        } catch (error) {
          // Nothing after a forged frame is believed: stop reading, keep the socket to say why.
          frame.release?.();
          this.forged = true;
          this.socket.pause();
          this.socket.removeAllListeners('data');
          this.interrupt(error as PagewireError);
          continue;
        }
      }
      if (frame.type === MessageType.Error && !this.peerFailure) {
        this.peerFailure = peerErrorOf(frame);
        for (const wake of [...this.peerErrorWaiters]) wake();
      }
      if (frame.type === MessageType.Error && !this.waiter) {
        // The peer stops here. Surface its reason now, so a send in flight fails with it rather than
        // with the bare connection loss that follows.
        this.interrupt(peerErrorOf(frame));
        continue;
      }
      const waiter = this.waiter;
      if (waiter) {
        this.waiter = undefined;
        waiter.resolve(frame);
      } else {
        this.frames.push(frame);
        this.queuedBytes += frame.payload.length;
      }
    }
    if (this.full && !this.nativeReads) this.socket.pause();
  }

  /** Whether unread frames have piled up so far that reading pauses. */
  private get full(): boolean {
    return this.frames.length >= PAUSE_READING_AT || this.queuedBytes >= this.readAheadBytes;
  }

  private afterShift(): void {
    if (this.frames.length > RESUME_READING_AT || this.queuedBytes >= this.readAheadBytes) return;
    if (this.nativeReads) {
      const wake = this.wakeReader;
      this.wakeReader = undefined;
      wake?.();
    } else if (this.socket.isPaused()) {
      this.socket.resume();
    }
  }

  private wakeWriters(): void {
    const waiters = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const wake of waiters) wake();
  }
}

function checkPeerError(frame: Frame): Frame {
  if (frame.type === MessageType.Error) throw peerErrorOf(frame);
  return frame;
}

/** The peer's ERROR as a PeerError; a malformed one as the ProtocolError saying so. */
function peerErrorOf(frame: Frame): PagewireError {
  try {
    const { code, reason } = parseError(frame.payload);
    return new PeerError(code, reason);
  } catch (error) {
    return asPagewireError(error);
  }
}

