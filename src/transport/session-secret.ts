// The session secret: an X25519 exchange in HELLO and WELCOME that only the two ends of a migration's
// first connection complete. A resume, and every JOIN, must prove it, so that a third party who saw the
// migration id (sent in clear without TLS) can neither take over a live migration nor a free stream slot.
// It is not a defence against an attacker on the path from the first frame: that needs a pre-shared key
// or TLS (docs/PROTOCOL.md, section 3).
import { createHmac, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { HandshakeError } from '../errors.js';
import { SESSION_KEY_BYTES } from '../wire/messages.js';

/** The fixed DER prefix of an X25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export class SessionKeyPair {
  private constructor(private readonly privateKey: KeyObject, readonly publicKey: Buffer) {}

  static generate(): SessionKeyPair {
    const { privateKey, publicKey } = generateKeyPairSync('x25519');
    const der = publicKey.export({ format: 'der', type: 'spki' });
    return new SessionKeyPair(privateKey, Buffer.from(der.subarray(X25519_SPKI_PREFIX.length)));
  }

  /**
   * The session secret with the peer's public key, bound to the HELLO that began the migration and the
   * target's public key (so that neither can be swapped on the way without the secrets differing).
   */
  secretWith(peerKey: Buffer, hello: Buffer, targetKey: Buffer): Buffer {
    if (peerKey.length !== SESSION_KEY_BYTES) throw new HandshakeError(`a session key has ${peerKey.length} bytes, expected ${SESSION_KEY_BYTES}`);
    const publicKey = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, peerKey]), format: 'der', type: 'spki' });
    let shared: Buffer;
    try {
      shared = diffieHellman({ privateKey: this.privateKey, publicKey });
    } catch (cause) {
      // OpenSSL refuses a low-order point, whose result would be all zeros and known to anyone.
      throw new HandshakeError('the peer\'s session key is not a usable X25519 key', { cause });
    }
    return createHmac('sha256', shared).update('pagewire v4 session secret').update(hello).update(targetKey).digest();
  }
}

/** The key a resume's AUTH exchange runs under: the session secret, and the pre-shared key when there is one. */
export function resumeKey(sessionSecret: Buffer, psk: Uint8Array | undefined): Buffer {
  const hmac = createHmac('sha256', sessionSecret).update('pagewire v4 resume key');
  if (psk) hmac.update(psk);
  return hmac.digest();
}

/**
 * What a JOIN carries to prove it comes from the source that began the session: bound to the WELCOME
 * of the connection set it joins, so that a JOIN recorded in an earlier one is no good.
 */
export function joinProof(sessionSecret: Buffer, welcomeKey: Buffer, joinHead: Buffer): Buffer {
  return createHmac('sha256', sessionSecret).update('pagewire v4 join proof').update(welcomeKey).update(joinHead).digest();
}
