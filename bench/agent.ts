// One end of the benchmark's library path: `node dist/bench/agent.js source|target`, driven over IPC by
// bench/migrate.ts. The same process serves every repetition, the plain TCP copy (the floor of every
// scenario) and the library migrations into pre-faulted memory (the -mem scenarios) alike, so both
// measure the same pair of processes.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { fileSha256 } from '../src/cli/file-sha256.js';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { ProgressLine } from '../src/cli/output.js';
import { runSource, sourceJson } from '../src/cli/run-source.js';
import { asPagewireError } from '../src/errors.js';
import { MemoryRegion } from '../src/memory/region.js';
import type { RoundReport } from '../src/migration/metrics.js';
import { MemoryTargetImage } from '../src/migration/target-image.js';
import { MigrationTarget } from '../src/migration/target.js';
import type {
  AgentMessage, AgentRequest, AgentRole, BaselineReceiveResult, BaselineSendResult, DriverMessage, ErrorInfo,
  MigrateReceiveResult, MigrateSendResult,
} from './protocol.js';
import { RssSampler, type RssPeak } from './proc-memory.js';

/** Bytes per socket.write() of the baseline: windows of the mapping, written without copying. */
const BASELINE_WRITE_BYTES = 4 << 20;
/** Buffers the plain copy reads into and the socket writes from, in turn. */
const BASELINE_BUFFERS = 4;

const role = process.argv[2] as AgentRole;
if (role !== 'source' && role !== 'target') {
  process.stderr.write(`bench agent: expected role 'source' or 'target', got '${role}'\n`);
  process.exit(2);
}
if (!process.send) {
  process.stderr.write('bench agent: must be started by bench/migrate.ts with an IPC channel\n');
  process.exit(2);
}
// Never outlive the driver.
process.on('disconnect', () => process.exit(3));

function reply(message: AgentMessage): void {
  process.send!(message);
}

function errorInfo(error: unknown): ErrorInfo {
  const e = asPagewireError(error);
  return { message: e.message, code: e.code };
}

/** A ProgressLine that writes nowhere (or to stderr with --verbose) and keeps every round report. */
class RecordingProgress extends ProgressLine {
  readonly rounds: RoundReport[] = [];
  override round(r: RoundReport): void {
    this.rounds.push({ ...r });
    super.round(r);
  }
}

const nowhere = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream;

/**
 * A full garbage collection (the agents run with --expose-gc), then one more after the finalizers it
 * queued: a closed file mapping is unmapped only once its last view is collected.
 */
async function collectGarbage(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return;
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
}

// ---- target state ----
let receiveBuffer: Buffer | undefined;
let baselineDone: Promise<BaselineReceiveResult> | undefined;
let migration: { target: MigrationTarget; timer: NodeJS.Timeout; rss: RssSampler } | undefined;

async function handle(request: AgentRequest): Promise<unknown> {
  switch (request.cmd) {
    case 'init': {
      // Pre-allocated and pre-faulted: every page is touched once here, never during a timed copy.
      receiveBuffer = Buffer.allocUnsafeSlow(request.size);
      receiveBuffer.fill(0x5a);
      return {};
    }
    case 'baseline-listen':
      return baselineListen(request.timeoutMs);
    case 'baseline-result': {
      if (!baselineDone) throw new Error('baseline-result without baseline-listen');
      const done = baselineDone;
      baselineDone = undefined;
      return done;
    }
    case 'baseline-send':
      return baselineSend(request.port, request.imagePath, request.timeoutMs);
    case 'migrate-listen': {
      if (migration) throw new Error('a migration target is already listening');
      if (!receiveBuffer) throw new Error('migrate-listen before init');
      await collectGarbage();
      // The baseline's pre-faulted buffer, not zeroed: the source then sends zero pages as records.
      const image = new MemoryTargetImage(MemoryRegion.fromMemory(receiveBuffer), { zeroed: false });
      const rss = new RssSampler('self', receiveBuffer.length);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new Error('bench step timed out')), request.timeoutMs);
      let target: MigrationTarget;
      try {
        target = await MigrationTarget.listen({
          image, host: '127.0.0.1', port: 0, signal: controller.signal,
          ...(request.tlsKey ? { psk: request.tlsKey, tls: request.tls !== false } : {}),
        });
      } catch (error) {
        clearTimeout(timer);
        rss.stop();
        throw error;
      }
      migration = { target, timer, rss };
      return { port: target.address.port };
    }
    case 'migrate-result': {
      if (!migration) throw new Error('migrate-result without migrate-listen');
      const { target, timer, rss: sampler } = migration;
      let rss: RssPeak | undefined;
      try {
        const summary = await target.result;
        rss = sampler.stop();
        return { summary, sha256: bufferSha256(receiveBuffer!), rss } satisfies MigrateReceiveResult;
      } catch (error) {
        const summary = target.metrics;
        return { ...(summary ? { summary } : {}), error: errorInfo(error), rss: rss ?? sampler.stop() } satisfies MigrateReceiveResult;
      } finally {
        clearTimeout(timer);
        migration = undefined;
      }
    }
    case 'migrate-send': {
      const progress = new RecordingProgress(request.verbose ? process.stderr : nowhere);
      await collectGarbage();
      const rss = new RssSampler('self', statSync(request.imagePath).size);
      // sha256: the region's at the pause point, hashed after the timed migration, to check the target's copy.
      const outcome = await runSource({
        imagePath: request.imagePath, endpoint: { host: '127.0.0.1', port: request.port }, signal: AbortSignal.timeout(request.timeoutMs),
        progress, workload: request.workload, streams: request.streams, lz4: request.lz4, maxDowntimeMs: request.maxDowntimeMs,
        sha256: true, ...(request.tlsKey ? { psk: request.tlsKey, tls: request.tls !== false } : {}),
      }).catch((error: unknown) => {
        rss.stop();
        throw error;
      });
      const peak = rss.stop();
      return {
        json: sourceJson(outcome), rounds: progress.rounds, rss: peak, ...(outcome.error ? { error: errorInfo(outcome.error) } : {}),
      } satisfies MigrateSendResult;
    }
  }
}

