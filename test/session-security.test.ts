// Attacks on a migration by someone who does not hold its keys: an on-path proxy that rewrites a page and
// fixes up every checksum (issue 11, defect 1), a third party who read the migration id and asks to
// resume the live migration (defect 3), and one who tries to join it as an extra stream.
import { randomBytes, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FileTargetImage, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, type PagewireError,
} from '../dist/src/index.js';
import { regionDigest } from '../dist/src/codec/page-hashes.js';
import { binding } from '../dist/src/native/engine.js';
import { SessionKeyPair } from '../dist/src/transport/session-secret.js';
import {
  FEATURE_PSK, FEATURE_RESUME, MessageType, WELCOME_BYTES, encodeHello, encodeJoinHead, messageName,
} from '../dist/src/wire/messages.js';
import { FaultProxy, type ProxiedFrame } from './fault-proxy.js';
import { HELLO_V4, frame, provenJoin, rawClient, receivedAtLeast, tempDir, withTimeout } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;
const PAGES = 256;
const PSK = randomBytes(32);
const RECORD_HEADER_BYTES = 20;
const RAW = 1;

/**
 * A proxy that knows the wire format but no key: it flips a byte of the first RAW page it sees, writes
 * that page's new xxHash64 into its record, tracks every page's hash as sent, and rewrites FINAL's region
 * digest to match. Without per-frame authentication nothing the target checks can tell.
 */
function pageRewriter() {
  const hashes = new BigUint64Array(PAGES);
  let altered: number | undefined;
  const fault = (f: ProxiedFrame) => {
    if (f.direction !== 'to-target') return undefined;
    if (f.type === MessageType.Pages) {
      return {
        rewrite(payload: Buffer) {
          const count = payload.readUInt32LE(0);
          for (let i = 0, at = 8; i < count; i++) {
            const index = payload.readUInt32LE(at);
            const length = payload.readUInt32LE(at + 8);
            if (payload[at + 4] === RAW && altered === undefined) {
              const page = payload.subarray(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + PAGE);
              page[0] ^= 0xff;
              payload.writeBigUInt64LE(binding().xxh64(page), at + 12);
              altered = index;
            }
            hashes[index] = payload.readBigUInt64LE(at + 12);
            at += RECORD_HEADER_BYTES + length;
          }
        },
      };
    }
    if (f.type === MessageType.Final) {
      return { rewrite(payload: Buffer) { payload.writeBigUInt64LE(regionDigest(hashes), 8); } };
    }
    return undefined;
  };
  return { fault, altered: () => altered };
}

async function migrateThroughRewriter(name: string, psk: Buffer | undefined) {
  const bytes = Buffer.alloc(PAGES * PAGE);
  randomFillSync(bytes);
  const out = join(tmp.dir, `${name}.img`);
  writeFileSync(out, 'previous state');
  const target = await MigrationTarget.listen({
    image: new FileTargetImage(out), host: '127.0.0.1', port: 0, resumeWindowMs: 0, ...(psk ? { psk } : {}),
  });
  const targetResult = target.result.then(() => undefined, (e: PagewireError) => e);
  const rewriter = pageRewriter();
  const proxy = await FaultProxy.start(target.address.port, { fault: rewriter.fault });
  const calls: string[] = [];
  const source = new MigrationSource({
    region: MemoryRegion.fromMemory(bytes), host: '127.0.0.1', port: proxy.port, streams: 1, lz4: 'off',
    maxResumeAttempts: 0, ...(psk ? { psk } : {}),
    hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
  });
  const sourceResult = source.run().then(() => undefined, (e: PagewireError) => e);
  const [sourceError, targetError] = await Promise.all([sourceResult, targetResult]);
  proxy.close();
  return { bytes, out, sourceError, targetError, calls, altered: rewriter.altered() };
}

describe('an on-path proxy without the key', () => {
  it('that alters a page and fixes up its hash and the region digest makes a keyed migration fail, never commit', async () => {
    const run = await migrateThroughRewriter('tampered-psk', PSK);
    expect(run.altered).toBe(0);
    expect(run.targetError?.code).toBe('PW_ERR_AUTH');
    expect(run.targetError?.message).toMatch(/frame \d+ \(PAGES\) on this connection failed authentication/);
    expect(run.sourceError).toBeDefined();
    // The workload was never handed over, and the previous image is untouched.
    expect(run.calls.filter((c) => c === 'resume').length).toBe(run.calls.filter((c) => c === 'pause').length);
    expect(readFileSync(run.out, 'utf8')).toBe('previous state');
  });

  it('succeeds at it without a key, as the README says (nothing authenticates the frames then)', async () => {
    // The same proxy against a keyless migration: proof that it really rewrites what it claims to.
    const run = await migrateThroughRewriter('tampered-keyless', undefined);
    expect(run.targetError).toBeUndefined();
    expect(run.sourceError).toBeUndefined();
    const committed = readFileSync(run.out);
    expect(committed[0]).toBe(run.bytes[0]! ^ 0xff);
    expect(committed.subarray(1).equals(run.bytes.subarray(1))).toBe(true);
  });
});

