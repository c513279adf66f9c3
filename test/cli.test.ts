// The CLI binary spawned as an operator would: receive on one side, send on the other, all on 127.0.0.1.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { writeMixedImage } from '../dist/src/index.js';
import { fileDigest } from '../dist/src/cli/file-digest.js';
import {
  MessageType, encodeHello, encodePagesHeader, encodeRoundMarker, frameHeader,
} from '../dist/src/wire/messages.js';
import { FaultProxy } from './fault-proxy.js';
import { HELLO_V4, answered, frame, lastJson, rawClient, sha256File, spawnCli, startReceiver, tempDir, withTimeout } from './helpers.js';
import { gateRoundsOnWrites, imageWrites } from './round-gate.js';

/** A WELCOME frame: 8 bytes of header, 12 of payload. */
const WELCOME_BYTES = 20;
const tmp = tempDir();
afterAll(() => tmp.cleanup());
let n = 0;

function setup(sizeMiB: number) {
  const dir = join(tmp.dir, `case-${++n}`);
  mkdirSync(dir);
  const image = join(dir, 'source.img');
  const out = join(dir, 'out.img');
  writeMixedImage(image, { size: sizeMiB * 2 ** 20, seed: n });
  writeFileSync(out, 'previous target state\n');
  return { dir, image, out, before: sha256File(out) };
}

function hello(overrides: Partial<Parameters<typeof encodeHello>[0]> = {}): Buffer {
  return frame(MessageType.Hello, encodeHello({
    ...HELLO_V4, extraStreams: 0, features: 0, pageSize: 4096, regionSize: 1 << 20, migrationId: Buffer.alloc(16, 1),
    ...overrides,
  }));
}

/** A key file, and one that differs from it in one byte. */
function keyFiles(dir: string): { key: string; wrong: string } {
  const key = join(dir, 'key');
  const wrong = join(dir, 'wrong-key');
  writeFileSync(key, 'a3f1c9e07b2d4c58a1e6f0b9d3c7e215\n');
  writeFileSync(wrong, 'a3f1c9e07b2d4c58a1e6f0b9d3c7e216\n');
  return { key, wrong };
}

/** --out and the source image after exit both hold the region whose digest send reported. */
function samePausePoint(c: { image: string; out: string }, sent: Record<string, unknown>): void {
  expect(sha256File(c.out)).toBe(sha256File(c.image));
  expect(fileDigest(c.out, 4096).digest).toBe(sent.digest);
}

function noTempFiles(dir: string): void {
  expect(readdirSync(dir).filter((f) => f.includes('.pagewire-'))).toEqual([]);
}

