import { describe, expect, it } from 'vitest';
import { FrameDecoder } from '../dist/src/wire/frame-decoder.js';
import { HELLO_V4, frame } from './helpers.js';
import {
  HELLO_BYTES, MAGIC, MessageType, encodeError, encodeFinal, encodeHello, encodeRoundMarker, frameHeader,
  parseError, parseFinal, parseHello, parsePages, parseRoundMarker, parseWelcome, encodeWelcome, STOP_AND_COPY,
} from '../dist/src/wire/messages.js';

const hello = {
  ...HELLO_V4, extraStreams: 0, features: 0, pageSize: 4096, regionSize: 64 * 2 ** 30,
  migrationId: Buffer.alloc(16, 7),
};

describe('frame decoding', () => {
  const stream = Buffer.concat([
    frame(MessageType.Hello, encodeHello(hello)),
    frame(MessageType.RoundBegin, encodeRoundMarker({ round: 1, pages: 5 })),
    frame(MessageType.Go, Buffer.alloc(0)),
    frame(MessageType.Pages, Buffer.alloc(5000, 3)),
  ]);

  it('yields the same frames whole, byte by byte and in random splits', () => {
    const whole = new FrameDecoder(1 << 20).push(stream).frames;
    expect(whole.map((f) => f.type)).toEqual([MessageType.Hello, MessageType.RoundBegin, MessageType.Go, MessageType.Pages]);
    const bytewise = new FrameDecoder(1 << 20);
    const frames = [];
    for (let i = 0; i < stream.length; i++) frames.push(...bytewise.push(stream.subarray(i, i + 1)).frames);
    expect(frames).toEqual(whole);
    let seed = 42;
    for (let trial = 0; trial < 50; trial++) {
      const decoder = new FrameDecoder(1 << 20);
      const out = [];
      for (let at = 0; at < stream.length;) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        const n = 1 + (seed % 700);
        out.push(...decoder.push(stream.subarray(at, at + n)).frames);
        at += n;
      }
      expect(out).toEqual(whole);
      expect(decoder.pendingBytes).toBe(0);
    }
  });

  it('rejects an unknown type, non-zero reserved bytes and an oversized length before buffering the payload', () => {
    const bad = frameHeader(MessageType.Go, 0);
    bad.writeUInt8(99, 0);
    expect(new FrameDecoder(100).push(bad).error?.message).toMatch(/unknown message type 99/);
    const reserved = frameHeader(MessageType.Go, 0);
    reserved.writeUInt8(1, 1);
    expect(new FrameDecoder(100).push(reserved).error?.message).toMatch(/reserved/);
    const huge = new FrameDecoder(HELLO_BYTES).push(frameHeader(MessageType.Pages, 0xffffffff));
    expect(huge.error?.message).toMatch(/exceeds the limit/);
    expect(huge.frames).toEqual([]);
  });

  it('still yields the frames that came before a malformed header in the same chunk', () => {
    const bad = frameHeader(MessageType.Go, 0);
    bad.writeUInt8(99, 0);
    const { frames, error } = new FrameDecoder(100).push(Buffer.concat([frame(MessageType.Go, Buffer.alloc(0)), frame(MessageType.Done, Buffer.alloc(0)), bad]));
    expect(frames.map((f) => f.type)).toEqual([MessageType.Go, MessageType.Done]);
    expect(error?.message).toMatch(/unknown message type 99/);
  });

  it('waits for the rest of a truncated frame without yielding it', () => {
    const decoder = new FrameDecoder(1 << 20);
    expect(decoder.push(stream.subarray(0, 30))).toEqual({ frames: [] });
    expect(decoder.pendingBytes).toBe(30);
  });
});

describe('messages', () => {
  it('round-trips HELLO, including region sizes beyond 4 GiB', () => {
    expect(parseHello(encodeHello(hello))).toEqual(hello);
  });

  it('refuses a HELLO with the wrong magic, length or version window', () => {
    const wrongMagic = encodeHello(hello);
    wrongMagic.write('NOTPAGEW', 0, 'latin1');
    expect(() => parseHello(wrongMagic)).toThrow(/wrong magic/);
    expect(() => parseHello(encodeHello(hello).subarray(0, 40))).toThrow(/expected 80/);
    expect(() => parseHello(encodeHello({ ...hello, minVersion: 5, maxVersion: 4 }))).toThrow(/version window/);
    // A v3 source's HELLO is 48 bytes: it hears about the versions, not about the length.
    const v3 = encodeHello({ ...hello, minVersion: 3, maxVersion: 3 }).subarray(0, 48);
    expect(() => parseHello(v3)).toThrow(expect.objectContaining({ code: 'PW_ERR_VERSION', message: expect.stringMatching(/3\.\.3; this target speaks 5\.\.5/) }));
    const huge = encodeHello(hello);
    huge.writeBigUInt64LE(2n ** 60n, 24);
    expect(() => parseHello(huge)).toThrow(/too large/);
    expect(MAGIC.toString()).toBe('PAGEWIRE');
  });

  it('round-trips ERROR and keeps the reason on one line', () => {
    expect(parseError(encodeError('PW_ERR_CAPACITY', 'too big\nreally'))).toEqual({ code: 'PW_ERR_CAPACITY', reason: 'too big really' });
    expect(() => parseError(Buffer.from([200, 1, 2]))).toThrow(/truncated/);
    const long = parseError(encodeError('PW_ERR', 'x'.repeat(5000)));
    expect(long.reason.length).toBe(1000);
  });

  it('checks lengths of fixed-size messages', () => {
    expect(parseRoundMarker(encodeRoundMarker({ round: 3, pages: 2 ** 40 }), 'ROUND_END')).toEqual({ round: 3, pages: 2 ** 40, flags: 0 });
    expect(parseRoundMarker(encodeRoundMarker({ round: 4, pages: 1, flags: STOP_AND_COPY }), 'ROUND_BEGIN').flags).toBe(STOP_AND_COPY);
    expect(() => parseRoundMarker(encodeRoundMarker({ round: 4, pages: 1, flags: 6 }), 'ROUND_BEGIN')).toThrow(/unknown flags/);
    expect(() => parseRoundMarker(Buffer.alloc(12), 'ROUND_END')).toThrow(/expected 16/);
    expect(parseFinal(encodeFinal({ round: 4, regionDigest: 0xdeadbeefcafef00dn }))).toEqual({ round: 4, regionDigest: 0xdeadbeefcafef00dn });
    expect(() => parseWelcome(encodeWelcome({ version: 9, extraStreams: 0, features: 0, flags: 0, sessionKey: Buffer.alloc(32) }))).toThrow(/version 9/);
    expect(() => parsePages(Buffer.alloc(4))).toThrow(/shorter/);
  });
});
