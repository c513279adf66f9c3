// One end of the benchmark: `node dist/bench/agent.js source|target`, driven over IPC by
// bench/migrate.ts. The same process serves every repetition, the plain TCP copy and the migration
// alike, so both measure the same pair of processes.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileSha256 } from '../src/cli/file-sha256.js';
import { ProgressLine } from '../src/cli/output.js';
import { runSource } from '../src/cli/run-source.js';
import { asPagewireError } from '../src/errors.js';
import { regionSha256 } from '../src/memory/region-sha256.js';
import { MemoryRegion } from '../src/memory/region.js';
import type { RoundReport } from '../src/migration/metrics.js';
import { FileTargetImage, MemoryTargetImage, type TargetImage } from '../src/migration/target-image.js';
import { MigrationTarget } from '../src/migration/target.js';
import type {
  AgentMessage, AgentRequest, AgentRole, BaselineReceiveResult, BaselineSendResult, DriverMessage, ErrorInfo,
  MigrateReceiveResult, MigrateSendResult, RssPeak,
} from './protocol.js';

/** Bytes per socket.write() of the baseline: windows of the mapping, written without copying. */
const BASELINE_WRITE_BYTES = 8 << 20;
/** How often an agent samples its own RSS during a migration. */
const RSS_SAMPLE_MS = 20;

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

/**
 * Samples this process's RSS every RSS_SAMPLE_MS from construction to stop(), keeping the peak, and
 * the peak of what is counted against the bound: anonymous and shared memory, plus file-backed pages up
 * to one region. The source's region is a mapping of the image file, and the synthetic writer maps the
 * same file once more in its thread: Rss counts those pages twice, though they are the same memory.
 */
class RssSampler {
  private readonly startBytes = process.memoryUsage.rss();
  private peakBytes = 0;
  private peakCountedBytes = 0;
  private atPeak: RssPeak['atPeak'] = null;
  private samples = 0;
  private maxGapMs = 0;
  private last = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly regionBytes: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), RSS_SAMPLE_MS);
  }

  stop(): RssPeak {
    this.sample();
    clearInterval(this.timer);
    return {
      startBytes: this.startBytes, peakBytes: this.peakBytes, peakCountedBytes: this.peakCountedBytes, atPeak: this.atPeak,
      atEnd: rollup(), samples: this.samples,
      maxGapMs: Math.round(this.maxGapMs),
    };
  }

  private sample(): void {
    const now = performance.now();
    this.maxGapMs = Math.max(this.maxGapMs, now - this.last);
    this.last = now;
    const rss = process.memoryUsage.rss();
    const parts = rssParts();
    const counted = parts ? parts.anonBytes + parts.shmemBytes + Math.min(parts.fileBytes, this.regionBytes) : rss;
    this.peakCountedBytes = Math.max(this.peakCountedBytes, counted);
    if (rss > this.peakBytes) {
      this.peakBytes = rss;
      this.atPeak = parts;
    }
    this.samples++;
  }
}

/** RssAnon, RssFile and RssShmem from /proc/self/status, or null where there is none. */
function rssParts(): RssPeak['atPeak'] {
  const kib = procKib('/proc/self/status', ['RssAnon', 'RssFile', 'RssShmem']);
  return kib && { anonBytes: kib.RssAnon! * 1024, fileBytes: kib.RssFile! * 1024, shmemBytes: kib.RssShmem! * 1024 };
}

/** Rss and Pss from /proc/self/smaps_rollup, or null where there is none. */
function rollup(): RssPeak['atEnd'] {
  const kib = procKib('/proc/self/smaps_rollup', ['Rss', 'Pss', 'Pss_Anon', 'Pss_File']);
  return kib && {
    rssBytes: kib.Rss! * 1024, pssBytes: kib.Pss! * 1024, pssAnonBytes: kib.Pss_Anon! * 1024, pssFileBytes: kib.Pss_File! * 1024,
  };
}

/** "Name:   123 kB" lines of a /proc file as numbers of KiB; null if the file or a field is missing. */
function procKib(path: string, fields: string[]): Record<string, number> | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  const values: Record<string, number> = {};
  for (const field of fields) {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!match) return null;
    values[field] = Number(match[1]);
  }
  return values;
}

