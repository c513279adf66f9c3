// Wire protocol v5 messages (docs/PROTOCOL.md is the source of truth). Every frame is an 8-byte header
// (u8 type, u8 reserved, u16 reserved, u32 payload length, little-endian) and a payload. Parsers check
// every length, enum and range here, at the boundary; nothing past this file sees an unchecked field.
import { HandshakeError, ProtocolError, VersionError } from '../errors.js';

export const FRAME_HEADER_BYTES = 8;
export const MAGIC: Buffer = Buffer.from('PAGEWIRE', 'latin1');
/** The window of versions this build speaks. */
export const MIN_VERSION = 5;
export const MAX_VERSION = 5;
/** Feature bits. Unknown offered bits are dropped by the target's answer. */
export const FEATURE_PSK = 1;
/** This HELLO resumes the migration it names, which lost its connections during the pre-copy. */
export const FEATURE_RESUME = 2;
/**
 * This HELLO begins continuous replication to a standby, not a migration (docs/PROTOCOL.md section 9).
 * A standby's WELCOME keeps the bit; a migration target drops it, and the primary then refuses it.
 */
export const FEATURE_REPLICATION = 4;
/**
 * The source can start from a seeded target: one whose WELCOME says TARGET_SEEDED, and sends HELD after
 * it, so that round 1 sends only the pages whose hashes differ (a receive started from a snapshot).
 */
export const FEATURE_SEED = 8;
export const SUPPORTED_FEATURES = FEATURE_PSK | FEATURE_RESUME | FEATURE_SEED;
/** WELCOME flag: the target's image starts all zeros, so round 1 may skip zero pages. */
export const TARGET_ZEROED = 1;
/** WELCOME flag (only to a HELLO offering FEATURE_SEED): the target starts from a seed, and HELD follows. */
export const TARGET_SEEDED = 2;
/** Largest payload accepted after the handshake. */
export const MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** The most device state a migration carries, in all its DEVICE_STATE frames. */
export const MAX_DEVICE_STATE_BYTES = 1024 * 1024 * 1024;
export const MAX_ERROR_REASON_BYTES = 1000;
/** The largest ERROR payload: code length, code of at most 64, reason length, reason. */
export const MAX_ERROR_PAYLOAD_BYTES = 1 + 64 + 2 + MAX_ERROR_REASON_BYTES;
/** Payload limit until the handshake completes: a HELLO, a WELCOME, or an ERROR saying why not. */
export const HANDSHAKE_PAYLOAD_LIMIT = MAX_ERROR_PAYLOAD_BYTES;
export const MIGRATION_ID_BYTES = 16;
/** An X25519 public key (HELLO, WELCOME): the session secret that a resume and each JOIN prove. */
export const SESSION_KEY_BYTES = 32;
/** HMAC-SHA256 of a JOIN's first 32 bytes under the session secret. */
export const JOIN_PROOF_BYTES = 32;
/** The batch header in front of the records of a PAGES payload. */
export const PAGES_HEADER_BYTES = 8;

export enum MessageType {
  Hello = 1,
  Welcome = 2,
  Error = 3,
  RoundBegin = 4,
  Pages = 5,
  RoundEnd = 6,
  RoundAck = 7,
  DeviceState = 8,
  Final = 9,
  Ready = 10,
  Go = 11,
  Done = 12,
  Auth = 13,
  Join = 14,
  Joined = 15,
  Held = 16,
  EpochBegin = 17,
  EpochEnd = 18,
  EpochAck = 19,
  Heartbeat = 20,
}

const TYPE_NAMES: Record<number, string> = {
  1: 'HELLO', 2: 'WELCOME', 3: 'ERROR', 4: 'ROUND_BEGIN', 5: 'PAGES', 6: 'ROUND_END', 7: 'ROUND_ACK',
  8: 'DEVICE_STATE', 9: 'FINAL', 10: 'READY', 11: 'GO', 12: 'DONE', 13: 'AUTH', 14: 'JOIN', 15: 'JOINED', 16: 'HELD',
  17: 'EPOCH_BEGIN', 18: 'EPOCH_END', 19: 'EPOCH_ACK', 20: 'HEARTBEAT',
};

export function messageName(type: number): string {
  return TYPE_NAMES[type] ?? `unknown(${type})`;
}

export function isMessageType(type: number): type is MessageType {
  return type in TYPE_NAMES;
}

