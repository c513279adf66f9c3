// Transports an embedder supplies: a Unix socket, a server it made itself, streams it hands in (here an
// in-process pair), and a target that serves one migration after another, as a daemon would. The
// protocol, the authentication and the streams are the same over each.
import { randomBytes, randomFillSync } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DirtyBitmap, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, type PagewireError, type TargetSummary,
} from '../dist/src/index.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;
const BYTES = 1024 * PAGE;
const PSK = randomBytes(32);

/**
 * A source region under a writer that changes pages between rounds and stops at the pause, so later
 * rounds carry pages; `expected` is the region at the pause point.
 */
function writtenRegion() {
  const bytes = Buffer.alloc(BYTES);
  randomFillSync(bytes);
  const region = MemoryRegion.fromMemory(bytes);
  const bitmap = new DirtyBitmap(region.pageCount);
  let paused = false;
  let expected: Buffer | undefined;
  const write = () => {
    if (paused) return;
    for (let k = 0; k < 64; k++) {
      const page = Math.floor(Math.random() * region.pageCount);
      randomFillSync(bytes, page * PAGE, 64);
      bitmap.mark(page);
    }
  };
  return {
    region, bitmap, write, expected: () => expected!,
    hooks: {
      pause: () => { paused = true; expected = Buffer.from(bytes); },
      resume: () => { paused = false; },
    },
  };
}

async function migrate(options: { connect?: () => Duplex; path?: string; port?: number; psk?: Buffer }, streams: number) {
  const source = writtenRegion();
  const migration = new MigrationSource({
    region: source.region, dirtyBitmap: source.bitmap, hooks: source.hooks, streams, maxDowntimeMs: 0, maxRounds: 3,
    ...(options.connect ? { connect: options.connect } : options.path ? { path: options.path } : { host: '127.0.0.1', port: options.port! }),
    ...(options.psk ? { psk: options.psk } : {}),
  });
  migration.on('round', source.write);
  const summary = await migration.run();
  return { summary, expected: source.expected() };
}

function memoryImage() {
  const bytes = Buffer.alloc(BYTES);
  return { bytes, image: new MemoryTargetImage(MemoryRegion.fromMemory(bytes), { zeroed: true }) };
}

/** Two Duplex ends wired to each other in memory: what one writes, the other reads. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const end = (other: () => Duplex) => new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) { other().push(chunk); done(); },
    final(done) { other().push(null); done(); },
    destroy(error, done) {
      if (!other().destroyed) other().destroy();
      done(error);
    },
  });
  ends.push(end(() => ends[1]!), end(() => ends[0]!));
  return [ends[0]!, ends[1]!];
}

describe('transports an embedder supplies', () => {
  it('migrates over a Unix socket, two streams, keyed (frames tagged), byte-exact', async () => {
    const path = join(tmp.dir, 'target.sock');
    const { bytes, image } = memoryImage();
    const target = await MigrationTarget.listen({ image, path, psk: PSK });
    const { summary, expected } = await migrate({ path, psk: PSK }, 2);
    const received = await target.result;
    expect(summary.streams).toBe(2);
    expect(summary.rounds).toBeGreaterThan(1);
    expect(received.regionDigest).toBe(summary.regionDigest);
    expect(bytes.equals(expected)).toBe(true);
  });

  it('migrates over streams the embedder opens and hands in (an in-process pair), byte-exact', async () => {
    const { bytes, image } = memoryImage();
    // No listener at all: the target only serves what accept() hands it.
    const target = await MigrationTarget.listen({ image, server: createServer(), psk: PSK });
    const { summary, expected } = await migrate({
      psk: PSK,
      connect: () => {
        const [sourceEnd, targetEnd] = duplexPair();
        target.accept(targetEnd);
        return sourceEnd;
      },
    }, 3);
    await target.result;
    expect(summary.streams).toBe(3);
    expect(bytes.equals(expected)).toBe(true);
  });

  it('takes connections from a server the embedder listens with, and leaves it listening', async () => {
    const server = createServer();
    const path = join(tmp.dir, 'embedder.sock');
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const { bytes, image } = memoryImage();
    const target = await MigrationTarget.listen({ image, server });
    const { expected } = await migrate({ path }, 1);
    await target.result;
    expect(bytes.equals(expected)).toBe(true);
    expect(server.listening).toBe(true);
    expect(server.listenerCount('connection')).toBe(0);
    server.close();
  });

  it('serves one migration after another as a daemon, each into an image made from its offer, until stopped', async () => {
    const images: Buffer[] = [];
    const target = await MigrationTarget.listen({
      host: '127.0.0.1', port: 0, serve: 'many',
      image: (offer) => {
        const bytes = Buffer.alloc(offer.regionSize);
        images.push(bytes);
        return new MemoryTargetImage(MemoryRegion.fromMemory(bytes, { pageSize: offer.pageSize }), { zeroed: true });
      },
    });
    const ended: Array<[TargetSummary | undefined, PagewireError | undefined]> = [];
    target.on('migration', (summary, error) => ended.push([summary, error]));
    const first = await migrate({ port: target.address.port }, 2);
    const second = await migrate({ port: target.address.port }, 1);
    expect(images.length).toBe(2);
    expect(images[0]!.equals(first.expected)).toBe(true);
    expect(images[1]!.equals(second.expected)).toBe(true);
    expect(ended.map(([summary, error]) => [summary?.status, error])).toEqual([['completed', undefined], ['completed', undefined]]);
    expect(ended[0]![0]!.migrationId).toBe(first.summary.migrationId);
    expect(target.phase).toBe('listening');
    target.stop();
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
  });
});
