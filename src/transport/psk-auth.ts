// Mutual challenge-response with a pre-shared key (docs/PROTOCOL.md, "Authentication"). After HELLO,
// the target sends a fresh nonce; the source answers with its own nonce and an HMAC-SHA256 over both
// nonces and the migration id; the target checks it (constant time) and answers with its own HMAC. Each
// side proves it holds the key to the other before the target opens an image or accepts a page, and
// the two proofs carry different labels, so a proof cannot be reflected back to its sender.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AuthError, InvalidArgumentError, ProtocolError } from '../errors.js';
import { MessageType } from '../wire/messages.js';
import type { FramedConnection } from './framed-connection.js';

const NONCE_BYTES = 32;
const PROOF_BYTES = 32;
/** Short keys are guessable offline from one recorded exchange. */
const MIN_PSK_BYTES = 16;

type Role = 'source' | 'target';

function proof(key: Uint8Array, role: Role, migrationId: Buffer, targetNonce: Buffer, sourceNonce: Buffer): Buffer {
  return createHmac('sha256', key)
    .update(`pagewire v2 ${role} proof`).update(migrationId).update(targetNonce).update(sourceNonce)
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

/** The target's side, right after a HELLO that offered the PSK feature. Throws AuthError on a wrong proof. */
export async function authenticateSource(connection: FramedConnection, key: Uint8Array, migrationId: Buffer,
  timeoutMs: number): Promise<void> {
  const targetNonce = randomBytes(NONCE_BYTES);
  await connection.send(MessageType.Auth, targetNonce);
  const answer = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), NONCE_BYTES + PROOF_BYTES, 'AUTH from the source');
  const sourceNonce = answer.subarray(0, NONCE_BYTES);
  if (same(sourceNonce, targetNonce)) throw new AuthError('the source echoed this target\'s nonce');
  if (!same(answer.subarray(NONCE_BYTES), proof(key, 'source', migrationId, targetNonce, sourceNonce))) {
    throw new AuthError('the source does not hold this target\'s pre-shared key');
  }
  await connection.send(MessageType.Auth, proof(key, 'target', migrationId, targetNonce, sourceNonce));
}

/** The source's side, right after sending HELLO with the PSK feature. Throws AuthError on a wrong proof. */
export async function authenticateTarget(connection: FramedConnection, key: Uint8Array, migrationId: Buffer,
  timeoutMs: number): Promise<void> {
  const targetNonce = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), NONCE_BYTES, 'AUTH from the target');
  const sourceNonce = randomBytes(NONCE_BYTES);
  await connection.send(MessageType.Auth, Buffer.concat([sourceNonce, proof(key, 'source', migrationId, targetNonce, sourceNonce)]));
  const answer = payloadOf(await connection.expect(MessageType.Auth, timeoutMs), PROOF_BYTES, 'AUTH proof from the target');
  if (!same(answer, proof(key, 'target', migrationId, targetNonce, sourceNonce))) {
    throw new AuthError('the target does not hold the pre-shared key: it is not the target this key was made for');
  }
}
