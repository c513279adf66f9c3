// Network faults in each phase of a migration, injected by a proxy between the two ends (real sockets,
// a real file target with a previous --out), each checked against the switch-over table of
// docs/PROTOCOL.md section 6: who resumes, what the target keeps, what each side reports.
import { randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DirtyBitmap, FileTargetImage, MemoryRegion, MigrationSource, MigrationTarget, SwitchoverError, type PagewireError,
} from '../dist/src/index.js';
import { MessageType, STOP_AND_COPY } from '../dist/src/wire/messages.js';
import { FaultProxy, type Fault, type FaultProxyOptions, type ProxiedFrame } from './fault-proxy.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;
/** Two stripes of 256 pages: two streams. */
const BYTES = 512 * PAGE;

interface Knobs {
  /** Idle timeouts: the target's, the source's, and the source's wait for ROUND_ACK and READY. */
  target?: number;
  source?: number;
  persist?: number;
  sourceSignal?: AbortSignal;
  targetSignal?: AbortSignal;
  /** Let the source reconnect and resume (off by default here: these tests check what a fault ends). */
  resume?: boolean;
  psk?: Buffer;
}

/**
 * Three pre-copy rounds of 2 MiB over two streams into a file target whose previous --out must survive,
 * through a fault proxy. Pages change while rounds run (a writer fed by progress events, paused with the
 * source), so rounds 2 and 3 carry pages.
 */
async function migrateThrough(name: string, proxyOptions: FaultProxyOptions, timeouts: Knobs = {}) {
  const raw = Buffer.alloc(BYTES);
  randomFillSync(raw);
  const region = MemoryRegion.fromMemory(raw);
  const bitmap = new DirtyBitmap(region.pageCount);
  const out = join(tmp.dir, `${name}.img`);
  writeFileSync(out, 'previous state');
  const calls: string[] = [];
  const target = await MigrationTarget.listen({
    image: new FileTargetImage(out), host: '127.0.0.1', port: 0, timeoutMs: timeouts.target ?? 30_000,
    ...(timeouts.targetSignal ? { signal: timeouts.targetSignal } : {}),
    resumeWindowMs: timeouts.resume ? 5000 : 0, ...(timeouts.psk ? { psk: timeouts.psk } : {}),
    hooks: { resume: () => { calls.push('target resume'); } },
  });
  const targetResult = target.result.then(() => undefined, (e: PagewireError) => e);
  const proxy = await FaultProxy.start(target.address.port, proxyOptions);
  let paused = false;
  const source = new MigrationSource({
    region, dirtyBitmap: bitmap, host: '127.0.0.1', port: proxy.port, streams: 2, maxDowntimeMs: 0, maxRounds: 3,
    timeoutMs: timeouts.source ?? 30_000, persistTimeoutMs: timeouts.persist ?? 60_000,
    ...(timeouts.sourceSignal ? { signal: timeouts.sourceSignal } : {}),
    maxResumeAttempts: timeouts.resume ? 3 : 0, resumeBackoffMs: 50, ...(timeouts.psk ? { psk: timeouts.psk } : {}),
    hooks: {
      pause: () => { calls.push('source pause'); paused = true; },
      resume: () => { calls.push('source resume'); paused = false; },
    },
  });
  let next = 0;
  source.on('progress', () => {
    if (paused) return;
    for (let i = 0; i < 8; i++) {
      const page = (next = (next + 37) % region.pageCount);
      raw[page * PAGE + i] ^= 0x5a;
      bitmap.mark(page);
    }
  });
  const sourceError = await source.run().then(() => undefined, (e: PagewireError) => e);
  // A target that never heard a HELLO keeps listening, and only stop() ends it; one that began a
  // migration ends it by itself (no resume window here), so its result is awaited as it is.
  const phase = target.phase;
  if (phase === 'listening') target.stop();
  const targetError = await targetResult;
  target.stop();
  proxy.close();
  const leftovers = readdirSync(tmp.dir).filter((f) => f.startsWith(`.${name}.img.pagewire-`));
  return {
    raw, out, calls, sourceError, targetError, targetPhase: phase, injected: proxy.injected, leftovers,
    summary: source.metrics, targetSummary: target.metrics,
  };
}

/** The fault, on the first frame `match` accepts only: later frames (other streams') pass. */
function once(match: (frame: ProxiedFrame) => boolean, fault: Fault): FaultProxyOptions['fault'] {
  let done = false;
  return (frame) => {
    if (done || !match(frame)) return undefined;
    done = true;
    return fault;
  };
}

const toTarget = (type: MessageType, test: (frame: ProxiedFrame) => boolean = () => true) =>
  (frame: ProxiedFrame) => frame.direction === 'to-target' && frame.type === type && test(frame);
const round = (frame: ProxiedFrame) => frame.payload.readUInt32LE(0);
const stopAndCopy = (frame: ProxiedFrame) => (frame.payload.readUInt32LE(4) & STOP_AND_COPY) !== 0;

