import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../dist/src/errors.js';
import { FrameDecoder } from '../dist/src/wire/frame-decoder.js';
import { FEATURE_REPLICATION, MessageType, isMessageType, messageName } from '../dist/src/wire/messages.js';
import {
  EPOCH_ACK_BYTES, EPOCH_BEGIN_BYTES, EPOCH_END_BYTES, EPOCH_SYNC, HEARTBEAT_BYTES, encodeEpochBegin, encodeEpochEnd,
  encodeEpochNumber, parseEpochBegin, parseEpochEnd, parseEpochNumber,
} from '../dist/src/wire/replication-messages.js';
import { frame } from './helpers.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

describe('replication messages', () => {
  it('names types 17..20 and the frame decoder accepts them', () => {
    expect([17, 18, 19, 20].map(messageName)).toEqual(['EPOCH_BEGIN', 'EPOCH_END', 'EPOCH_ACK', 'HEARTBEAT']);
    expect([MessageType.EpochBegin, MessageType.EpochEnd, MessageType.EpochAck, MessageType.Heartbeat]).toEqual([17, 18, 19, 20]);
    for (const type of [17, 18, 19, 20]) expect(isMessageType(type)).toBe(true);
    expect(messageName(21)).toBe('unknown(21)');
    expect(isMessageType(21)).toBe(false);
    expect(FEATURE_REPLICATION).toBe(4);
    const stream = Buffer.concat([
      frame(MessageType.EpochBegin, encodeEpochBegin({ epoch: 1, token: 0, flags: EPOCH_SYNC })),
      frame(MessageType.EpochEnd, encodeEpochEnd({ epoch: 1, records: 0, digest: 0n })),
      frame(MessageType.EpochAck, encodeEpochNumber(1)),
      frame(MessageType.Heartbeat, encodeEpochNumber(1)),
    ]);
    const { frames, error } = new FrameDecoder(1 << 20).push(stream);
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.type)).toEqual([17, 18, 19, 20]);
    const unknown = Buffer.alloc(8);
    unknown.writeUInt8(21, 0);
    expect(new FrameDecoder(100).push(unknown).error?.message).toMatch(/unknown message type 21/);
  });

  describe('EPOCH_BEGIN', () => {
    it('round-trips, byte for byte as section 9 lays it out', () => {
      const bytes = encodeEpochBegin({ epoch: 0x0102030405, token: 77, flags: EPOCH_SYNC });
      expect(bytes.length).toBe(EPOCH_BEGIN_BYTES);
      expect(EPOCH_BEGIN_BYTES).toBe(24);
      expect(bytes.toString('hex')).toBe('0504030201000000' + '4d00000000000000' + '01000000' + '00000000');
      expect(parseEpochBegin(bytes)).toEqual({ epoch: 0x0102030405, token: 77, flags: EPOCH_SYNC });
      for (const begin of [{ epoch: 1, token: 0, flags: 0 }, { epoch: MAX_SAFE, token: MAX_SAFE, flags: 0 }, { epoch: 2, token: 9, flags: EPOCH_SYNC }]) {
        expect(parseEpochBegin(encodeEpochBegin(begin))).toEqual(begin);
      }
    });

    it.each([0, 1, 23, 25, 32])('refuses %i bytes', (length) => {
      const payload = Buffer.alloc(length);
      expect(() => parseEpochBegin(payload)).toThrow(ProtocolError);
      expect(() => parseEpochBegin(payload)).toThrow(`EPOCH_BEGIN has ${length} bytes, expected 24`);
    });

    it.each([2, 3, 0x80000000, 0xffffffff])('refuses flags %i', (flags) => {
      const payload = encodeEpochBegin({ epoch: 1, token: 0, flags: 0 });
      payload.writeUInt32LE(flags, 16);
      expect(() => parseEpochBegin(payload)).toThrow('EPOCH_BEGIN has unknown flags or non-zero reserved bytes');
    });

    it.each([1, 0x100, 0x80000000])('refuses reserved bytes %i', (reserved) => {
      const payload = encodeEpochBegin({ epoch: 1, token: 0, flags: EPOCH_SYNC });
      payload.writeUInt32LE(reserved, 20);
      expect(() => parseEpochBegin(payload)).toThrow(ProtocolError);
      expect(() => parseEpochBegin(payload)).toThrow('EPOCH_BEGIN has unknown flags or non-zero reserved bytes');
    });

    it('refuses an epoch or token above 2^53-1', () => {
      const epoch = encodeEpochBegin({ epoch: 1, token: 0, flags: 0 });
      epoch.writeBigUInt64LE(2n ** 53n, 0);
      expect(() => parseEpochBegin(epoch)).toThrow(`EPOCH_BEGIN epoch ${2n ** 53n} is too large`);
      epoch.writeBigUInt64LE(2n ** 64n - 1n, 0);
      expect(() => parseEpochBegin(epoch)).toThrow(ProtocolError);
      const token = encodeEpochBegin({ epoch: 1, token: 0, flags: 0 });
      token.writeBigUInt64LE(2n ** 53n, 8);
      expect(() => parseEpochBegin(token)).toThrow(`EPOCH_BEGIN fencing token ${2n ** 53n} is too large`);
      token.writeBigUInt64LE(2n ** 53n - 1n, 8);
      expect(parseEpochBegin(token).token).toBe(MAX_SAFE);
    });
  });

  describe('EPOCH_END', () => {
    it('round-trips, byte for byte as section 9 lays it out', () => {
      const end = { epoch: 9, records: 0x01020304, digest: 0x8029a135da062c01n };
      const bytes = encodeEpochEnd(end);
      expect(bytes.length).toBe(EPOCH_END_BYTES);
      expect(EPOCH_END_BYTES).toBe(24);
      expect(bytes.toString('hex')).toBe('0900000000000000' + '012c06da35a12980' + '04030201' + '00000000');
      expect(parseEpochEnd(bytes)).toEqual(end);
      for (const other of [
        { epoch: 1, records: 0, digest: 0n }, { epoch: MAX_SAFE, records: 0xffffffff, digest: 2n ** 64n - 1n },
      ]) {
        expect(parseEpochEnd(encodeEpochEnd(other))).toEqual(other);
      }
    });

    it.each([0, 8, 16, 23, 25])('refuses %i bytes', (length) => {
      expect(() => parseEpochEnd(Buffer.alloc(length))).toThrow(`EPOCH_END has ${length} bytes, expected 24`);
    });

    it.each([1, 0x10000, 0xffffffff])('refuses reserved bytes %i', (reserved) => {
      const payload = encodeEpochEnd({ epoch: 1, records: 0, digest: 5n });
      payload.writeUInt32LE(reserved, 20);
      expect(() => parseEpochEnd(payload)).toThrow(ProtocolError);
      expect(() => parseEpochEnd(payload)).toThrow('EPOCH_END has non-zero reserved bytes');
    });

    it('refuses an epoch above 2^53-1; the digest takes all 64 bits', () => {
      const payload = encodeEpochEnd({ epoch: 1, records: 0, digest: 0n });
      payload.writeBigUInt64LE(2n ** 53n, 0);
      expect(() => parseEpochEnd(payload)).toThrow(`EPOCH_END epoch ${2n ** 53n} is too large`);
      const digest = encodeEpochEnd({ epoch: 1, records: 1, digest: 2n ** 63n + 1n });
      expect(parseEpochEnd(digest).digest).toBe(2n ** 63n + 1n);
    });
  });

  describe('EPOCH_ACK and HEARTBEAT', () => {
    it('round-trip one u64', () => {
      expect(EPOCH_ACK_BYTES).toBe(8);
      expect(HEARTBEAT_BYTES).toBe(8);
      expect(encodeEpochNumber(0x0a0b).toString('hex')).toBe('0b0a000000000000');
      for (const epoch of [0, 1, 2 ** 32, MAX_SAFE]) {
        expect(parseEpochNumber(encodeEpochNumber(epoch), 'EPOCH_ACK')).toBe(epoch);
        expect(parseEpochNumber(encodeEpochNumber(epoch), 'HEARTBEAT')).toBe(epoch);
      }
    });

    it.each([0, 4, 7, 9, 16])('refuse %i bytes, naming the message', (length) => {
      expect(() => parseEpochNumber(Buffer.alloc(length), 'EPOCH_ACK')).toThrow(`EPOCH_ACK has ${length} bytes, expected 8`);
      expect(() => parseEpochNumber(Buffer.alloc(length), 'HEARTBEAT')).toThrow(ProtocolError);
      expect(() => parseEpochNumber(Buffer.alloc(length), 'HEARTBEAT')).toThrow(`HEARTBEAT has ${length} bytes, expected 8`);
    });

    it('refuse an epoch above 2^53-1', () => {
      const payload = Buffer.alloc(8);
      payload.writeBigUInt64LE(2n ** 53n, 0);
      expect(() => parseEpochNumber(payload, 'EPOCH_ACK')).toThrow(`EPOCH_ACK epoch ${2n ** 53n} is too large`);
      payload.writeBigUInt64LE(2n ** 64n - 1n, 0);
      expect(() => parseEpochNumber(payload, 'HEARTBEAT')).toThrow(`HEARTBEAT epoch ${2n ** 64n - 1n} is too large`);
      payload.writeBigUInt64LE(2n ** 53n - 1n, 0);
      expect(parseEpochNumber(payload, 'HEARTBEAT')).toBe(MAX_SAFE);
    });
  });
});
