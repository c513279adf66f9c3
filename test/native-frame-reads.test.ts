// FramedConnection reading through the addon's FrameReader (src/transport/native-frame-reads.ts):
// the same frames as Node's reads give, whatever the splits; payloads beyond a pooled buffer; pooled
// buffers reused once released; the failures a peer can cause; and Node reading again after close().
import { createServer, type Server, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { AuthError, ConnectionError, ProtocolError } from '../dist/src/index.js';
import { FRAME_TAG_BYTES, FrameAuthenticator } from '../dist/src/transport/frame-auth.js';
import { FramedConnection } from '../dist/src/transport/framed-connection.js';
import { MAX_PAYLOAD_BYTES, MessageType, encodeRoundMarker, frameHeader } from '../dist/src/wire/messages.js';
import { frame, rawClient, spawnCommand, withTimeout } from './helpers.js';

let server: Server | undefined;
afterEach(() => server?.close());

/** A FramedConnection reading natively on the accepted side of a loopback connection, and the raw peer. */
async function nativePair(keys?: { send: Buffer; receive: Buffer }): Promise<{ connection: FramedConnection; peer: Socket; closed: Promise<void> }> {
  const accepted = new Promise<Socket>((resolve) => {
    server = createServer(resolve);
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const port = (server!.address() as { port: number }).port;
  const peer = await rawClient(port);
  const connection = new FramedConnection(await accepted, MAX_PAYLOAD_BYTES);
  if (keys) connection.authenticateFrames(keys);
  expect(connection.readNatively()).toBe(true);
  return { connection, peer: peer.socket, closed: peer.closed };
}

/** Writes bytes in seeded random splits, each split in its own TCP segment. */
async function writeInSplits(socket: Socket, bytes: Buffer, seed: number): Promise<void> {
  let state = seed;
  for (let at = 0; at < bytes.length;) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const n = 1 + (state % 3000);
    socket.write(bytes.subarray(at, at + n));
    at += n;
    if (state % 4 === 0) await new Promise((r) => setImmediate(r));
  }
}

describe('native frame reads', () => {
  it('reads the same frames in any split, payloads beyond a pooled buffer included, and counts every byte', async () => {
    const { connection, peer } = await nativePair();
    const big = Buffer.alloc(5 * 2 ** 20 + 3);
    for (let i = 0; i < big.length; i += 4099) big[i] = i & 0xff;
    const medium = Buffer.alloc(300_000, 7);
    const frames = [
      frame(MessageType.RoundBegin, encodeRoundMarker({ round: 1, pages: 3 })),
      frame(MessageType.Pages, medium),
      frame(MessageType.Pages, big),
      frame(MessageType.Go),
      frame(MessageType.Pages, medium.subarray(0, 5000)),
    ];
    const stream = Buffer.concat(frames);
    await writeInSplits(peer, stream, 7);
    const got = [];
    for (let i = 0; i < frames.length; i++) got.push(await connection.receive(10_000));
    expect(got.map((f) => f.type)).toEqual([MessageType.RoundBegin, MessageType.Pages, MessageType.Pages, MessageType.Go, MessageType.Pages]);
    expect(got[1]!.payload.equals(medium)).toBe(true);
    expect(got[2]!.payload.equals(big)).toBe(true);
    expect(got[3]!.payload.length).toBe(0);
    expect(got[4]!.payload.equals(medium.subarray(0, 5000))).toBe(true);
    // A pooled payload comes with release(); one beyond the pool's size, or a small copy, does not.
    expect(typeof got[1]!.release).toBe('function');
    expect(got[2]!.release).toBeUndefined();
    expect(connection.bytesRead).toBe(stream.length);
    peer.destroy();
    await connection.close();
  });

  it('checks frame tags on the reader\'s thread: the TypeScript sender\'s tags verify, a changed byte fails', async () => {
    const key = randomBytes(32);
    const { connection, peer } = await nativePair({ send: randomBytes(32), receive: key });
    const sealer = new FrameAuthenticator(key);
    const tagged = (type: MessageType, payload: Buffer) => {
      const header = frameHeader(type, payload.length + FRAME_TAG_BYTES);
      return Buffer.concat([header, payload, sealer.tag(header, [payload])]);
    };
    // Small (copied out), pooled, and beyond a pooled buffer (read with readPayload).
    const payloads = [Buffer.alloc(100, 1), Buffer.alloc(300_000, 2), Buffer.alloc(3 * 2 ** 20, 3)];
    const good = Buffer.concat(payloads.map((p) => tagged(MessageType.Pages, p)));
    const bad = tagged(MessageType.Pages, Buffer.alloc(5000, 4));
    bad[8 + 100] ^= 1;
    await writeInSplits(peer, Buffer.concat([good, bad]), 11);
    for (const payload of payloads) {
      const got = await connection.receive(10_000);
      expect(got.payload.equals(payload)).toBe(true);
    }
    await expect(connection.receive(10_000)).rejects.toSatisfy((e: unknown) =>
      e instanceof AuthError && /frame 3 \(PAGES\) on this connection failed authentication/.test(e.message));
    peer.destroy();
    await connection.close();
  });

  it('reuses a released buffer for the next frame, and never one still held', async () => {
    const { connection, peer } = await nativePair();
    peer.write(frame(MessageType.Pages, Buffer.alloc(100_000, 1)));
    const first = await connection.receive(10_000);
    peer.write(frame(MessageType.Pages, Buffer.alloc(100_000, 2)));
    const second = await connection.receive(10_000);
    // Held: the second frame went elsewhere, and the first still holds its bytes.
    expect(second.payload.buffer).not.toBe(first.payload.buffer);
    expect(first.payload.every((b) => b === 1)).toBe(true);
    first.release!();
    first.release!(); // twice is once
    second.release!();
    peer.write(frame(MessageType.Pages, Buffer.alloc(100_000, 3)));
    const third = await connection.receive(10_000);
    expect([first.payload.buffer, second.payload.buffer]).toContain(third.payload.buffer);
    expect(third.payload.every((b) => b === 3)).toBe(true);
    peer.destroy();
    await connection.close();
  });

  it('stops at a malformed header with a ProtocolError and keeps the socket, so the peer can be told', async () => {
    const { connection, peer } = await nativePair();
    const bad = frameHeader(MessageType.Go, 0);
    bad.writeUInt8(99, 0);
    peer.write(Buffer.concat([frame(MessageType.Go), bad, frame(MessageType.Go)]));
    expect((await connection.receive(10_000)).type).toBe(MessageType.Go);
    await expect(connection.receive(10_000)).rejects.toThrow(ProtocolError);
    await expect(connection.receive(10_000)).rejects.toThrow(/unknown message type 99/);
    expect(connection.socket.destroyed).toBe(false);
    peer.destroy();
    await connection.close();
  });

  it('refuses a frame longer than the payload limit before reading its payload', async () => {
    const { connection, peer } = await nativePair();
    connection.maxPayload = 1000;
    peer.write(frameHeader(MessageType.Pages, 1001));
    await expect(connection.receive(10_000)).rejects.toThrow(/frame of 1001 bytes exceeds the limit of 1000/);
    peer.destroy();
    await connection.close();
  });

  it('reports a peer that closes between frames, or inside one, as a lost connection after the frames it sent', async () => {
    for (const [tail, reason] of [[Buffer.alloc(0), /the peer closed the connection$/], [frameHeader(MessageType.Pages, 100), /inside a frame/]] as const) {
      const { connection, peer } = await nativePair();
      peer.end(Buffer.concat([frame(MessageType.Go), tail]));
      expect((await connection.receive(10_000)).type).toBe(MessageType.Go);
      const lost = connection.receive(10_000);
      await expect(lost).rejects.toThrow(ConnectionError);
      await expect(lost).rejects.toThrow(reason);
      await connection.close();
    }
  });

  it('hands reading back to Node on close(), so the peer\'s FIN ends the connection without the grace timer', async () => {
    const { connection, peer, closed } = await nativePair();
    peer.write(frame(MessageType.Go));
    expect((await connection.receive(10_000)).type).toBe(MessageType.Go);
    peer.on('end', () => peer.end());
    // A grace far beyond the test's timeout: only the socket's own 'close' can end this wait.
    await withTimeout(connection.close(600_000), 10_000, 'close');
    await withTimeout(closed, 10_000, 'the peer sees the close');
  });

  it('survives a worker thread terminated while its native read waits: the process goes on', async () => {
    const module = new URL('../dist/src/transport/framed-connection.js', import.meta.url).href;
    const worker = new Worker(`
      const { parentPort } = require('node:worker_threads');
      const net = require('node:net');
      import(${JSON.stringify(module)}).then(({ FramedConnection }) => {
        const server = net.createServer((socket) => {
          const connection = new FramedConnection(socket, 1 << 20);
          parentPort.postMessage(connection.readNatively());
          connection.receive(60000).catch(() => {});
        });
        server.listen(0, '127.0.0.1', () => {
          const peer = net.connect(server.address().port, '127.0.0.1');
          peer.on('error', () => {});
        });
      });`, { eval: true });
    const switched = await withTimeout(new Promise((resolve) => worker.once('message', resolve)), 10_000, 'the worker\'s reader');
    expect(switched).toBe(true);
    expect(await worker.terminate()).toBe(1);
    // Still here: the reader's thread was ended with the worker's environment, not the process.
    const { connection, peer } = await nativePair();
    peer.write(frame(MessageType.Go));
    expect((await connection.receive(10_000)).type).toBe(MessageType.Go);
    peer.destroy();
    await connection.close();
  });

  it('survives worker threads terminated while they call into the addon and it throws: the process goes on', async () => {
    // A call that throws after the worker's environment stopped running JavaScript cannot throw into
    // it; without NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS the addon aborted the whole process
    // ("terminate called after throwing an instance of 'Napi::Error'"). In a child, so an abort fails
    // this test rather than the test runner's worker.
    const binding = new URL('../dist/src/native/binding.js', import.meta.url).href;
    const script = `
      import { Worker } from 'node:worker_threads';
      for (let i = 0; i < 12; i++) {
        const worker = new Worker(\`
          const { parentPort } = await import('node:worker_threads');
          const { loadAddon } = await import(\${JSON.stringify(${JSON.stringify(binding)})});
          const addon = loadAddon();
          parentPort.postMessage('calling');
          for (;;) { try { addon.hashPages(); } catch {} }\`, { eval: true });
        await new Promise((resolve) => worker.once('message', resolve));
        await worker.terminate();
      }
      console.log('still here');`;
    const child = spawnCommand(process.execPath, ['--input-type=module', '-e', script]);
    expect(await child.exit, child.stderr()).toBe(0);
    expect(child.stdout()).toContain('still here');
  });

  it('does not switch a connection with part of a frame buffered by Node', async () => {
    const accepted = new Promise<Socket>((resolve) => { server = createServer(resolve); });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const peer = await rawClient((server!.address() as { port: number }).port);
    const connection = new FramedConnection(await accepted, MAX_PAYLOAD_BYTES);
    const sent = Buffer.concat([frame(MessageType.Go), frameHeader(MessageType.Pages, 10).subarray(0, 5)]);
    peer.socket.write(sent);
    expect((await connection.receive(10_000)).type).toBe(MessageType.Go);
    while (connection.bytesRead < sent.length) await new Promise((r) => setImmediate(r));
    expect(connection.readNatively()).toBe(false);
    peer.socket.destroy();
    await connection.close();
  });
});