/** The outcome before the point of no return: the source runs on, the target drops everything. */
function expectNothingLost(r: Awaited<ReturnType<typeof migrateThrough>>, paused: boolean): void {
  expect(r.injected.length).toBe(1);
  expect(r.sourceError).toBeDefined();
  expect(r.sourceError).not.toBeInstanceOf(SwitchoverError);
  expect(r.calls).toEqual(paused ? ['source pause', 'source resume'] : []);
  expect(readFileSync(r.out, 'utf8')).toBe('previous state');
  expect(r.leftovers).toEqual([]);
}

describe('network faults, phase by phase', () => {
  it('handshake: a connection cut at HELLO fails the source, which never paused; the target keeps listening', async () => {
    const r = await migrateThrough('handshake', { fault: once(toTarget(MessageType.Hello), 'cut') });
    expectNothingLost(r, false);
    expect(r.sourceError!.code).toBe('PW_ERR_CONNECTION');
    expect(r.targetError?.code).toBe('PW_ERR_ABORTED'); // only from stop(): no migration had begun
    expect(r.targetPhase).toBe('listening');
  });

  it('round 1: a reset (RST) at the first pages fails both ends; the target discards, --out untouched', async () => {
    const r = await migrateThrough('round-1', { fault: once(toTarget(MessageType.Pages), 'reset') });
    expectNothingLost(r, false);
    expect(['PW_ERR_CONNECTION', 'PW_ERR_PEER']).toContain(r.sourceError!.code);
    expect(r.targetError?.code).toBe('PW_ERR_CONNECTION');
  });

  it('a later round: a cut at ROUND_BEGIN 2 fails both ends; the source never paused', async () => {
    const r = await migrateThrough('round-2', { fault: once(toTarget(MessageType.RoundBegin, (x) => round(x) === 2), 'cut') });
    expectNothingLost(r, false);
    expect(r.targetError?.code).toBe('PW_ERR_CONNECTION');
  });

  it('a half-open connection in a pre-copy round (peer gone without FIN) is found by the idle timeouts', async () => {
    const r = await migrateThrough('half-open', {
      fault: once(toTarget(MessageType.Pages, (x) => x.connection === 1), 'stall'),
    }, { target: 1000, source: 1000, persist: 1500 });
    expectNothingLost(r, false);
    expect(r.targetError?.code).toBe('PW_ERR_TIMEOUT');
  });

  it('stop-and-copy: a cut in the final round resumes the paused source; the target discards', async () => {
    const r = await migrateThrough('stop-and-copy', {
      fault: once(toTarget(MessageType.RoundBegin, stopAndCopy), 'cut'),
    });
    expectNothingLost(r, true);
    expect(r.targetError?.code).toBe('PW_ERR_CONNECTION');
  });

  it('after READY: READY stalled on its way (half-open) makes the source time out and resume; the target keeps the image in doubt', async () => {
    const r = await migrateThrough('after-ready', {
      fault: once((f) => f.direction === 'to-source' && f.type === MessageType.Ready, 'stall'),
    }, { target: 1000, persist: 1000 });
    expect(r.sourceError!.code).toBe('PW_ERR_TIMEOUT');
    expect(r.calls).toEqual(['source pause', 'source resume']);
    expect(r.targetError).toBeInstanceOf(SwitchoverError);
    expect((r.targetError as SwitchoverError).state).toBe('ready-sent-go-missing');
    expect(readFileSync(r.out, 'utf8')).toBe('previous state');
    expect(readFileSync((r.targetError as SwitchoverError).inDoubtImage!).equals(r.raw)).toBe(true);
  });

  it('after GO: DONE lost leaves the source handed over and paused; the target has committed and resumed', async () => {
    const r = await migrateThrough('after-go', {
      fault: once((f) => f.direction === 'to-source' && f.type === MessageType.Done, 'cut'),
    });
    expect(r.sourceError).toBeInstanceOf(SwitchoverError);
    expect((r.sourceError as SwitchoverError).state).toBe('handed-over-unconfirmed');
    expect(r.calls).toEqual(['source pause', 'target resume']);
    expect(r.targetError).toBeUndefined();
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });
});

describe('a slow network', () => {
  it('completes byte-exact through 5 ms of latency each way and 40 MB/s per connection', async () => {
    const r = await migrateThrough('slow', { delayMs: 5, bytesPerSec: 40e6 });
    expect(r.sourceError).toBeUndefined();
    expect(r.targetError).toBeUndefined();
    expect(r.calls).toEqual(['source pause', 'target resume']);
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });

  it('a corrupted payload byte on stream 1 fails the migration with PW_ERR_CHECKSUM before any pause', async () => {
    const r = await migrateThrough('corrupt', {
      fault: once(toTarget(MessageType.Pages, (x) => x.connection === 1), { corruptPayloadByte: 8 + 20 + 100 }),
    });
    expectNothingLost(r, false);
    expect(r.targetError?.code).toBe('PW_ERR_CHECKSUM');
    expect(r.sourceError!.code).toBe('PW_ERR_PEER');
  });
});

