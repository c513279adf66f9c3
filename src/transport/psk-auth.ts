// Mutual challenge-response with a key (docs/PROTOCOL.md, "Authentication"): the pre-shared key, or on
// a resume the key derived from the session secret. After HELLO (or JOIN), the target sends a fresh
// nonce; the source answers with its own nonce and an HMAC-SHA256 over that first frame and both
// nonces; the target checks it (constant time) and answers with its own HMAC. Each side proves it holds
// the key to the other before the target opens an image or accepts a page; the two proofs carry
// different labels, so a proof cannot be reflected back to its sender; and the first frame is covered,
// so a HELLO or JOIN changed on the way fails the exchange. Both sides then hold the same frame keys.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AuthError, InvalidArgumentError, ProtocolError } from '../errors.js';
import { MessageType } from '../wire/messages.js';
import { deriveFrameKeys, type FrameKeys } from './frame-auth.js';
import type { FramedConnection } from './framed-connection.js';

const NONCE_BYTES = 32;
const PROOF_BYTES = 32;
/** Short keys are guessable offline from one recorded exchange. */
const MIN_PSK_BYTES = 16;

type Role = 'source' | 'target';

function proof(key: Uint8Array, role: Role, firstFrame: Buffer, targetNonce: Buffer, sourceNonce: Buffer): Buffer {
  return createHmac('sha256', key)
    .update(`pagewire v4 ${role} proof`).update(firstFrame).update(targetNonce).update(sourceNonce)
    .digest();
}

function same(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function payloadOf(payload: Buffer, bytes: number, what: string): Buffer {
  if (payload.length !== bytes) throw new ProtocolError(`${what} has ${payload.length} bytes, expected ${bytes}`);
  return payload;
}

/** Reads a key file: its bytes as they are (a trailing newline included), at least MIN_PSK_BYTES. */
export function readPskFile(path: string): Buffer {
  let key: Buffer;
  try {
    key = readFileSync(path);
  } catch (cause) {
    throw new InvalidArgumentError(`--psk-file: cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
  checkPsk(key);
  return key;
}

export function checkPsk(key: Uint8Array): void {
  if (key.byteLength < MIN_PSK_BYTES) {
    throw new InvalidArgumentError(
      `the pre-shared key has ${key.byteLength} bytes; use at least ${MIN_PSK_BYTES} random bytes (e.g. 'openssl rand -hex 32 > key')`);
  }
}

/**
 * The target's side, right after the connection's first frame (HELLO or JOIN), whose payload is
 * `firstFrame`. Throws AuthError on a wrong proof; returns this connection's frame keys.
 */
export async function authenticateSource(connection: FramedConnection, key: Uint8Array, firstFrame: Buffer,
  timeoutMs: number, keyName = 'this target\'s pre-shared key'): Promise<FrameKeys> {
  const targetNonce = randomBytes(NONCE_BYTES);
  await connection.send(MessageType.Auth, targetNonce);
  const answer = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), NONCE_BYTES + PROOF_BYTES, 'AUTH from the source');
  const sourceNonce = answer.subarray(0, NONCE_BYTES);
  if (same(sourceNonce, targetNonce)) throw new AuthError('the source echoed this target\'s nonce');
  if (!same(answer.subarray(NONCE_BYTES), proof(key, 'source', firstFrame, targetNonce, sourceNonce))) {
    throw new AuthError(`the source does not hold ${keyName}`);
  }
  await connection.send(MessageType.Auth, proof(key, 'target', firstFrame, targetNonce, sourceNonce));
  return deriveFrameKeys(key, [firstFrame, targetNonce, sourceNonce], 'target');
}

/**
 * The source's side, right after sending `firstFrame` (HELLO or JOIN). Throws AuthError on a wrong
 * proof. The connection holds what follows the target's proof: install the keys (and raise the payload
 * limit) as they apply, then connection.release().
 */
export async function authenticateTarget(connection: FramedConnection, key: Uint8Array, firstFrame: Buffer,
  timeoutMs: number, keyName = 'the pre-shared key'): Promise<FrameKeys> {
  const targetNonce = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), NONCE_BYTES, 'AUTH from the target');
  const sourceNonce = randomBytes(NONCE_BYTES);
  await connection.send(MessageType.Auth, Buffer.concat([sourceNonce, proof(key, 'source', firstFrame, targetNonce, sourceNonce)]));
  // The target's next frames (WELCOME, HELD, or an ERROR) may come in the same read as its proof; they
  // are tagged, and HELD is above the handshake's limit: decoded only once the caller has released.
  connection.holdAfterNextFrame();
  const answer = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), PROOF_BYTES, 'AUTH proof from the target');
  if (!same(answer, proof(key, 'target', firstFrame, targetNonce, sourceNonce))) {
    throw new AuthError(`the target does not hold ${keyName}: it is not the target this key was made for`);
  }
  return deriveFrameKeys(key, [firstFrame, targetNonce, sourceNonce], 'source');
}
