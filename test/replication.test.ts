// Replication through the library, in one process over real sockets on 127.0.0.1: the standby's image
// byte for byte at the pause point of the epoch it activates, with that epoch's device state; hostile
// and mutated streams refused while the standby keeps its last committed epoch.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes, randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import {
  DirtyBitmap, MemoryRegion, ReplicationSource, Standby, SyntheticWorkload, type Activation, type EpochReport, type PagewireError,
} from '../dist/src/index.js';
import { MessageType } from '../dist/src/wire/messages.js';
import { FaultProxy } from './fault-proxy.js';
import { frame, rawClient, receivedAtLeast, tempDir } from './helpers.js';

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
    // Captures and commits come in the same order (one epoch in flight at most).
    const index = committed.findIndex((report) => report.epoch === result.epoch);
    expect(result.deviceState.toString()).toBe(`device state of capture ${index + 1}`);
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

  it('takes no acknowledgement of an epoch it has not ended for a commit', async () => {
    const { FEATURE_REPLICATION, MAX_VERSION, encodeHeld, encodeWelcome } = await import('../dist/src/wire/messages.js');
    const { SessionKeyPair } = await import('../dist/src/transport/session-secret.js');
    const { encodeEpochNumber } = await import('../dist/src/wire/replication-messages.js');
    const region = MemoryRegion.fromMemory(Buffer.alloc(64 * PAGE), { pageSize: PAGE });
    // A standby that answers the handshake, then acknowledges epoch 5 as soon as epoch 1 begins.
    const server = createServer((socket) => {
      let seen = 0;
      socket.on('data', () => {
        seen += 1;
        if (seen === 1) {
          socket.write(Buffer.concat([
            frame(MessageType.Welcome, encodeWelcome({ version: MAX_VERSION, extraStreams: 0, features: FEATURE_REPLICATION, flags: 0,
              sessionKey: SessionKeyPair.generate().publicKey })),
            frame(MessageType.Held, encodeHeld(0, 0, 0, new BigUint64Array(64))),
          ]));
        } else if (seen === 2) {
          socket.write(frame(MessageType.EpochAck, encodeEpochNumber(5)));
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const stop = new AbortController();
    const committed: number[] = [];
    const source = new ReplicationSource({
      region, host: '127.0.0.1', port: (server.address() as { port: number }).port, signal: stop.signal,
      hooks: { pause: () => undefined, resume: () => undefined, onCommitted: (report) => { committed.push(report.epoch); } },
    });
    const unprotected = new Promise<PagewireError>((resolve) => source.once('unprotected', resolve));
    const run = source.run();
    const error = await unprotected;
    stop.abort();
    await run;
    server.close();
    expect(error.message).toMatch(/EPOCH_ACK 5 acknowledges no epoch waiting for it/);
    expect(committed).toEqual([]);
  });

  it('serves one primary at a time: of two handshakes at once, one is refused', async () => {
    const { FEATURE_REPLICATION, MAX_VERSION, MIN_VERSION, encodeHello } = await import('../dist/src/wire/messages.js');
    const { SessionKeyPair } = await import('../dist/src/transport/session-secret.js');
    const stop = new AbortController();
    const standby = new Standby({ out: join(dir.dir, 'out.img'), signal: stop.signal });
    const listening = new Promise<number>((resolve) => standby.once('listening', ({ port }) => resolve(port)));
    const run = standby.run();
    const port = await listening;
    const hello = () => frame(MessageType.Hello, encodeHello({
      minVersion: MIN_VERSION, maxVersion: MAX_VERSION, features: FEATURE_REPLICATION, pageSize: PAGE, regionSize: 64 * PAGE, extraRegions: [],
      migrationId: Buffer.alloc(16, 1), extraStreams: 0, sessionKey: SessionKeyPair.generate().publicKey,
    }));
    const clients = await Promise.all([rawClient(port), rawClient(port)]);
    for (const client of clients) client.socket.write(hello());
    // Each hears its answer's first frame: WELCOME for one, ERROR for the other.
    await Promise.all(clients.map((client) => receivedAtLeast(client, 8)));
    const firstTypes = clients.map((client) => client.received()[0]).sort();
    expect(firstTypes).toEqual([MessageType.Welcome, MessageType.Error].sort());
    for (const client of clients) client.socket.destroy();
    stop.abort();
    await expect(run).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
  });

  it('stops with the error of a hook that fails, rather than taking it for a lost standby', async () => {
    const out = join(dir.dir, 'out.img');
    const { port, activation } = await startStandby(out);
    const region = MemoryRegion.fromMemory(Buffer.alloc(64 * PAGE), { pageSize: PAGE });
    let captures = 0;
    const source = new ReplicationSource({
      region, host: '127.0.0.1', port, epochMs: 10,
      hooks: {
        pause: () => { if (++captures === 3) throw new Error('the guest would not stop'); },
        resume: () => undefined,
      },
    });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_HOOK', message: /the pause hook failed: the guest would not stop/ });
    // The primary is gone: the standby takes over the last epoch committed before the failure.
    expect((await activation).epoch).toBe(3);
  });

  it('with a pre-shared key: a primary holding another key is refused, one holding it replicates', async () => {
    const key = randomBytes(32);
    const out = join(dir.dir, 'out.img');
    const standby = new Standby({ out, failoverTimeoutMs: 300, psk: key });
    const refused: PagewireError[] = [];
    standby.on('refused', (error) => refused.push(error));
    const listening = new Promise<number>((resolve) => standby.once('listening', ({ port }) => resolve(port)));
    const activation = standby.run();
    const port = await listening;
    const memory = Buffer.alloc(64 * PAGE);
    randomFillSync(memory);
    const region = MemoryRegion.fromMemory(memory, { pageSize: PAGE });
    const stopWrong = new AbortController();
    const wrong = new ReplicationSource({
      region, host: '127.0.0.1', port, psk: randomBytes(32), signal: stopWrong.signal, hooks: { pause: () => undefined, resume: () => undefined },
    });
    const unprotected = new Promise<PagewireError>((resolve) => wrong.once('unprotected', resolve));
    const wrongRun = wrong.run();
    expect(await unprotected).toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_AUTH' });
    stopWrong.abort();
    await wrongRun;
    expect(refused[0]?.code).toBe('PW_ERR_AUTH');
    const stop = new AbortController();
    const right = new ReplicationSource({
      region, host: '127.0.0.1', port, psk: key, epochMs: 10, signal: stop.signal,
      hooks: { pause: () => undefined, resume: () => undefined, onCommitted: (report) => { if (report.epoch >= 4) stop.abort(); } },
    });
    await right.run();
    await activation;
    expect(readFileSync(out).equals(memory)).toBe(true);
  });

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
