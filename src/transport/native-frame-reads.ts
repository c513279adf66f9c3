// Reading a connection's frames with the addon's FrameReader instead of Node's socket reads: each
// frame's payload lands, in as many read() calls as the kernel needs, in a buffer that the receiver
// then verifies and writes from. No 64 KiB chunks joined in JavaScript, no fresh memory per frame
// (payload buffers are pooled and come back through Frame.release). The frame header is still checked
// here, in TypeScript, before its payload is used.
import { constants } from 'node:os';
import type { Socket } from 'node:net';
import { ConnectionError, type PagewireError } from '../errors.js';
import { ReadStatus, type NativeFrameReader } from '../native/binding.js';
import { binding } from '../native/engine.js';
import { checkFrameHeader } from '../wire/frame-decoder.js';
import { forgedFrame } from './frame-auth.js';
import { FRAME_HEADER_BYTES, type Frame } from '../wire/messages.js';

/** A pooled payload buffer: a PAGES batch of 256 pages of 4 KiB (about 1 MiB) and then some. */
const POOLED_PAYLOAD_BYTES = 2 * 1024 * 1024;
/** Payloads up to this size are copied out, so that the pooled buffer is free again at once. */
const COPY_PAYLOAD_UP_TO = 4096;

/** What the pump needs from the connection it reads for. */
export interface FrameSink {
  /** The payload limit now in force. */
  maxPayload(): number;
  deliver(frame: Frame): void;
  /** Resolves when more frames may be read (the reader's backpressure). */
  room(): Promise<void>;
  /** The stream ended or broke, or a header was malformed: no frame follows. */
  failed(error: PagewireError): void;
}

/** The socket's descriptor, if it is a plain TCP socket whose reads the addon can take over. */
function nativeReadable(socket: Socket): { fd: number; handle: NodeSocketHandle } | undefined {
  const handle = (socket as unknown as { _handle?: NodeSocketHandle })._handle;
  if (!binding().FrameReader || 'encrypted' in socket || !handle || typeof handle.fd !== 'number' || handle.fd < 0 ||
    typeof handle.readStop !== 'function' || typeof handle.readStart !== 'function') {
    return undefined;
  }
  return { fd: handle.fd, handle };
}

/** The parts of Node's TCP handle (net.Socket._handle) that switching readers touches. */
interface NodeSocketHandle {
  fd?: number;
  reading?: boolean;
  readStop(): number;
  readStart(): number;
}

export class NativeFrameReads {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private readonly pool: Buffer[] = [];
  private stopped = false;
  private readonly stopping: Promise<void>;
  private stopNow!: () => void;
  /** Settles when the read loop has ended and no read is in flight. */
  private readonly loop: Promise<void>;
  bytesRead = 0;
  /** With frame tags: the number of the next frame, for the message when one is forged. */
  private nextNumber: number | undefined;

  private constructor(private readonly reader: NativeFrameReader, private readonly sink: FrameSink,
    tags?: { key: Uint8Array; nextNumber: number }) {
    if (tags) {
      reader.authenticate(tags.key, tags.nextNumber);
      this.nextNumber = tags.nextNumber;
    }
    this.stopping = new Promise((resolve) => { this.stopNow = resolve; });
    this.loop = this.run();
  }

  /**
   * Stops Node's reads on socket and reads its frames natively from now on; undefined (nothing
   * changed) when the socket is not plain TCP or the addon is missing. Node must not have read past
   * a frame boundary: the caller switches before the peer may send more.
   */
  static start(socket: Socket, sink: FrameSink, tags?: { key: Uint8Array; nextNumber: number }): NativeFrameReads | undefined {
    const readable = nativeReadable(socket);
    if (!readable) return undefined;
    const reader = new (binding().FrameReader!)(readable.fd);
    // Two readers would split the byte stream between them. Node stops now, and its stream machinery
    // is kept from starting it again until resumeNodeReads().
    socket.pause();
    readable.handle.reading = false;
    readable.handle.readStop();
    (socket as unknown as { _read: () => void })._read = () => {};
    return new NativeFrameReads(reader, sink, tags);
  }