describe('a target that refuses right after the AUTH exchange', () => {
  for (const psk of [undefined, PSK]) {
    it(`${psk ? 'keyed' : 'keyless'}: the source hears the refusal's own code (a tagged ERROR, checked once the keys are in)`, async () => {
      // The target's image has another size: open() refuses with PW_ERR_CAPACITY, right after AUTH.
      const target = await MigrationTarget.listen({
        image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(64 * PAGE))), host: '127.0.0.1', port: 0, ...(psk ? { psk } : {}),
      });
      const refused: string[] = [];
      target.on('refused', (e) => refused.push(e.code));
      const source = new MigrationSource({
        region: MemoryRegion.fromMemory(Buffer.alloc(128 * PAGE)), host: '127.0.0.1', port: target.address.port, streams: 1,
        maxResumeAttempts: 0, hooks: { pause: () => {}, resume: () => {} }, ...(psk ? { psk } : {}),
      });
      const error = await source.run().then(() => undefined, (e: PagewireError) => e);
      target.stop();
      expect(refused).toEqual(['PW_ERR_CAPACITY']);
      expect(error).toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_CAPACITY' });
    });
  }
});

describe('a third party who read the migration id', () => {
  for (const psk of [undefined, PSK]) {
    it(`cannot resume the live migration${psk ? ' even with the pre-shared key' : ''}; the migration goes on untouched`, async () => {
      const bytes = Buffer.alloc(PAGES * 16 * PAGE);
      randomFillSync(bytes);
      const targetBytes = Buffer.alloc(bytes.length);
      const target = await MigrationTarget.listen({
        image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
        ...(psk ? { psk } : {}),
      });
      const refusals: PagewireError[] = [];
      target.on('refused', (e) => refusals.push(e));
      let resumed = 0;
      target.on('resumed', () => { resumed += 1; });
      const source = new MigrationSource({
        region: MemoryRegion.fromMemory(bytes), host: '127.0.0.1', port: target.address.port, streams: 1,
        // Slow enough that the migration is still in its first round when the stranger arrives.
        maxBandwidthBytesPerSec: 8 * 1024 * 1024, ...(psk ? { psk } : {}),
        hooks: { pause: () => {}, resume: () => {} },
      });
      const result = source.run();
      await new Promise<void>((resolve) => target.once('phase', (phase) => { if (phase === 'receiving') resolve(); }));
      const stranger = await rawClient(target.address.port);
      stranger.socket.write(frame(MessageType.Hello, encodeHello({
        ...HELLO_V4, features: FEATURE_RESUME | (psk ? FEATURE_PSK : 0), extraStreams: 0, pageSize: PAGE,
        regionSize: bytes.length, migrationId: source.migrationId, sessionKey: Buffer.alloc(32),
      })));
      // The target challenges the resume (AUTH); the stranger answers with what it can: a guess.
      await receivedAtLeast(stranger, 8);
      expect(framesOf(stranger.received())[0]).toBe('AUTH');
      stranger.socket.write(frame(MessageType.Auth, randomBytes(64)));
      await withTimeout(stranger.closed, 10_000, 'the refusal');
      expect(framesOf(stranger.received())).toEqual(['AUTH', 'ERROR']);
      expect(stranger.received().toString('latin1')).toContain('PW_ERR_AUTH');
      expect(refusals.map((e) => e.code)).toEqual(['PW_ERR_AUTH']);
      expect(refusals[0]!.message).toMatch(/secret of the session it asks to resume/);
      const summary = await result;
      const received = await target.result;
      expect(summary.resumes).toBe(0);
      expect(received.resumes).toBe(0);
      expect(resumed).toBe(0);
      expect(targetBytes.equals(bytes)).toBe(true);
    });
  }

  it('cannot join it as an extra stream: a JOIN must prove the session secret', async () => {
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(2 * PAGES * PAGE)), { zeroed: true }), host: '127.0.0.1', port: 0,
      handshakeTimeoutMs: 60_000,
    });
    const refusals: PagewireError[] = [];
    target.on('refused', (e) => refusals.push(e));
    // A hand-driven source asks for one extra stream and holds it back until the stranger has tried.
    const keys = SessionKeyPair.generate();
    const migrationId = randomBytes(16);
    const hello = encodeHello({
      ...HELLO_V4, features: 0, extraStreams: 1, pageSize: PAGE, regionSize: 2 * PAGES * PAGE, migrationId, sessionKey: keys.publicKey,
    });
    const control = await rawClient(target.address.port);
    control.socket.write(frame(MessageType.Hello, hello));
    await receivedAtLeast(control, 8 + WELCOME_BYTES);
    const stranger = await rawClient(target.address.port);
    const head = encodeJoinHead({ version: HELLO_V4.maxVersion, stream: 1, migrationId });
    stranger.socket.write(frame(MessageType.Join, Buffer.concat([head, randomBytes(32)])));
    await withTimeout(stranger.closed, 10_000, 'the refusal');
    expect(framesOf(stranger.received())).toEqual(['ERROR']);
    expect(stranger.received().toString('latin1')).toContain('PW_ERR_AUTH');
    expect(refusals.map((e) => e.message)).toEqual([expect.stringMatching(/does not prove the session secret/)]);
    // The slot is still free for the source that holds the secret.
    const extra = await rawClient(target.address.port);
    const welcome = control.received().subarray(8, 8 + WELCOME_BYTES);
    extra.socket.write(frame(MessageType.Join, provenJoin(keys, hello, welcome, 1, migrationId)));
    await receivedAtLeast(extra, 8);
    expect(framesOf(extra.received())).toEqual(['JOINED']);
    target.stop();
    control.socket.destroy();
    extra.socket.destroy();
  });
});

/** The names of the frames in `bytes`, in order. */
function framesOf(bytes: Buffer): string[] {
  const names: string[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8 + bytes.readUInt32LE(at + 4)) names.push(messageName(bytes[at]!));
  return names;
}

