// An in-process TCP proxy for network-fault tests. It reads whole frames both ways, so a fault can be
// tied to a message (a phase of the migration) rather than to a byte count that shifts with the codec:
// cut the connection (FIN), reset it (RST), stall it (the peer vanishes without FIN: half-open, found
// only by idle timeouts), or flip a payload byte. It can also add latency, cap the bandwidth, and hold a
// frame back until the test lets it go.
import { connect, createServer, type Server, type Socket } from 'node:net';

export type Direction = 'to-target' | 'to-source';

export interface ProxiedFrame {
  direction: Direction;
  /** Which accepted connection, in accept order (0 is the source's first). */
  connection: number;
  type: number;
  payload: Buffer;
}

/**
 * cut: both sides closed; reset: both sides get an RST; stall: nothing more moves, nothing is closed;
 * rewrite: the payload is changed in place by someone who knows the format but no key.
 */
export type Fault = 'cut' | 'reset' | 'stall' | { corruptPayloadByte: number } | { rewrite(payload: Buffer): void };

export interface FaultProxyOptions {
  /** Asked before each frame is forwarded; a fault applies to that frame's connection. */
  fault?(frame: ProxiedFrame): Fault | undefined;
  /** Asked as each frame arrives: a promise holds it (and what follows it that way) until it settles. */
  hold?(frame: ProxiedFrame): Promise<void> | undefined;
  /** Added to every frame's trip, each way. */
  delayMs?: number;
  /** Per connection and direction. */
  bytesPerSec?: number;
  /** Reset (RST) the first connection once this many bytes have gone from the source towards the target. */
  resetAtByte?: number;
}

/** Unforwarded bytes per direction beyond which the proxy stops reading (its own backpressure). */
const MAX_QUEUED_BYTES = 4 << 20;

export class FaultProxy {
  private readonly sockets = new Set<Socket>();
  private accepted = 0;
  /** Faults injected so far, in order. */
  readonly injected: Array<{ fault: Fault; frame: Omit<ProxiedFrame, 'payload'> }> = [];

  private constructor(private readonly server: Server) {}

  static async start(targetPort: number, options: FaultProxyOptions = {}): Promise<FaultProxy> {
    let proxy!: FaultProxy;
    const server = createServer((client) => proxy.relay(client, targetPort, options));
    proxy = new FaultProxy(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Stops listening and drops every connection, stalled ones included. */
  close(): void {
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }

  private relay(client: Socket, targetPort: number, options: FaultProxyOptions): void {
    const connection = this.accepted++;
    const upstream = connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    let stalled = false;
    const end = (how: 'cut' | 'reset') => {
      for (const socket of [client, upstream]) {
        if (how === 'reset') socket.resetAndDestroy();
        else socket.destroy();
      }
    };
    const pipe = (from: Socket, to: Socket, direction: Direction) => {
      let pending = Buffer.alloc(0);
      let queue = Promise.resolve();
      let queued = 0;
      let sentAt = performance.now();
      let seen = 0;
      const forward = (bytes: Buffer, held: Promise<void> | undefined) => {
        queued += bytes.length;
        if (queued > MAX_QUEUED_BYTES) from.pause();
        const due = performance.now() + (options.delayMs ?? 0);
        queue = queue.then(async () => {
          await held;
          // Latency: the frame leaves no earlier than delayMs after it arrived; bandwidth: no earlier
          // than the bytes before it allow.
          const paced = options.bytesPerSec ? sentAt + (bytes.length * 1000) / options.bytesPerSec : 0;
          const wait = Math.max(due, paced) - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          sentAt = Math.max(performance.now(), paced);
          if (!stalled && !to.destroyed) to.write(bytes);
          queued -= bytes.length;
          if (queued <= MAX_QUEUED_BYTES && from.isPaused() && !stalled) from.resume();
        });
      };
      from.on('data', (chunk: Buffer) => {
        if (stalled) return;
        if (direction === 'to-target' && connection === 0 && options.resetAtByte !== undefined) {
          seen += chunk.length;
          if (seen > options.resetAtByte) {
            this.injected.push({ fault: 'reset', frame: { direction, connection, type: -1 } });
            return end('reset');
          }
        }
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 8 && pending.length >= 8 + pending.readUInt32LE(4)) {
          const length = 8 + pending.readUInt32LE(4);
          const bytes = Buffer.from(pending.subarray(0, length));
          pending = pending.subarray(length);
          const frame = { direction, connection, type: bytes[0]!, payload: bytes.subarray(8) };
          const fault = options.fault?.(frame);
          if (fault !== undefined) {
            this.injected.push({ fault, frame: { direction, connection, type: frame.type } });
            if (fault === 'cut' || fault === 'reset') return end(fault);
            if (fault === 'stall') {
              // Both directions stop here and nothing is closed: to each end, the other went silent.
              stalled = true;
              client.pause();
              upstream.pause();
              return;
            }
            if ('rewrite' in fault) fault.rewrite(bytes.subarray(8));
            else bytes[8 + fault.corruptPayloadByte]! ^= 0x40;
          }
          forward(bytes, options.hold?.(frame));
        }
      });
      from.on('end', () => { if (!stalled) void queue.then(() => to.end()); });
      from.on('close', () => { if (!stalled) void queue.then(() => to.destroy()); });
    };
    pipe(client, upstream, 'to-target');
    pipe(upstream, client, 'to-source');
  }
}
