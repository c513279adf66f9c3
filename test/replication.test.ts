// Replication through the library, in one process over real sockets on 127.0.0.1: the standby's image
// byte for byte at the pause point of the epoch it activates, with that epoch's device state; hostile
// and mutated streams refused while the standby keeps its last committed epoch.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DirtyBitmap, MemoryRegion, ReplicationSource, Standby, SyntheticWorkload, type Activation, type EpochReport, type PagewireError,
} from '../dist/src/index.js';
import { MessageType } from '../dist/src/wire/messages.js';
import { FaultProxy } from './fault-proxy.js';
import { frame, rawClient, tempDir } from './helpers.js';

const PAGE = 4096;
const BYTES = 8 << 20;

interface Running {
  standby: Standby;
  port: number;
  activation: Promise<Activation>;
  lost: PagewireError[];
}

async function startStandby(out: string): Promise<Running> {
  const standby = new Standby({ out, failoverTimeoutMs: 300 });
  const lost: PagewireError[] = [];
  standby.on('lost', (error) => lost.push(error));
  const listening = new Promise<number>((resolve) => standby.once('listening', ({ port }) => resolve(port)));
  const activation = standby.run();
  return { standby, port: await listening, activation, lost };
}

describe('replication through the library', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir(); });
  afterEach(() => dir.cleanup());

  it('activates byte-exact at the pause point of the last committed epoch, with its device state', async () => {
    const memory = new SharedArrayBuffer(BYTES);
    const region = MemoryRegion.fromMemory(memory, { pageSize: PAGE });
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: memory }, bitmap, PAGE, { rateBytesPerSec: 50e6, hot: 0.05, seed: 3 });
    const out = join(dir.dir, 'out.img');
    const { port, activation } = await startStandby(out);
    const stop = new AbortController();
    const committed: EpochReport[] = [];
    let captures = 0;
    let frozen = false;
    const source = new ReplicationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port, epochMs: 10, signal: stop.signal,
      hooks: {
        // From the 12th capture on the writer stays stopped: the region is that capture's state for good.
        pause: async () => {
          captures += 1;
          if (captures >= 12) {
            if (!frozen) await workload.stop();
            frozen = true;
          } else {
            await workload.pause();
          }
        },
        resume: () => { if (!frozen) workload.resume(); },
        deviceState: () => Buffer.from(`device state of capture ${captures}`),
        onCommitted: (report) => {
          committed.push(report);
          if (report.epoch >= 14) stop.abort();
        },
      },
    });
    const summary = await source.run();
    expect(summary.committedEpoch).toBeGreaterThanOrEqual(14);
    const result = await activation;
    expect(result.epoch).toBe(summary.committedEpoch);
    expect(result.digest).toBe(committed[committed.length - 1]!.digest);
    // The sync is epoch 1; capture n is epoch n + 1.
    expect(result.deviceState.toString()).toBe(`device state of capture ${result.epoch - 1}`);
    expect(readFileSync(out).equals(Buffer.from(memory))).toBe(true);
  }, 30_000);

  it('refuses a corrupted epoch, keeps the committed one, and takes the primary back after a sync', async () => {
    const memory = new SharedArrayBuffer(BYTES);
    // Every page data: the first sync sends all of them.
    randomFillSync(new Uint8Array(memory));
    const region = MemoryRegion.fromMemory(memory, { pageSize: PAGE });
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: memory }, bitmap, PAGE, { rateBytesPerSec: 50e6, hot: 0.05, seed: 5 });
    const out = join(dir.dir, 'out.img');
    const running = await startStandby(out);
    let pagesFrames = 0;
    // The 40th PAGES frame of the first connection has one byte flipped on the way.
    const proxy = await FaultProxy.start(running.port, {
      fault: ({ type, direction, connection }) =>
        (direction === 'to-target' && connection === 0 && type === MessageType.Pages && ++pagesFrames === 40 ? { corruptPayloadByte: 40 } : undefined),
    });
    const stop = new AbortController();
    const syncs: number[] = [];
    let last: EpochReport | undefined;
    let frozen = false;
    const source = new ReplicationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: proxy.port, epochMs: 10, signal: stop.signal, reconnectBackoffMs: 50,
      hooks: {
        pause: async () => {
          if (syncs.length >= 2 && !frozen) {
            frozen = true;
            await workload.stop();
          } else if (!frozen) {
            await workload.pause();
          }
        },
        resume: () => { if (!frozen) workload.resume(); },
        onCommitted: (report) => {
          last = report;
          if (frozen) stop.abort();
        },
      },
    });
    source.on('protected', ({ syncedPages }) => syncs.push(syncedPages));
    try {
      await source.run();
    } finally {
      proxy.close();
    }
    expect(proxy.injected).toHaveLength(1);
    // A flipped byte in a page fails its checksum; in a record's header, the record's format.
    expect(['PW_ERR_CHECKSUM', 'PW_ERR_PROTOCOL']).toContain(running.lost[0]?.code);
    // The second sync sends only what changed since the committed epoch the standby kept.
    expect(syncs).toHaveLength(2);
    expect(syncs[1]!).toBeLessThan(syncs[0]!);
    const result = await running.activation;
    expect(result.digest).toBe(last!.digest);
    expect(readFileSync(out).equals(Buffer.from(memory))).toBe(true);
  }, 30_000);

  it('tracks a region without a bitmap by hashing: each epoch carries exactly the pages written since the last', async () => {
    const memory = Buffer.alloc(BYTES);
    randomFillSync(memory);
    const region = MemoryRegion.fromMemory(memory, { pageSize: PAGE });
    const out = join(dir.dir, 'out.img');
    const { port, activation } = await startStandby(out);
    const stop = new AbortController();
    const pagesPerEpoch: number[] = [];
    // Between epochs (the hook runs after a commit, before the next capture) the test writes 1, 2, 3 ... pages.
    const source = new ReplicationSource({
      region, host: '127.0.0.1', port, epochMs: 10, signal: stop.signal,
      hooks: {
        pause: () => undefined,
        resume: () => undefined,
        onCommitted: (report) => {
          pagesPerEpoch.push(report.pages);
          if (report.epoch === 8) return stop.abort();
          for (let i = 0; i < report.epoch; i++) memory[(i * 97 + report.epoch) * PAGE + 5] ^= 0xff;
        },
      },
    });
    await source.run();
    expect(pagesPerEpoch).toEqual([0, 2, 3, 4, 5, 6, 7]);
    await activation;
    expect(readFileSync(out).equals(memory)).toBe(true);
  }, 30_000);

  it('refuses garbage and a migration source in the handshake, and keeps listening', async () => {
    const out = join(dir.dir, 'out.img');
    const stop = new AbortController();
    const standby = new Standby({ out, signal: stop.signal });
    const refused: string[] = [];
    standby.on('refused', (error) => refused.push(error.message));
    const listening = new Promise<number>((resolve) => standby.once('listening', ({ port }) => resolve(port)));
    const run = standby.run();
    const port = await listening;
    const garbage = await rawClient(port);
    garbage.socket.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await garbage.closed;
    const { MAX_VERSION, MIN_VERSION, encodeHello } = await import('../dist/src/wire/messages.js');
    const migration = await rawClient(port);
    migration.socket.write(frame(MessageType.Hello, encodeHello({
      minVersion: MIN_VERSION, maxVersion: MAX_VERSION, features: 0, pageSize: PAGE, regionSize: BYTES, extraRegions: [],
      migrationId: Buffer.alloc(16, 1), extraStreams: 0, sessionKey: Buffer.alloc(32, 9),
    })));
    await migration.closed;
    expect(refused).toHaveLength(2);
    expect(refused[1]).toMatch(/this is a standby/);
    stop.abort();
    await expect(run).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
  });
});
