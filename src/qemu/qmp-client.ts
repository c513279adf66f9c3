// A QEMU Machine Protocol client over QEMU's Unix socket: one JSON object per line each way. Commands are
// answered in order (QEMU handles one at a time per monitor), so replies are matched by a queue; events
// (lines with "event") go to listeners. Errors are typed: QmpError carries QEMU's class and description.
import { connect, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { PagewireError } from '../errors.js';

/** How long QEMU's monitor may take to greet or to answer a command. */
const MONITOR_TIMEOUT_MS = 30_000;

/** QEMU refused a command, or its monitor went away. */
export class QmpError extends PagewireError {
  override readonly code = 'PW_ERR_QMP';
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class QmpClient {
  private readonly pending: Pending[] = [];
  private readonly listeners = new Set<(event: QmpEvent) => void>();
  private buffered = '';
  private closedBy: Error | undefined;

  private constructor(private readonly socket: Socket, readonly path: string) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.take(text));
    socket.on('error', (error) => this.close(new QmpError(`QMP ${path}: ${error.message}`, { cause: error })));
    socket.on('close', () => this.close(new QmpError(`QMP ${path}: QEMU closed its monitor`)));
  }

  /**
   * Connects, reads the greeting and leaves capabilities negotiation done: ready for commands. A monitor
   * that does not greet within `timeoutMs` (QEMU greets one client at a time: another may hold it) fails.
   */
  static async connect(path: string, timeoutMs = MONITOR_TIMEOUT_MS): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path, () => { s.off('error', reject); resolve(s); });
      s.once('error', (error) => reject(new QmpError(`cannot reach QEMU's monitor at ${path}: ${error.message}`, { cause: error })));
    });
    const client = new QmpClient(socket, path);
    const timer = setTimeout(() => client.close(new QmpError(`QEMU's monitor at ${path} did not greet within ${timeoutMs} ms: ` +
      'is another client connected to it?')), timeoutMs);
    try {
      // The greeting comes first and unasked: it takes the first place in the reply queue.
      await new Promise((resolve, reject) => client.pending.push({ command: 'greeting', resolve, reject }));
      await client.execute('qmp_capabilities');
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /**
   * Connects to the monitor of a QEMU that is starting: its socket appears once QEMU has parsed its
   * options, so a refused or missing socket is tried again, until `timeoutMs` or until `gone()` says QEMU
   * has exited.
   */
  static async connectWhenListening(path: string, timeoutMs: number, gone: () => boolean = () => false): Promise<QmpClient> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        return await QmpClient.connect(path);
      } catch (error) {
        if (gone() || performance.now() > deadline) throw error;
        await delay(5);
      }
    }
  }

  /** Runs a command; resolves with its "return", rejects with QEMU's error, or when QEMU does not answer within timeoutMs. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = MONITOR_TIMEOUT_MS): Promise<unknown> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    return new Promise<unknown>((resolve, reject) => {
      // QEMU answers in order: a command it never answers leaves the monitor unusable, so it is closed.
      const timer = setTimeout(() => this.close(new QmpError(`QEMU did not answer ${command} within ${timeoutMs} ms`)), timeoutMs);
      const settle = <T>(then: (value: T) => void) => (value: T) => { clearTimeout(timer); then(value); };
      this.pending.push({ command, resolve: settle(resolve), reject: settle(reject) });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /** Calls `listener` with each event until it returns true; resolves then (or rejects if QEMU goes away). */
  until(listener: (event: QmpEvent) => boolean): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      if (this.closedBy) return reject(this.closedBy);
      const onEvent = (event: QmpEvent) => {
        if (event.event === '') {
          this.listeners.delete(onEvent);
          reject(this.closedBy);
        } else if (listener(event)) {
          this.listeners.delete(onEvent);
          resolve(event);
        }
      };
      this.listeners.add(onEvent);
    });
  }

  close(reason: Error = new QmpError(`QMP ${this.path}: closed`)): void {
    if (this.closedBy) return;
    this.closedBy = reason;
    for (const waiting of this.pending.splice(0)) waiting.reject(reason);
    // An empty event name tells waiting listeners the monitor is gone.
    for (const listener of [...this.listeners]) listener({ event: '' });
    this.socket.destroy();
  }

  private take(text: string): void {
    this.buffered += text;
    for (let end = this.buffered.indexOf('\n'); end >= 0; end = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, end).trim();
      this.buffered = this.buffered.slice(end + 1);
      if (line) this.handle(line);
    }
  }

  private handle(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.close(new QmpError(`QMP ${this.path}: not JSON: ${line.slice(0, 80)}`));
      return;
    }
    if (typeof message.event === 'string') {
      for (const listener of [...this.listeners]) listener(message as unknown as QmpEvent);
      return;
    }
    const waiting = this.pending.shift();
    if (!waiting) return;
    if ('error' in message) {
      const error = message.error as { class?: string; desc?: string };
      waiting.reject(new QmpError(`QEMU refused ${waiting.command}: ${error.desc ?? 'unknown error'} (${error.class ?? '?'})`));
    } else {
      waiting.resolve(message.return ?? message.QMP);
    }
  }
}