// ---- target state ----
let receiveBuffer: Buffer | undefined;
let baselineDone: Promise<BaselineReceiveResult> | undefined;
let migration: {
  target: MigrationTarget; outPath: string | undefined; controller: AbortController; timer: NodeJS.Timeout; rss: RssSampler;
} | undefined;

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
      await collectGarbage();
      let image: TargetImage;
      if (request.into === 'memory') {
        if (!receiveBuffer) throw new Error('migrate-listen into memory before init');
        // The baseline's pre-faulted buffer, not zeroed: the source then sends zero pages as records.
        image = new MemoryTargetImage(MemoryRegion.fromMemory(receiveBuffer), false);
      } else {
        image = new FileTargetImage(request.outPath);
      }
      const rss = new RssSampler(receiveBuffer?.length ?? 0);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new Error('bench step timed out')), request.timeoutMs);
      let target: MigrationTarget;
      try {
        target = await MigrationTarget.listen({
          image, host: '127.0.0.1', port: 0, signal: controller.signal,
          ...(request.tlsKey ? { psk: request.tlsKey, tls: true } : {}),
        });
      } catch (error) {
        clearTimeout(timer);
        rss.stop();
        throw error;
      }
      migration = { target, outPath: request.into === 'memory' ? undefined : request.outPath, controller, timer, rss };
      return { port: target.address.port };
    }
    case 'migrate-result': {
      if (!migration) throw new Error('migrate-result without migrate-listen');
      const { target, outPath, timer, rss: sampler } = migration;
      let rss: RssPeak | undefined;
      try {
        const summary = await target.result;
        rss = sampler.stop();
        const sha256 = outPath ? await fileSha256(outPath) : bufferSha256(receiveBuffer!);
        return { summary, sha256, rss } satisfies MigrateReceiveResult;
      } catch (error) {
        const summary = target.metrics;
        return { ...(summary ? { summary } : {}), error: errorInfo(error), rss: rss ?? sampler.stop() } satisfies MigrateReceiveResult;
      } finally {
        clearTimeout(timer);
        migration = undefined;
        if (outPath) rmSync(outPath, { force: true });
      }
    }
    case 'migrate-send': {
      const progress = new RecordingProgress(request.verbose ? process.stderr : nowhere);
      await collectGarbage();
      const rss = new RssSampler(statSync(request.imagePath).size);
      const outcome = await runSource({
        imagePath: request.imagePath, host: '127.0.0.1', port: request.port, signal: AbortSignal.timeout(request.timeoutMs),
        progress, workload: request.workload, streams: request.streams, lz4: request.lz4, maxDowntimeMs: request.maxDowntimeMs,
        ...(request.tlsKey ? { psk: request.tlsKey, tls: true } : {}),
      }).catch((error: unknown) => {
        rss.stop();
        throw error;
      });
      const peak = rss.stop();
      return {
        summary: outcome.summary, sha256: outcome.sha256, workloadWrites: outcome.workloadWrites, rounds: progress.rounds, rss: peak,
        ...(outcome.error ? { error: errorInfo(outcome.error) } : {}),
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
async function baselineSend(port: number, imagePath: string, timeoutMs: number): Promise<BaselineSendResult> {
  const region = MemoryRegion.mapFile(imagePath);
  let socket: Socket | undefined;
  let finished = false;
  try {
    const windows = [...region.windows(BASELINE_WRITE_BYTES)];
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
      for (const window of windows) {
        if (!s.write(window)) await Promise.race([new Promise<void>((resolve) => s.once('drain', () => resolve())), failed]);
      }
      await Promise.race([acked, failed]);
      const done = performance.now();
      return { totalMs: done - started, connectMs: connected - started, bytesWritten: s.bytesWritten };
    })();
    const result = await raceTimeout(timed, timeoutMs, `baseline copy did not complete within ${timeoutMs} ms`);
    finished = true;
    const s = socket!;
    await new Promise<void>((resolve) => { s.once('close', () => resolve()); s.end(); });
    return { ...result, sha256: regionSha256(region) };
  } finally {
    socket?.destroy();
    region.close();
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