/** Target side of the plain TCP copy: every byte lands in the pre-faulted buffer, then a one-byte ack. */
async function baselineListen(timeoutMs: number): Promise<{ port: number }> {
  const buffer = receiveBuffer;
  if (!buffer) throw new Error('baseline-listen before init');
  if (baselineDone) throw new Error('a baseline copy is already pending');
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const port = (server.address() as { port: number }).port;
  const received = new Promise<{ acceptToLastByteMs: number; bytesReceived: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      server.close();
      reject(new Error(`baseline copy did not complete within ${timeoutMs} ms`));
    }, timeoutMs);
    server.once('connection', (socket: Socket) => {
      server.close();
      const accepted = performance.now();
      let offset = 0;
      socket.setNoDelay(true);
      const fail = (error: Error) => { clearTimeout(timer); socket.destroy(); reject(error); };
      socket.on('data', (chunk: Buffer) => {
        if (offset + chunk.length > buffer.length) {
          fail(new Error(`baseline: received more than the ${buffer.length} bytes expected`));
          return;
        }
        chunk.copy(buffer, offset);
        offset += chunk.length;
        if (offset === buffer.length) {
          const lastByte = performance.now();
          socket.write(Buffer.of(1));
          clearTimeout(timer);
          resolve({ acceptToLastByteMs: lastByte - accepted, bytesReceived: offset });
        }
      });
      socket.on('error', (error) => fail(new Error(`baseline socket: ${error.message}`)));
      socket.on('end', () => {
        if (offset !== buffer.length) fail(new Error(`baseline: connection ended after ${offset} of ${buffer.length} bytes`));
        socket.end();
      });
    });
  });
  baselineDone = received.then((r) => ({
    ...r, sha256: bufferSha256(buffer),
  }));
  baselineDone.catch(() => {});
  return { port };
}

/** Source side of the plain TCP copy: the mapped image, written in windows with backpressure. */
/**
 * The plain copy reads the image as pagewire's source does, with pread into buffers it reuses (a fresh
 * mapping costs about 1.3 s of CPU per GiB in first touches on this VM, fresh buffers about as much),
 * and writes them to one socket.
 */
async function baselineSend(port: number, imagePath: string, timeoutMs: number): Promise<BaselineSendResult> {
  const fd = openSync(imagePath, 'r');
  const size = fstatSync(fd).size;
  const free = Array.from({ length: BASELINE_BUFFERS }, () => Buffer.allocUnsafeSlow(BASELINE_WRITE_BYTES));
  let bufferFreed: (() => void) | undefined;
  let socket: Socket | undefined;
  let finished = false;
  try {
    const timed = (async () => {
      const started = performance.now();
      const s = connect({ host: '127.0.0.1', port, noDelay: true });
      socket = s;
      const failed = new Promise<never>((_, reject) => {
        s.on('error', (error) => reject(new Error(`baseline socket: ${error.message}`)));
        s.on('close', () => { if (!finished) reject(new Error('baseline: the target closed the connection before its ack')); });
      });
      failed.catch(() => {});
      const acked = new Promise<void>((resolve) => s.once('data', () => resolve()));
      await Promise.race([new Promise<void>((resolve) => s.once('connect', () => resolve())), failed]);
      const connected = performance.now();
      for (let at = 0; at < size;) {
        while (free.length === 0) await Promise.race([new Promise<void>((resolve) => { bufferFreed = resolve; }), failed]);
        const buffer = free.pop()!;
        const n = readSync(fd, buffer, 0, Math.min(buffer.length, size - at), at);
        if (n === 0) throw new Error(`baseline: ${imagePath} ended at ${at} of ${size} bytes`);
        at += n;
        // The socket holds the buffer until its bytes are written out; then it is read into again.
        const flushed = s.write(buffer.subarray(0, n), () => { free.push(buffer); bufferFreed?.(); });
        if (!flushed) await Promise.race([new Promise<void>((resolve) => s.once('drain', () => resolve())), failed]);
      }
      await Promise.race([acked, failed]);
      const done = performance.now();
      return { totalMs: done - started, connectMs: connected - started, bytesWritten: s.bytesWritten };
    })();
    const result = await raceTimeout(timed, timeoutMs, `baseline copy did not complete within ${timeoutMs} ms`);
    finished = true;
    const s = socket!;
    await new Promise<void>((resolve) => { s.once('close', () => resolve()); s.end(); });
    return { ...result, sha256: await fileSha256(imagePath) };
  } finally {
    socket?.destroy();
    closeSync(fd);
  }
}

function raceTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

process.on('message', (raw) => {
  const { id, request } = raw as DriverMessage;
  handle(request).then(
    (result) => reply({ kind: 'reply', id, ok: true, result }),
    (error: unknown) => reply({ kind: 'reply', id, ok: false, error: errorInfo(error) }),
  );
});
reply({ kind: 'ready' });

/** SHA-256 of a buffer of any size: one update() takes at most 2 GiB. */
function bufferSha256(buffer: Buffer): string {
  const hash = createHash('sha256');
  for (let at = 0; at < buffer.length; at += 1 << 30) hash.update(buffer.subarray(at, Math.min(buffer.length, at + (1 << 30))));
  return hash.digest('hex');
}
