// Replication's own frames (docs/PROTOCOL.md section 9): an epoch is EPOCH_BEGIN, PAGES and
// DEVICE_STATE frames, EPOCH_END; the standby answers EPOCH_ACK once it holds all of it, verified.
// HEARTBEAT goes both ways whenever a side has sent nothing for a while. Parsers check every field.
import { ProtocolError } from '../errors.js';

/** EPOCH_BEGIN flag: this epoch is the connection's first sync, not a consistent point (never committed). */
export const EPOCH_SYNC = 1;
export const EPOCH_BEGIN_BYTES = 24;
export const EPOCH_END_BYTES = 24;
export const EPOCH_ACK_BYTES = 8;
export const HEARTBEAT_BYTES = 8;

export interface EpochBegin {
  epoch: number;
  /** The primary's fencing token: its coordinator key's revision, 0 without a coordinator. */
  token: number;
  flags: number;
}

export interface EpochEnd {
  epoch: number;
  /** Page records the epoch carried, in all its PAGES frames. */
  records: number;
  /** The region digest at the epoch's capture (section 4). */
  digest: bigint;
}

function u64(payload: Buffer, at: number, what: string): number {
  const value = payload.readBigUInt64LE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} ${value} is too large`);
  return Number(value);
}

function sized(payload: Buffer, bytes: number, name: string): void {
  if (payload.length !== bytes) throw new ProtocolError(`${name} has ${payload.length} bytes, expected ${bytes}`);
}

export function encodeEpochBegin(begin: EpochBegin): Buffer {
  const b = Buffer.alloc(EPOCH_BEGIN_BYTES);
  b.writeBigUInt64LE(BigInt(begin.epoch), 0);
  b.writeBigUInt64LE(BigInt(begin.token), 8);
  b.writeUInt32LE(begin.flags, 16);
  return b;
}

export function parseEpochBegin(payload: Buffer): EpochBegin {
  sized(payload, EPOCH_BEGIN_BYTES, 'EPOCH_BEGIN');
  const flags = payload.readUInt32LE(16);
  if ((flags & ~EPOCH_SYNC) !== 0 || payload.readUInt32LE(20) !== 0) throw new ProtocolError('EPOCH_BEGIN has unknown flags or non-zero reserved bytes');
  return { epoch: u64(payload, 0, 'EPOCH_BEGIN epoch'), token: u64(payload, 8, 'EPOCH_BEGIN fencing token'), flags };
}

export function encodeEpochEnd(end: EpochEnd): Buffer {
  const b = Buffer.alloc(EPOCH_END_BYTES);
  b.writeBigUInt64LE(BigInt(end.epoch), 0);
  b.writeBigUInt64LE(end.digest, 8);
  b.writeUInt32LE(end.records, 16);
  return b;
}

export function parseEpochEnd(payload: Buffer): EpochEnd {
  sized(payload, EPOCH_END_BYTES, 'EPOCH_END');
  if (payload.readUInt32LE(20) !== 0) throw new ProtocolError('EPOCH_END has non-zero reserved bytes');
  return { epoch: u64(payload, 0, 'EPOCH_END epoch'), digest: payload.readBigUInt64LE(8), records: payload.readUInt32LE(16) };
}

/** EPOCH_ACK and HEARTBEAT carry one u64: the epoch acknowledged, or the sender's last epoch. */
export function encodeEpochNumber(epoch: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(epoch), 0);
  return b;
}

export function parseEpochNumber(payload: Buffer, name: string): number {
  sized(payload, 8, name);
  return u64(payload, 0, `${name} epoch`);
}
