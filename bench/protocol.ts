// The messages between the bench driver (bench/migrate.ts) and its two agent processes (bench/agent.ts),
// and the driver's side of the IPC: one request at a time per command id, each with a deadline.
import { fork, type ChildProcess } from 'node:child_process';
import type { Lz4Mode } from '../src/codec/lz4-policy.js';
import type { sourceJson } from '../src/cli/run-source.js';
import type { RoundReport } from '../src/migration/metrics.js';
import type { TargetSummary } from '../src/migration/target.js';
import type { WorkloadSpec } from '../src/workload/workload-spec.js';
import type { RssPeak } from './proc-memory.js';

export type AgentRole = 'source' | 'target';

export type AgentRequest =
  // target: allocate and pre-fault the baseline's receive buffer
  | { cmd: 'init'; size: number }
  // target: open a plain TCP server for one baseline copy; replies with the port
  | { cmd: 'baseline-listen'; timeoutMs: number }
  // target: resolves once the baseline copy has fully arrived
  | { cmd: 'baseline-result' }
  // source: map the image, copy it over a plain socket, wait for the target's one-byte ack
  | { cmd: 'baseline-send'; port: number; imagePath: string; timeoutMs: number }
  // target: MigrationTarget.listen into the baseline's pre-faulted buffer; replies with the port. Its RSS
  // is sampled from here until the migration ends. (tlsKey: that pre-shared key on both ends, inside TLS-PSK unless tls is false)
  | { cmd: 'migrate-listen'; timeoutMs: number; tlsKey?: Uint8Array; tls?: boolean }
  // target: resolves when the migration ended (either way), with the buffer's sha256 and the RSS peak
  | { cmd: 'migrate-result' }
  // source: runSource() on the image, with or without the synthetic workload; streams and
  // maxDowntimeMs left out mean runSource's defaults. Its RSS is sampled for the whole call.
  | {
    cmd: 'migrate-send'; port: number; imagePath: string; workload?: WorkloadSpec; streams?: number; lz4?: Lz4Mode; maxDowntimeMs?: number; tlsKey?: Uint8Array; tls?: boolean;
    timeoutMs: number; verbose: boolean;
  };

export interface BaselineSendResult {
  /** From connect() to the target's ack of the last byte (one extra loopback round trip). */
  totalMs: number;
  connectMs: number;
  bytesWritten: number;
  /** SHA-256 of the image as sent (computed after the timed part). */
  sha256: string;
}

export interface BaselineReceiveResult {
  /** From the accept to the last byte, on the target's clock. */
  acceptToLastByteMs: number;
  bytesReceived: number;
  /** SHA-256 of the receive buffer (computed after the timed part). */
  sha256: string;
}

export interface ErrorInfo {
  message: string;
  code?: string;
}

export interface MigrateSendResult {
  /** What `pagewire send --json --sha256` prints for the same run (sha256: the region's at the pause point). */
  json: ReturnType<typeof sourceJson>;
  error?: ErrorInfo;
  rounds: RoundReport[];
  rss: RssPeak;
}

export interface MigrateReceiveResult {
  summary?: TargetSummary;
  error?: ErrorInfo;
  /** SHA-256 of the receive buffer (absent on failure). */
  sha256?: string;
  rss: RssPeak;
}

export type AgentMessage =
  | { kind: 'ready' }
  | { kind: 'reply'; id: number; ok: true; result: unknown }
  | { kind: 'reply'; id: number; ok: false; error: ErrorInfo };

export type DriverMessage = { id: number; request: AgentRequest };

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** The driver's handle on one agent process. */
export class AgentClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private gone: Error | undefined;
  private readonly ready: Promise<void>;

  private constructor(readonly role: AgentRole, readonly child: ChildProcess) {
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => { readyResolve = resolve; readyReject = reject; });
    this.ready.catch(() => {});
    child.on('message', (raw) => {
      const message = raw as AgentMessage;
      if (message.kind === 'ready') { readyResolve(); return; }
      const waiting = this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id);
      clearTimeout(waiting.timer);
      if (message.ok) waiting.resolve(message.result);
      else waiting.reject(new Error(`${role} agent: ${message.error.message}${message.error.code ? ` (${message.error.code})` : ''}`));
    });
    const onGone = (error: Error) => {
      if (this.gone) return;
      this.gone = error;
      readyReject(error);
      for (const [id, waiting] of this.pending) {
        this.pending.delete(id);
        clearTimeout(waiting.timer);
        waiting.reject(error);
      }
    };
    child.on('exit', (code, signal) => onGone(new Error(`${role} agent exited (code ${code}, signal ${signal})`)));
    child.on('error', (error) => onGone(new Error(`${role} agent failed: ${error.message}`)));
  }

  /** Forks `node agentPath role` with an IPC channel; resolves once the agent says it is ready. */
  static async start(agentPath: string, role: AgentRole, timeoutMs: number): Promise<AgentClient> {
    // --expose-gc: an agent collects before each migration, so the mappings of earlier steps (unmapped
    // only once no view of them is reachable) are gone before its RSS is sampled.
    const child = fork(agentPath, [role], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced', execArgv: [...process.execArgv, '--expose-gc'],
    });
    const client = new AgentClient(role, child);
    await withTimeout(client.ready, timeoutMs, `${role} agent did not start within ${timeoutMs} ms`);
    return client;
  }

  request<T>(request: AgentRequest, timeoutMs: number): Promise<T> {
    if (this.gone) return Promise.reject(this.gone);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.role} agent: '${request.cmd}' got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.send({ id, request } satisfies DriverMessage, (error) => {
        if (!error) return;
        const waiting = this.pending.get(id);
        if (!waiting) return;
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new Error(`${this.role} agent: cannot send '${request.cmd}': ${error.message}`));
      });
    });
  }

  /** Kills the agent (SIGKILL: it may be stuck in a native call); safe to call more than once. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
