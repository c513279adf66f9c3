// Cuts a byte stream into frames. The header is checked before any payload byte is buffered, so a
// hostile length never makes us wait for or allocate more than `maxPayload` bytes.
import { ProtocolError } from '../errors.js';
import { FRAME_HEADER_BYTES, isMessageType, type Frame, type MessageType } from './messages.js';

/** A frame header's type and payload length; a ProtocolError if it is malformed or too long. */
export function checkFrameHeader(header: Buffer, maxPayload: number): { type: MessageType; length: number } {
  const type = header.readUInt8(0);
  const length = header.readUInt32LE(4);
  if (!isMessageType(type)) throw new ProtocolError(`unknown message type ${type}`);
  if (header.readUInt8(1) !== 0 || header.readUInt16LE(2) !== 0) {
    throw new ProtocolError('frame header has non-zero reserved bytes');
  }
  if (length > maxPayload) {
    throw new ProtocolError(`frame of ${length} bytes exceeds the limit of ${maxPayload}`);
  }
  return { type, length };
}

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** The largest payload accepted now: small during the handshake, larger after it. */
  constructor(public maxPayload: number) {}

  /**
   * Adds bytes; returns the frames they complete, at most maxFrames (the rest stays buffered, not even
   * its headers checked, until a later push), and, at a malformed header, the ProtocolError that stops
   * the stream (the frames before it still count). Nothing more may be pushed after an error.
   */
  push(chunk: Buffer, maxFrames = Infinity): { frames: Frame[]; error?: ProtocolError } {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    try {
      this.cut(frames, maxFrames);
    } catch (error) {
      return { frames, error: error as ProtocolError };
    }
    return { frames };
  }

  private cut(frames: Frame[], maxFrames: number): void {
    while (frames.length < maxFrames) {
      if (this.buffered < FRAME_HEADER_BYTES) break;
      const { type, length } = checkFrameHeader(this.peek(FRAME_HEADER_BYTES), this.maxPayload);
      if (this.buffered < FRAME_HEADER_BYTES + length) break;
      this.take(FRAME_HEADER_BYTES);
      frames.push({ type, payload: this.take(length) });
    }
  }

  /** Bytes received but not yet part of a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.chunks, n).subarray(0, n);
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first!.length >= n) {
      // Most frames sit inside one chunk: hand out a view, no copy.
      const out = first!.subarray(0, n);
      if (first!.length === n) this.chunks.shift();
      else this.chunks[0] = first!.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}