  /**
   * Ends native reading (a read in flight is cancelled) and closes the reader's descriptor once it has
   * settled; with `socket`, Node reads it again from there, so that the peer's FIN is still seen.
   */
  async stop(socket?: Socket): Promise<void> {
    this.stopped = true;
    this.stopNow();
    this.reader.cancel();
    await this.loop;
    this.reader.close();
    if (socket && !socket.destroyed) {
      delete (socket as unknown as { _read?: () => void })._read;
      const handle = (socket as unknown as { _handle?: NodeSocketHandle })._handle;
      if (handle) {
        handle.reading = true;
        handle.readStart();
      }
    }
  }

  private async run(): Promise<void> {
    const { sink } = this;
    try {
      for (;;) {
        // A full queue waits for the receiver, or for stop().
        await Promise.race([sink.room(), this.stopping]);
        if (this.stopped) return;
        const frame = await this.readFrame();
        if (!frame) return;
        // A read that completed just as stop() came is not delivered after the connection's failure.
        if (this.stopped) {
          frame.release?.();
          return;
        }
        sink.deliver(frame);
      }
    } catch (error) {
      if (!this.stopped) sink.failed(error as PagewireError);
    }
  }

  /** The next frame, or undefined when stopped; throws what ended the stream. */
  private async readFrame(): Promise<Frame | undefined> {
    const buffer = this.pool.pop() ?? Buffer.allocUnsafeSlow(POOLED_PAYLOAD_BYTES);
    const maxPayload = this.sink.maxPayload();
    const [status, length, bytes] = await this.reader.read(this.header, buffer.subarray(0, Math.min(buffer.length, maxPayload)));
    if (!this.check(status, bytes)) {
      this.pool.push(buffer);
      return undefined;
    }
    // A malformed header stops the stream here, whatever was read after it.
    const { type } = checkFrameHeader(this.header, maxPayload);
    if (status === ReadStatus.PayloadLater) {
      this.pool.push(buffer);
      // Longer than a pooled buffer (within the limit just checked): a buffer of its own.
      const payload = Buffer.allocUnsafeSlow(length);
      const [rest, , restBytes] = await this.reader.readPayload(payload);
      return this.check(rest, restBytes) ? this.authenticated(rest, { type, payload }) : undefined;
    }
    if (length <= COPY_PAYLOAD_UP_TO) {
      const payload = Buffer.from(buffer.subarray(0, length));
      this.pool.push(buffer);
      return this.authenticated(status, { type, payload });
    }
    let released = false;
    return this.authenticated(status, {
      type, payload: buffer.subarray(0, length),
      release: () => {
        if (released) return;
        released = true;
        this.pool.push(buffer);
      },
    });
  }

  /** With frame tags, a whole frame the reader checked: marked so, or the AuthError of a forged one. */
  private authenticated(status: ReadStatus, frame: Frame): Frame {
    if (this.nextNumber === undefined) return frame;
    const number = this.nextNumber++;
    if (status === ReadStatus.Forged) {
      frame.release?.();
      throw forgedFrame(frame.type, number);
    }
    return { ...frame, authenticated: true };
  }

  /** Counts what a read consumed; false when stopped; throws what ended the stream. */
  private check(status: ReadStatus, bytes: number): boolean {
    if (status === ReadStatus.Failed) {
      const code = Object.entries(constants.errno).find(([, n]) => n === bytes)?.[0] ?? `errno ${bytes}`;
      throw new ConnectionError(`connection failed: read ${code}`);
    }
    this.bytesRead += bytes;
    switch (status) {
      case ReadStatus.Frame:
      case ReadStatus.PayloadLater:
      case ReadStatus.Forged:
        return true;
      case ReadStatus.Cancelled:
        return false;
      case ReadStatus.Ended:
        throw new ConnectionError('the peer closed the connection');
      case ReadStatus.Cut:
        throw new ConnectionError('the peer closed the connection inside a frame');
    }
  }
}