describe('pagewire receive / send', () => {
  it('migrates an image without a workload: with --sha256, both JSON sha256 and digest fields, --out and the image agree', async () => {
    const c = setup(8);
    const receiver = await startReceiver(c.out, ['--sha256']);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image, '--lz4', 'off', '--json', '--sha256']);
    expect(await withTimeout(sender.exit, 30_000, 'send')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    const s = lastJson(sender.stdout());
    const r = lastJson(receiver.stdout());
    expect(s).toMatchObject({ status: 'completed', pageSize: 4096, pagesTotal: 2048 });
    for (const key of ['totalTimeMs', 'setupTimeMs', 'downtimeMs', 'rounds', 'pagesTransferred', 'zeroPages', 'deltaPages', 'lz4Pages', 'rawPages', 'bytesTransferred']) {
      expect(typeof s[key]).toBe('number');
    }
    expect(s.zeroPages as number).toBeGreaterThan(0);
    expect(s.lz4Pages).toBe(0);
    expect(r).toMatchObject({ status: 'completed', pageSize: 4096, pagesTotal: 2048 });
    expect(r.bytesReceived as number).toBeGreaterThan(0);
    expect(typeof r.commitMs).toBe('number');
    expect(s.sha256).toBe(r.sha256);
    expect(sha256File(c.out)).toBe(s.sha256);
    expect(sha256File(c.image)).toBe(s.sha256);
    expect(s.digest).toMatch(/^[0-9a-f]{16}$/);
    expect(r.digest).toBe(s.digest);
    expect(fileDigest(c.out, 4096).digest).toBe(s.digest);
    noTempFiles(c.dir);
  });

  /**
   * send under a slow workload (1 MB/s over every page) into receive, one of them the twin. Gated, round
   * 1 is acknowledged only once two pages that held data have changed since it began: they go again,
   * as DELTA against the copy round 1 cached (each page changes a handful of times at most, so the
   * DELTA stays far below the quarter page it may take). Only an addon sender can be gated: the twin
   * cannot map the image and works on a copy in memory, where nothing outside sees its writer.
   */
  async function crossMigration(receiverEnv: NodeJS.ProcessEnv, senderEnv: NodeJS.ProcessEnv, gated: boolean) {
    const c = setup(8);
    const receiver = await startReceiver(c.out, [], receiverEnv);
    const proxy = gated ? await FaultProxy.start(receiver.port, gateRoundsOnWrites(imageWrites(c.image, 4096, { withData: true }))) : undefined;
    onTestFinished(() => proxy?.close());
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${proxy?.port ?? receiver.port}`, '--image', c.image,
      '--workload', 'rate=1MB/s,hot=1,seed=3', '--max-downtime', '5', '--lz4', 'always', '--json'], senderEnv);
    expect(await withTimeout(sender.exit, 60_000, 'send')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    const s = lastJson(sender.stdout());
    expect(s).toMatchObject({ status: 'completed', codec: senderEnv.PAGEWIRE_NO_NATIVE ? 'twin' : 'addon' });
    expect(s.lz4Pages as number).toBeGreaterThan(0);
    expect(s.rawPages as number).toBeGreaterThan(0);
    expect(s.zeroPages as number).toBeGreaterThan(0);
    expect(s).not.toHaveProperty('sha256');
    expect(lastJson(receiver.stdout()).digest).toBe(s.digest);
    samePausePoint(c, s);
    return s;
  }

  it('the TypeScript twin receives every encoding, DELTA included, from the addon under a workload: the same bytes in both JSONs, --out and the image', async () => {
    const s = await crossMigration({ PAGEWIRE_NO_NATIVE: '1' }, {}, true);
    expect(s.deltaPages as number).toBeGreaterThan(0);
  });

  it('the addon receives from the TypeScript twin under a workload: the same bytes in both JSONs, --out and the image', async () => {
    await crossMigration({}, { PAGEWIRE_NO_NATIVE: '1' }, false);
  });

  it('migrates under a 100 MB/s workload in several rounds and reports the downtime', async () => {
    const c = setup(32);
    const receiver = await startReceiver(c.out);
    // Each pre-copy round is acknowledged only once 64 pages have changed since it began, so each ends
    // with pages pending; a budget of 1 µs is below any round trip, so two rounds run to the round cap.
    const proxy = await FaultProxy.start(receiver.port, gateRoundsOnWrites(imageWrites(c.image, 4096, { pages: 64 })));
    onTestFinished(() => proxy.close());
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${proxy.port}`, '--image', c.image,
      '--workload', 'rate=100MB/s,hot=0.05,seed=1', '--max-downtime', '0.001', '--max-rounds', '2', '--streams', '3', '--json']);
    expect(await withTimeout(sender.exit, 60_000, 'send')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    const s = lastJson(sender.stdout());
    const r = lastJson(receiver.stdout());
    expect(s.status).toBe('completed');
    expect(s.streams).toBe(3);
    for (const key of ['throttlePercent', 'dirtyRateMBps', 'bandwidthMBps', 'expectedDowntimeMs']) expect(typeof s[key], key).toBe('number');
    // Measured after the last pre-copy round, which ended with at least 63 marked pages pending.
    expect(s.stopReason).toBe('round-cap');
    expect(s.dirtyRateMBps as number).toBeGreaterThan(0);
    expect(Object.keys(s.downtimeBreakdownMs as object)).toEqual(['pause', 'finalSync', 'transfer', 'verify', 'prepare', 'handshake']);
    expect(s.rounds).toBe(3);
    expect(s.workloadWrites as number).toBeGreaterThan(0);
    expect(s.downtimeMs as number).toBeGreaterThan(0);
    expect(sender.stderr()).toMatch(/round=2 pages=\d+ bytes=\d+ bw=[\d.]+MB\/s dirty=[\d.]+MB\/s/);
    expect(r.digest).toBe(s.digest);
    samePausePoint(c, s);
  });

  it('migrates over a Unix socket (--listen unix:PATH, --connect unix:PATH), keyed, byte-exact', async () => {
    const c = setup(8);
    const socket = join(c.dir, 'receive.sock');
    const key = join(c.dir, 'unix.key');
    writeFileSync(key, 'k'.repeat(32));
    const receiver = spawnCli(['receive', '--listen', `unix:${socket}`, '--out', c.out, '--json', '--psk-file', key]);
    await receiver.waitForStderr(/listening on unix:/);
    const sender = spawnCli(['send', '--connect', `unix:${socket}`, '--image', c.image, '--json', '--psk-file', key, '--streams', '2']);
    expect(await withTimeout(sender.exit, 30_000, 'send')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    const s = lastJson(sender.stdout());
    expect(s).toMatchObject({ status: 'completed', streams: 2 });
    expect(lastJson(receiver.stdout()).digest).toBe(s.digest);
    expect(sha256File(c.out)).toBe(sha256File(c.image));
  });

  it('refuses garbage, a wrong magic and an unknown version with a reason, and keeps listening', async () => {
    const c = setup(1);
    const receiver = await startReceiver(c.out);
    const garbage = await rawClient(receiver.port);
    garbage.socket.end(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await withTimeout(garbage.closed, 5000, 'garbage connection close');

    const magic = await rawClient(receiver.port);
    const wrong = hello();
    wrong.write('NOTMAGIC', 8, 'latin1');
    magic.socket.write(wrong);
    await withTimeout(magic.closed, 5000, 'wrong-magic close');
    expect(magic.received().toString('latin1')).toMatch(/PW_ERR_HANDSHAKE.*wrong magic/);

    const version = await rawClient(receiver.port);
    version.socket.write(hello({ minVersion: 7, maxVersion: 9 }));
    await withTimeout(version.closed, 5000, 'version close');
    expect(version.received().toString('latin1')).toMatch(/PW_ERR_VERSION.*7\.\.9/);

    await receiver.waitForStderr(/refused .*PW_ERR_VERSION/);
    expect(receiver.stderr()).toMatch(/refused .*unknown message type/);
    expect(receiver.child.exitCode).toBe(null);
    expect(sha256File(c.out)).toBe(c.before);
    // Still listening: a real migration now succeeds.
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image, '--json']);
    expect(await withTimeout(sender.exit, 30_000, 'send')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    expect(sha256File(c.out)).toBe(sha256File(c.image));
  });

  it('refuses a region larger than the target allows; the sender fails with the reason', async () => {
    const c = setup(8);
    const receiver = await startReceiver(c.out, ['--max-size', '4MiB']);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image, '--json']);
    expect(await withTimeout(sender.exit, 15_000, 'send')).toBe(1);
    expect(lastJson(sender.stdout())).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_PEER' });
    expect(sender.stderr()).toMatch(/exceeds this target's limit of 4194304 bytes \(PW_ERR_CAPACITY\)/);
    expect(receiver.child.exitCode).toBe(null);
    receiver.child.kill('SIGKILL');
    expect(sha256File(c.out)).toBe(c.before);
    noTempFiles(c.dir);
  });

  it.each([
    ['an out-of-range page index', (pages: number) => {
      const record = Buffer.alloc(20 + 4096, 1);
      record.writeUInt32LE(pages, 0); // one past the last page
      record.writeUInt8(1, 4);
      record.writeUInt32LE(4096, 8);
      return frame(MessageType.Pages, Buffer.concat([encodePagesHeader(1), record]));
    }, /page index 256 is outside the region/],
    ['a truncated frame', () => Buffer.concat([frameHeader(MessageType.Pages, 1000), Buffer.alloc(10)]), /closed the connection/],
  ])('fails the migration on %s, exits non-zero and leaves --out untouched', async (_name, bad, reason) => {
    const c = setup(1);
    // No wait for a resume: a broken stream ends the migration at once.
    const receiver = await startReceiver(c.out, ['--resume-window', '0']);
    const client = await rawClient(receiver.port);
    client.socket.write(hello());
    await withTimeout(answered(client, WELCOME_BYTES), 10_000, 'WELCOME');
    client.socket.write(frame(MessageType.RoundBegin, encodeRoundMarker({ round: 1, pages: 1 })));
    client.socket.end(bad(256));
    expect(await withTimeout(receiver.exit, 10_000, 'receive')).toBe(1);
    expect(receiver.stderr()).toMatch(reason);
    expect(lastJson(receiver.stdout())).toMatchObject({ status: 'failed' });
    expect(sha256File(c.out)).toBe(c.before);
    noTempFiles(c.dir);
  });

  it('fails cleanly when the target is killed mid-migration; the source image stays the workload\'s', async () => {
    const c = setup(32);
    const receiver = await startReceiver(c.out);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image,
      '--workload', 'rate=50MB/s,hot=0.05,seed=2', '--max-bandwidth', '20MB/s', '--json', '--sha256']);
    // A writer faster than the cap: the rounds go on until the kill.
    await sender.waitForStderr(/^round=1 /m);
    receiver.child.kill('SIGKILL');
    expect(await withTimeout(sender.exit, 10_000, 'send')).toBe(1);
    const s = lastJson(sender.stdout());
    // Noticed as the connection's loss, not after the 30 s silence timeout.
    expect(s).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_CONNECTION' });
    expect(sender.stderr()).toMatch(/pagewire send: .*(closed|reset|failed)/);
    // The image holds the workload's last state, as reported.
    expect(sha256File(c.image)).toBe(s.sha256);
    expect(sha256File(c.out)).toBe(c.before);
  });

  it('stops cleanly on SIGTERM to send during the pre-copy: the workload runs on, the target discards', async () => {
    const c = setup(32);
    const receiver = await startReceiver(c.out);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image,
      '--workload', 'rate=50MB/s,hot=0.05,seed=4', '--max-bandwidth', '20MB/s', '--max-downtime', '0.1', '--json', '--sha256']);
    // A budget no round meets: after round 1 the source is still in its pre-copy.
    await sender.waitForStderr(/^round=1 /m);
    sender.child.kill('SIGTERM');
    expect(await withTimeout(sender.exit, 10_000, 'send')).toBe(1);
    expect(await withTimeout(receiver.exit, 10_000, 'receive')).toBe(1);
    const s = lastJson(sender.stdout());
    expect(s).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_ABORTED' });
    expect(s.workloadWrites as number).toBeGreaterThan(0);
    expect(sha256File(c.image)).toBe(s.sha256);
    expect(lastJson(receiver.stdout())).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_PEER' });
    expect(sha256File(c.out)).toBe(c.before);
    noTempFiles(c.dir);
  });

  it('fails cleanly when the source is killed mid-migration; --out is untouched and no temp file remains', async () => {
    const c = setup(32);
    // A source that never comes back: after a 500 ms resume window, the target gives up.
    const receiver = await startReceiver(c.out, ['--resume-window', '500']);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image,
      '--workload', 'rate=50MB/s,hot=0.05,seed=5', '--max-bandwidth', '20MB/s', '--max-downtime', '0.1', '--json']);
    // A budget no round meets: after round 1 the source is still in its pre-copy when it dies.
    await sender.waitForStderr(/^round=1 /m);
    sender.child.kill('SIGKILL');
    expect(await withTimeout(receiver.exit, 10_000, 'receive')).toBe(1);
    expect(lastJson(receiver.stdout())).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_TIMEOUT' });
    expect(receiver.stderr()).toMatch(/pagewire receive: the connection broke \(.*closed the connection\) and the source did not resume within 500 ms/);
    expect(sha256File(c.out)).toBe(c.before);
    noTempFiles(c.dir);
    expect(existsSync(c.out)).toBe(true);
  });

  it('authenticates both ways with a pre-shared key, and refuses a source with the wrong key or none while it keeps listening', async () => {
    const c = setup(4);
    const { key, wrong } = keyFiles(c.dir);
    const receiver = await startReceiver(c.out, ['--psk-file', key]);
    const send = (...extra: string[]) => spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image, '--json', ...extra]);

    const unkeyed = send();
    expect(await withTimeout(unkeyed.exit, 15_000, 'send without a key')).toBe(1);
    expect(unkeyed.stderr()).toMatch(/this target requires a pre-shared key/);
    const mismatched = send('--psk-file', wrong);
    expect(await withTimeout(mismatched.exit, 15_000, 'send with the wrong key')).toBe(1);
    expect(lastJson(mismatched.stdout())).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_PEER' });
    expect(mismatched.stderr()).toMatch(/does not hold this target's pre-shared key/);
    await receiver.waitForStderr(/refused .*PW_ERR_AUTH[\s\S]*refused .*does not hold .*PW_ERR_AUTH/);
    expect(sha256File(c.out)).toBe(c.before);

    const keyed = send('--psk-file', key);
    expect(await withTimeout(keyed.exit, 30_000, 'send with the key')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    samePausePoint(c, lastJson(keyed.stdout()));

    // A keyed source never sends pages to a target that cannot prove it holds the key.
    const d = setup(1);
    const open = await startReceiver(d.out);
    const wary = spawnCli(['send', '--connect', `127.0.0.1:${open.port}`, '--image', d.image, '--psk-file', key, '--json']);
    expect(await withTimeout(wary.exit, 15_000, 'keyed send to an unkeyed target')).toBe(1);
    expect(wary.stderr()).toMatch(/this target has no pre-shared key/);
    open.child.kill('SIGKILL');
    expect(sha256File(d.out)).toBe(d.before);
  });

  it('migrates over TLS-PSK, and refuses a source with the wrong key or without TLS while it keeps listening', async () => {
    const c = setup(4);
    const { key, wrong } = keyFiles(c.dir);
    const receiver = await startReceiver(c.out, ['--psk-file', key, '--tls']);
    const send = (...extra: string[]) => spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', c.image, '--json', ...extra]);
    const mismatched = send('--psk-file', wrong, '--tls');
    expect(await withTimeout(mismatched.exit, 15_000, 'TLS with the wrong key')).toBe(1);
    expect(mismatched.stderr()).toMatch(/TLS-PSK handshake with .* failed.*\(PW_ERR_AUTH\)/);
    const clear = send('--psk-file', key);
    expect(await withTimeout(clear.exit, 15_000, 'no TLS')).toBe(1);
    await receiver.waitForStderr(/refused .*TLS-PSK handshake failed[\s\S]*refused .*TLS-PSK handshake failed/);
    expect(sha256File(c.out)).toBe(c.before);
    const good = send('--psk-file', key, '--tls');
    expect(await withTimeout(good.exit, 30_000, 'TLS with the key')).toBe(0);
    expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
    samePausePoint(c, lastJson(good.stdout()));
  });

  it('refuses to listen beyond loopback without a key unless --insecure, and refuses short keys', async () => {
    const c = setup(1);
    const exposed = spawnCli(['receive', '--listen', '0.0.0.0:0', '--out', c.out]);
    expect(await withTimeout(exposed.exit, 10_000, 'receive on 0.0.0.0')).toBe(2);
    expect(exposed.stderr()).toMatch(/--listen 0\.0\.0\.0: anyone who reaches this address .*--psk-file.*--insecure/);
    const insecure = spawnCli(['receive', '--listen', '0.0.0.0:0', '--out', c.out, '--insecure']);
    await insecure.waitForStderr(/listening on 0\.0\.0\.0:\d+/);
    insecure.child.kill('SIGKILL');
    const short = join(c.dir, 'short-key');
    writeFileSync(short, 'too short');
    const weak = spawnCli(['receive', '--listen', '127.0.0.1:0', '--out', c.out, '--psk-file', short]);
    expect(await withTimeout(weak.exit, 10_000, 'receive with a short key')).toBe(2);
    expect(weak.stderr()).toMatch(/pre-shared key has 9 bytes; use at least 16/);
  });

  it('prints each command\'s usage on --help, and the usage of all of them with no command', async () => {
    for (const command of ['receive', 'send', 'digest', 'demo']) {
      const run = spawnCli([command, '--help']);
      expect(await withTimeout(run.exit, 10_000, `${command} --help`)).toBe(0);
      expect(run.stdout()).toMatch(new RegExp(`^usage: pagewire ${command} `));
    }
    const all = spawnCli(['--help']);
    expect(await withTimeout(all.exit, 10_000, '--help')).toBe(0);
    expect(all.stdout()).toMatch(/pagewire send .*--json \[--sha256\]/);
  });

  it('digest prints a file\'s region digest, and refuses a file that is not whole pages', async () => {
    const c = setup(1);
    const run = spawnCli(['digest', c.image, '--json']);
    expect(await withTimeout(run.exit, 10_000, 'digest')).toBe(0);
    expect(lastJson(run.stdout())).toEqual({ status: 'completed', ...fileDigest(c.image, 4096) });
    const plain = spawnCli(['digest', c.image]);
    expect(await withTimeout(plain.exit, 10_000, 'digest')).toBe(0);
    expect(plain.stdout()).toBe(`${fileDigest(c.image, 4096).digest}  ${c.image}\n`);
    // c.out holds a line of text: not a region.
    const bad = spawnCli(['digest', c.out]);
    expect(await withTimeout(bad.exit, 10_000, 'digest of a short file')).toBe(1);
    expect(bad.stderr()).toMatch(/^pagewire: .* not a whole number of 4096-byte pages \(PW_ERR_STORAGE\)\n$/);
  });

  it('rejects bad arguments with one line and a usage exit code', async () => {
    for (const args of [
      ['send', '--connect', 'nowhere', '--image', 'x'],
      ['send', '--connect', '127.0.0.1:1', '--image', join(tmp.dir, 'missing.img')],
      ['receive', '--listen', '127.0.0.1:0'],
      ['receive', '--listen', '127.0.0.1:0', '--out', '/nonexistent-dir/out.img'],
      ['send', '--bogus'],
      ['send', '--connect', '127.0.0.1:1', '--image', 'x', '--streams', '0'],
      ['send', '--connect', '127.0.0.1:1', '--image', 'x', '--streams', '65'],
      ['send', '--connect', '127.0.0.1:1', '--image', 'x', '--on-stall', 'panic'],
      ['send', '--connect', '127.0.0.1:1', '--image', 'x', '--lz4', 'sometimes'],
      ['digest'],
      ['digest', join(tmp.dir, 'missing.img')],
      ['frobnicate'],
    ]) {
      const run = spawnCli(args);
      const code = await withTimeout(run.exit, 10_000, args.join(' '));
      expect(code, args.join(' ')).not.toBe(0);
      const lines = run.stderr().trim().split('\n');
      expect(lines.length, run.stderr()).toBe(1);
      expect(lines[0]).toMatch(/^pagewire: .+\(PW_ERR_[A-Z_]+\)$/);
    }
  });
});
