// The device state, collected from the pause on, beside the final sync and the last pages rather than
// after them, and sent as DEVICE_STATE chunks: what is ready before the last pages go, the rest after
// them, the last chunk flagged, so the target can load it while the pages still arrive (docs/PROTOCOL.md).
// A hook may return the bytes at once or stream them (an AsyncIterable, such as a socket QEMU migrates
// into), so a large state is never held as one buffer nor capped by a frame's size.
import { InvalidArgumentError, type PagewireError } from '../errors.js';
import { shown } from '../option-checks.js';
import { MAX_DEVICE_STATE_BYTES } from '../wire/messages.js';
import type { FramedConnection } from '../transport/framed-connection.js';
import { MessageType, encodeDeviceStateHead } from '../wire/messages.js';

/** The most one DEVICE_STATE frame carries: a chunk of a larger state. */
export const DEVICE_STATE_CHUNK_BYTES = 8 * 1024 * 1024;

export class DeviceStateFeed {
  private readonly chunks: Uint8Array[] = [];
  private total = 0;
  private finished = false;
  private sentAny = false;
  private lastSent = false;
  private failure: PagewireError | undefined;
  private wake: (() => void) | undefined;
  /** When the last byte came (performance.now()), for the summary. */
  collectedAt = 0;
  /** Resolves once the hook has ended, however it ended. */
  readonly settled: Promise<void>;
  private readonly stop = new AbortController();

  /**
   * Starts collecting: `collect` runs the hook (bounded by the hook runner) with a signal that abort()
   * fires, and hands each part to `add`.
   */
  constructor(collect: (add: (part: unknown) => void, stopped: AbortSignal) => Promise<void>) {
    this.settled = collect((part) => this.add(part), this.stop.signal).then(() => {
      this.finished = true;
    }, (error: PagewireError) => {
      // A part refused by add() is the embedder's bad argument, not a failure of the hook itself.
      this.failure ??= error;
    }).finally(() => {
      this.collectedAt = performance.now();
      this.wake?.();
    });
  }

  /** The migration failed: tells the hook to stop (its signal aborts) and drops what it collected. */
  abort(reason: PagewireError): void {
    this.stop.abort(reason);
    this.chunks.length = 0;
  }

  /** What a deviceState hook returned, as parts for `add`: the bytes themselves, or each part streamed. */
  static async each(returned: unknown, add: (part: unknown) => void): Promise<void> {
    if (returned !== null && typeof returned === 'object' && Symbol.asyncIterator in returned) {
      for await (const part of returned as AsyncIterable<unknown>) add(part);
      return;
    }
    add(returned);
  }

  /**
   * Sends what is collected so far without waiting for more: before the last pages, so a target can load
   * a state that was ready early beside them. Throws what the hook threw, if it already has.
   */
  async sendCollected(connection: FramedConnection): Promise<void> {
    await this.sendQueued(connection);
    if (this.failure) throw this.failure;
  }

  /**
   * Sends every chunk as it is collected, the last one flagged as such (an empty one if the last bytes
   * went out before the hook ended), then returns the state's size; throws what the hook threw.
   * Without the hook's bytes (no hook, or an empty state) nothing is sent: the state is empty.
   */
  async sendTo(connection: FramedConnection): Promise<number> {
    for (;;) {
      await this.sendQueued(connection);
      if (this.failure) throw this.failure;
      if (this.finished) break;
      // A connection lost meanwhile ends the wait at once, not when the hook ends.
      await connection.guard(new Promise<void>((resolve) => { this.wake = resolve; }));
      this.wake = undefined;
    }
    if (!this.lastSent && this.sentAny) await this.send(connection, new Uint8Array(0), true);
    return this.total;
  }

  /** Hands every chunk to `sink` as it is collected, until the hook ends; returns the state's size, or throws what the hook threw. */
  async drainTo(sink: (chunk: Uint8Array) => void): Promise<number> {
    for (;;) {
      while (this.chunks.length > 0) sink(this.chunks.shift()!);
      if (this.failure) throw this.failure;
      if (this.finished) return this.total;
      await new Promise<void>((resolve) => { this.wake = resolve; });
      this.wake = undefined;
    }
  }

  private async sendQueued(connection: FramedConnection): Promise<void> {
    while (this.chunks.length > 0) {
      const chunk = this.chunks.shift()!;
      await this.send(connection, chunk, this.finished && !this.failure && this.chunks.length === 0);
    }
  }

  private async send(connection: FramedConnection, chunk: Uint8Array, last: boolean): Promise<void> {
    this.sentAny = true;
    this.lastSent = last;
    await connection.send(MessageType.DeviceState, encodeDeviceStateHead(last), Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }

  private add(part: unknown): void {
    if (!(part instanceof Uint8Array)) {
      this.refuse(`hooks.deviceState must return a Uint8Array (or Buffer), or an AsyncIterable of them; got ${shown(part)}`);
    }
    this.total += part.byteLength;
    if (this.total > MAX_DEVICE_STATE_BYTES) {
      this.refuse(`hooks.deviceState gave more than ${MAX_DEVICE_STATE_BYTES} bytes, the most a migration carries`);
    }
    for (let at = 0; at < part.byteLength; at += DEVICE_STATE_CHUNK_BYTES) {
      this.chunks.push(part.subarray(at, Math.min(part.byteLength, at + DEVICE_STATE_CHUNK_BYTES)));
    }
    this.wake?.();
  }

  private refuse(message: string): never {
    this.failure = new InvalidArgumentError(message);
    throw this.failure;
  }
}