/** A proxy that lets everything through and aborts `controller` as the first frame `match` accepts passes. */
function abortAt(controller: AbortController, match: (frame: ProxiedFrame) => boolean): FaultProxyOptions {
  return { fault: (frame) => { if (!controller.signal.aborted && match(frame)) controller.abort(); return undefined; } };
}

describe('cancel, phase by phase', () => {
  it.each([
    ['round 1', toTarget(MessageType.Pages), false],
    ['a later round', toTarget(MessageType.RoundBegin, (x) => round(x) === 2), false],
    ['stop-and-copy', toTarget(MessageType.RoundBegin, stopAndCopy), true],
  ] as const)('the source aborted in %s: it resumes if paused, the target discards and keeps --out', async (phase, match, paused) => {
    const controller = new AbortController();
    const r = await migrateThrough(`abort-source-${phase.replace(/\W+/g, '-')}`, abortAt(controller, match), { sourceSignal: controller.signal });
    expect(r.sourceError?.code).toBe('PW_ERR_ABORTED');
    expect(r.calls).toEqual(paused ? ['source pause', 'source resume'] : []);
    expect(r.targetError?.code).toBe('PW_ERR_PEER');
    expect(readFileSync(r.out, 'utf8')).toBe('previous state');
    expect(r.leftovers).toEqual([]);
  });

  it('the source aborted once it has accepted READY (as its GO goes out): too late, the migration completes', async () => {
    const controller = new AbortController();
    const r = await migrateThrough('abort-source-after-ready', abortAt(controller, toTarget(MessageType.Go)), { sourceSignal: controller.signal });
    expect(controller.signal.aborted).toBe(true);
    expect(r.sourceError).toBeUndefined();
    expect(r.targetError).toBeUndefined();
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });

  it.each([
    ['round 1', toTarget(MessageType.Pages), false],
    ['stop-and-copy', toTarget(MessageType.RoundBegin, stopAndCopy), true],
  ] as const)('the target aborted in %s: it discards and keeps --out, the source hears why and resumes if paused', async (phase, match, paused) => {
    const controller = new AbortController();
    const r = await migrateThrough(`abort-target-${phase.replace(/\W+/g, '-')}`, abortAt(controller, match), { targetSignal: controller.signal });
    expect(r.targetError?.code).toBe('PW_ERR_ABORTED');
    expect(r.sourceError?.code).toBe('PW_ERR_PEER');
    expect(r.calls).toEqual(paused ? ['source pause', 'source resume'] : []);
    expect(readFileSync(r.out, 'utf8')).toBe('previous state');
    expect(r.leftovers).toEqual([]);
  });
});

describe('resume', () => {
  it.each([
    ['a reset in round 2', once(toTarget(MessageType.RoundBegin, (x) => round(x) === 2), 'reset'), true],
    ['a cut in the middle of round 1 on stream 1', once(toTarget(MessageType.Pages, (x) => x.connection === 1), 'cut'), false],
  ] as const)('after %s the source reconnects, sends only what the target lacks, and completes byte-exact', async (_name, fault, afterRound1) => {
    const r = await migrateThrough(`resume-${_name.replace(/\W+/g, '-')}`, { fault }, { resume: true });
    expect(r.injected.length).toBe(1);
    expect(r.sourceError).toBeUndefined();
    expect(r.targetError).toBeUndefined();
    expect(r.summary.resumes).toBe(1);
    expect(r.targetSummary?.resumes).toBe(1);
    // After round 1, the target held every page but the few written since: those alone went again.
    if (afterRound1) expect(r.summary.resumeSavedBytes).toBeGreaterThan(BYTES / 2);
    expect(r.calls).toEqual(['source pause', 'target resume']);
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });

  it('resumes after a reset at byte 300 000 of stream 0, authenticating again with the key', async () => {
    const r = await migrateThrough('resume-byte', { resetAtByte: 300_000 }, { resume: true, psk: Buffer.alloc(32, 3) });
    expect(r.injected.length).toBe(1);
    expect(r.sourceError).toBeUndefined();
    expect(r.summary.resumes).toBe(1);
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });

  it('resumes past a half-open connection the target has not noticed yet: the new HELLO retires the old session', async () => {
    const r = await migrateThrough('resume-half-open', { fault: once(toTarget(MessageType.RoundBegin, (x) => round(x) === 2), 'stall') },
      { resume: true, source: 500, persist: 500 });
    expect(r.sourceError).toBeUndefined();
    expect(r.summary.resumes).toBe(1);
    expect(readFileSync(r.out).equals(r.raw)).toBe(true);
  });
});