export interface Frame {
  type: MessageType;
  payload: Buffer;
  /**
   * For a frame read natively into pooled memory: hands the payload's memory back for the next frame,
   * once nothing reads it any more. Without the call it is left to the garbage collector.
   */
  release?: () => void;
  /** The native reader has checked this frame's tag (the payload still ends with it). */
  authenticated?: boolean;
}

export function frameHeader(type: MessageType, payloadLength: number): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32LE(payloadLength, 4);
  return header;
}

// ---- HELLO ---------------------------------------------------------------------------------------

/** A HELLO for one region; each extra region adds HELLO_REGION_BYTES. */
export const HELLO_BYTES = 80;
export const HELLO_REGION_BYTES = 16;
/** Regions in one migration, the first included (HELLO's u16 at 22 counts the extra ones). */
export const MAX_REGIONS = 16;

/** A region's shape, as HELLO describes it. */
export interface RegionShape {
  pageSize: number;
  regionSize: number;
}

export interface Hello {
  minVersion: number;
  maxVersion: number;
  features: number;
  /** Region 0's page size and size. */
  pageSize: number;
  regionSize: number;
  /** Regions 1.. of the migration, each with its own page size (docs/PROTOCOL.md, "Several regions"). */
  extraRegions: RegionShape[];
  migrationId: Buffer;
  /** Connections the source asks to add to this one (docs/PROTOCOL.md, "Parallel streams"). */
  extraStreams: number;
  /** The source's X25519 public key for the session secret; zeros on a resume, which proves the secret instead. */
  sessionKey: Buffer;
}

export function encodeHello(hello: Hello): Buffer {
  const b = Buffer.alloc(HELLO_BYTES + HELLO_REGION_BYTES * hello.extraRegions.length);
  MAGIC.copy(b, 0);
  b.writeUInt16LE(hello.minVersion, 8);
  b.writeUInt16LE(hello.maxVersion, 10);
  b.writeUInt32LE(hello.features >>> 0, 12);
  b.writeUInt32LE(hello.pageSize, 16);
  b.writeUInt16LE(hello.extraStreams, 20);
  b.writeUInt16LE(hello.extraRegions.length, 22);
  b.writeBigUInt64LE(BigInt(hello.regionSize), 24);
  hello.migrationId.copy(b, 32, 0, MIGRATION_ID_BYTES);
  hello.sessionKey.copy(b, 48, 0, SESSION_KEY_BYTES);
  hello.extraRegions.forEach((shape, i) => {
    const at = HELLO_BYTES + HELLO_REGION_BYTES * i;
    b.writeBigUInt64LE(BigInt(shape.regionSize), at);
    b.writeUInt32LE(shape.pageSize, at + 8);
  });
  return b;
}

export function parseHello(payload: Buffer): Hello {
  // The version window comes before the length: an older source's HELLO has another length, and it
  // deserves to hear that the versions differ.
  if (payload.length >= 12 && payload.subarray(0, 8).equals(MAGIC) && payload.readUInt16LE(10) < MIN_VERSION &&
    payload.readUInt16LE(8) <= payload.readUInt16LE(10)) {
    throw new VersionError(`source speaks protocol versions ${payload.readUInt16LE(8)}..${payload.readUInt16LE(10)}; ` +
      `this target speaks ${MIN_VERSION}..${MAX_VERSION}`);
  }
  const extraCount = payload.length >= 24 ? payload.readUInt16LE(22) : 0;
  if (extraCount > MAX_REGIONS - 1) throw new HandshakeError(`HELLO offers ${extraCount + 1} regions, at most ${MAX_REGIONS}`);
  const expected = HELLO_BYTES + HELLO_REGION_BYTES * extraCount;
  if (payload.length !== expected) throw new HandshakeError(`HELLO has ${payload.length} bytes, expected ${expected}`);
  if (!payload.subarray(0, 8).equals(MAGIC)) throw new HandshakeError('wrong magic: not a pagewire source');
  const minVersion = payload.readUInt16LE(8);
  const maxVersion = payload.readUInt16LE(10);
  if (minVersion > maxVersion) throw new HandshakeError(`HELLO offers an empty version window ${minVersion}..${maxVersion}`);
  const sizeOf = (at: number, which: string): number => {
    const size = payload.readBigUInt64LE(at);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new HandshakeError(`HELLO ${which} size ${size} is too large`);
    return Number(size);
  };
  const regionSize = sizeOf(24, 'region');
  const extraRegions: RegionShape[] = [];
  for (let i = 0; i < extraCount; i++) {
    const at = HELLO_BYTES + HELLO_REGION_BYTES * i;
    if (payload.readUInt32LE(at + 12) !== 0) throw new HandshakeError('HELLO has non-zero reserved bytes');
    extraRegions.push({ regionSize: sizeOf(at, `region ${i + 1}`), pageSize: payload.readUInt32LE(at + 8) });
  }
  return {
    minVersion,
    maxVersion,
    features: payload.readUInt32LE(12),
    pageSize: payload.readUInt32LE(16),
    regionSize,
    extraRegions,
    migrationId: Buffer.from(payload.subarray(32, 32 + MIGRATION_ID_BYTES)),
    extraStreams: payload.readUInt16LE(20),
    sessionKey: Buffer.from(payload.subarray(48, 48 + SESSION_KEY_BYTES)),
  };
}

// ---- WELCOME -------------------------------------------------------------------------------------

export interface Welcome {
  version: number;
  /** Extra connections the target will accept: at most what HELLO asked for. */
  extraStreams: number;
  features: number;
  flags: number;
  /**
   * The target's X25519 public key for the session secret; when answering a resume, 32 fresh random
   * bytes instead. Either way the JOINs of this session's extra streams prove the secret over it.
   */
  sessionKey: Buffer;
}

export const WELCOME_BYTES = 12 + SESSION_KEY_BYTES;

export function encodeWelcome(welcome: Welcome): Buffer {
  const b = Buffer.alloc(WELCOME_BYTES);
  b.writeUInt16LE(welcome.version, 0);
  b.writeUInt16LE(welcome.extraStreams, 2);
  b.writeUInt32LE(welcome.features >>> 0, 4);
  b.writeUInt32LE(welcome.flags >>> 0, 8);
  welcome.sessionKey.copy(b, 12, 0, SESSION_KEY_BYTES);
  return b;
}

export function parseWelcome(payload: Buffer): Welcome {
  expectLength(payload, WELCOME_BYTES, 'WELCOME');
  const version = payload.readUInt16LE(0);
  if (version < MIN_VERSION || version > MAX_VERSION) {
    throw new ProtocolError(`target chose protocol version ${version}, outside ${MIN_VERSION}..${MAX_VERSION}`);
  }
  return {
    version, extraStreams: payload.readUInt16LE(2), features: payload.readUInt32LE(4), flags: payload.readUInt32LE(8),
    sessionKey: Buffer.from(payload.subarray(12, 12 + SESSION_KEY_BYTES)),
  };
}

// ---- JOIN ----------------------------------------------------------------------------------------

/** The part of a JOIN its proof covers. */
export const JOIN_HEAD_BYTES = 32;
export const JOIN_BYTES = JOIN_HEAD_BYTES + JOIN_PROOF_BYTES;

/** The first frame of each extra connection: which migration it joins, as which stream. */
export interface Join {
  version: number;
  /** 1..extraStreams (stream 0 is the connection that sent HELLO). */
  stream: number;
  migrationId: Buffer;
}

/** The JOIN's first JOIN_HEAD_BYTES: what its proof covers. */
export function encodeJoinHead(join: Join): Buffer {
  const b = Buffer.alloc(JOIN_HEAD_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt16LE(join.version, 8);
  b.writeUInt16LE(join.stream, 10);
  join.migrationId.copy(b, 16, 0, MIGRATION_ID_BYTES);
  return b;
}

export function parseJoin(payload: Buffer): Join & { head: Buffer; proof: Buffer } {
  if (payload.length !== JOIN_BYTES) throw new HandshakeError(`JOIN has ${payload.length} bytes, expected ${JOIN_BYTES}`);
  if (!payload.subarray(0, 8).equals(MAGIC)) throw new HandshakeError('wrong magic: not a pagewire source');
  if (payload.readUInt32LE(12) !== 0) throw new HandshakeError('JOIN has non-zero reserved bytes');
  return {
    version: payload.readUInt16LE(8),
    stream: payload.readUInt16LE(10),
    migrationId: Buffer.from(payload.subarray(16, 16 + MIGRATION_ID_BYTES)),
    head: Buffer.from(payload.subarray(0, JOIN_HEAD_BYTES)),
    proof: Buffer.from(payload.subarray(JOIN_HEAD_BYTES)),
  };
}

// ---- ERROR ---------------------------------------------------------------------------------------

export interface ErrorMessage {
  code: string;
  reason: string;
}

const CODE_PATTERN = /^[A-Z0-9_]{1,64}$/;

export function encodeError(code: string, reason: string): Buffer {
  const safeCode = CODE_PATTERN.test(code) ? code : 'PW_ERR';
  let text = Buffer.from(reason, 'utf8');
  if (text.length > MAX_ERROR_REASON_BYTES) text = text.subarray(0, MAX_ERROR_REASON_BYTES);
  const b = Buffer.alloc(1 + safeCode.length + 2 + text.length);
  b.writeUInt8(safeCode.length, 0);
  b.write(safeCode, 1, 'latin1');
  b.writeUInt16LE(text.length, 1 + safeCode.length);
  text.copy(b, 3 + safeCode.length);
  return b;
}

export function parseError(payload: Buffer): ErrorMessage {
  if (payload.length < 1) throw new ProtocolError('ERROR is empty');
  const codeLength = payload.readUInt8(0);
  if (payload.length < 1 + codeLength + 2) throw new ProtocolError('ERROR is truncated');
  const code = payload.toString('latin1', 1, 1 + codeLength);
  if (!CODE_PATTERN.test(code)) throw new ProtocolError('ERROR carries an invalid code');
  const reasonLength = payload.readUInt16LE(1 + codeLength);
  if (reasonLength > MAX_ERROR_REASON_BYTES || payload.length !== 3 + codeLength + reasonLength) {
    throw new ProtocolError('ERROR has an invalid reason length');
  }
  // One line, printable: the reason is shown to an operator.
  const reason = payload.toString('utf8', 3 + codeLength).replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return { code, reason };
}

// ---- rounds --------------------------------------------------------------------------------------

export interface RoundMarker {
  round: number;
  /** ROUND_BEGIN: pages this round will carry; ROUND_END: records it carried. */
  pages: number;
  /** ROUND_MARKER_* bits; only STOP_AND_COPY is defined, and only on ROUND_BEGIN. */
  flags?: number;
}

/** ROUND_BEGIN flag: the source is paused; this is the last round before FINAL. */
export const STOP_AND_COPY = 1;
export const ROUND_MARKER_BYTES = 16;

export function encodeRoundMarker(marker: RoundMarker): Buffer {
  const b = Buffer.alloc(ROUND_MARKER_BYTES);
  b.writeUInt32LE(marker.round, 0);
  b.writeUInt32LE(marker.flags ?? 0, 4);
  b.writeBigUInt64LE(BigInt(marker.pages), 8);
  return b;
}

export function parseRoundMarker(payload: Buffer, name: string): Required<RoundMarker> {
  expectLength(payload, ROUND_MARKER_BYTES, name);
  const flags = payload.readUInt32LE(4);
  if ((flags & ~STOP_AND_COPY) !== 0) throw new ProtocolError(`${name} has unknown flags ${flags}`);
  const pages = payload.readBigUInt64LE(8);
  if (pages > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${name} page count is out of range`);
  return { round: payload.readUInt32LE(0), flags, pages: Number(pages) };
}

export function encodeRoundAck(round: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(round, 0);
  return b;
}

export function parseRoundAck(payload: Buffer): number {
  expectLength(payload, 4, 'ROUND_ACK');
  return payload.readUInt32LE(0);
}

// ---- PAGES ---------------------------------------------------------------------------------------

export function encodePagesHeader(recordCount: number, region: number): Buffer {
  const b = Buffer.alloc(PAGES_HEADER_BYTES);
  b.writeUInt32LE(recordCount, 0);
  b.writeUInt32LE(region, 4);
  return b;
}

export interface PagesBatch {
  recordCount: number;
  /** The region the records' page indices count in (0 .. extra regions). */
  region: number;
  records: Buffer;
}

export function parsePages(payload: Buffer): PagesBatch {
  if (payload.length < PAGES_HEADER_BYTES) throw new ProtocolError('PAGES is shorter than its header');
  return { recordCount: payload.readUInt32LE(0), region: payload.readUInt32LE(4), records: payload.subarray(PAGES_HEADER_BYTES) };
}

// ---- switch-over ---------------------------------------------------------------------------------

/** DEVICE_STATE's flag: this chunk ends the device state, which the target may then use at once. */
export const DEVICE_STATE_LAST = 1;

export interface DeviceStateChunk {
  last: boolean;
  bytes: Buffer;
}

export function encodeDeviceStateHead(last: boolean): Buffer {
  return Buffer.from([last ? DEVICE_STATE_LAST : 0]);
}

/** A DEVICE_STATE payload: u8 flags, then the chunk's bytes (a view into the payload). */
export function parseDeviceState(payload: Buffer): DeviceStateChunk {
  if (payload.length < 1) throw new ProtocolError('DEVICE_STATE has no flags byte');
  const flags = payload[0]!;
  if ((flags & ~DEVICE_STATE_LAST) !== 0) throw new ProtocolError(`DEVICE_STATE has unknown flags ${flags}`);
  return { last: flags === DEVICE_STATE_LAST, bytes: payload.subarray(1) };
}

export interface Final {
  round: number;
  /** XXH64 over the per-page hashes of the whole region as the source sent it. */
  regionDigest: bigint;
}

export function encodeFinal(final: Final): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(final.round, 0);
  b.writeBigUInt64LE(final.regionDigest, 8);
  return b;
}

export function parseFinal(payload: Buffer): Final {
  expectLength(payload, 16, 'FINAL');
  if (payload.readUInt32LE(4) !== 0) throw new ProtocolError('FINAL has non-zero reserved bytes');
  return { round: payload.readUInt32LE(0), regionDigest: payload.readBigUInt64LE(8) };
}

// ---- HELD ----------------------------------------------------------------------------------------

export const HELD_HEADER_BYTES = 16;
/** Hashes per HELD frame: 8 MiB of payload. */
export const HELD_PAGES_PER_FRAME = 1 << 20;

/** After WELCOME on a resume: the last round the target completed, and the hashes of the pages it holds. */
export interface Held {
  lastRound: number;
  /** The region the hashes belong to; the regions come in order, each from its first page. */
  region: number;
  firstPage: number;
  hashes: BigUint64Array;
}

// The hashes are copied as bytes in host order, which is the wire's little-endian order on the hosts
// pagewire supports (as for the region digest, docs/PROTOCOL.md section 8): one copy, not a call per page.
export function encodeHeld(lastRound: number, region: number, firstPage: number, hashes: BigUint64Array): Buffer {
  const b = Buffer.alloc(HELD_HEADER_BYTES + hashes.byteLength);
  b.writeUInt32LE(lastRound, 0);
  b.writeUInt32LE(firstPage, 4);
  b.writeUInt32LE(hashes.length, 8);
  b.writeUInt32LE(region, 12);
  b.set(new Uint8Array(hashes.buffer, hashes.byteOffset, hashes.byteLength), HELD_HEADER_BYTES);
  return b;
}

export function parseHeld(payload: Buffer): Held {
  if (payload.length < HELD_HEADER_BYTES) throw new ProtocolError('HELD is shorter than its header');
  const count = payload.readUInt32LE(8);
  if (count > HELD_PAGES_PER_FRAME || payload.length !== HELD_HEADER_BYTES + count * 8) {
    throw new ProtocolError(`HELD has ${payload.length} bytes for ${count} hashes`);
  }
  const hashes = new BigUint64Array(count);
  new Uint8Array(hashes.buffer).set(payload.subarray(HELD_HEADER_BYTES));
  return { lastRound: payload.readUInt32LE(0), region: payload.readUInt32LE(12), firstPage: payload.readUInt32LE(4), hashes };
}

// ---- READY ---------------------------------------------------------------------------------------

/** What the target spent between FINAL and READY, for the source's downtime split. */
export interface Ready {
  verifyMicros: number;
  prepareMicros: number;
}

const U32_MAX = 0xffffffff;

export function encodeReady(ready: Ready): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(Math.min(U32_MAX, Math.max(0, Math.round(ready.verifyMicros))), 0);
  b.writeUInt32LE(Math.min(U32_MAX, Math.max(0, Math.round(ready.prepareMicros))), 4);
  return b;
}

export function parseReady(payload: Buffer): Ready {
  expectLength(payload, 8, 'READY');
  return { verifyMicros: payload.readUInt32LE(0), prepareMicros: payload.readUInt32LE(4) };
}

export function expectEmpty(payload: Buffer, name: string): void {
  expectLength(payload, 0, name);
}

function expectLength(payload: Buffer, length: number, name: string): void {
  if (payload.length !== length) throw new ProtocolError(`${name} has ${payload.length} bytes, expected ${length}`);
}
