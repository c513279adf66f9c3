// The flags both commands share for who may talk to whom: a pre-shared key (--psk-file, --tls for
// TLS-PSK) or certificates (--tls-cert, --tls-key, --tls-ca), read and checked the same way on each side.
import { InvalidArgumentError } from '../errors.js';
import { readPskFile } from '../transport/psk-auth.js';
import { readTlsFiles, type TlsCertificates } from '../transport/tls-certs.js';
import { optionalString, type Flags } from './args.js';

export const SECURITY_FLAGS = {
  'psk-file': 'string', tls: 'boolean', 'tls-cert': 'string', 'tls-key': 'string', 'tls-ca': 'string',
} as const;

export interface Security {
  psk?: Buffer;
  tls: boolean;
  tlsCertificates?: TlsCertificates;
}

export function readSecurityFlags(flags: Flags): Security {
  const pskFile = optionalString(flags, 'psk-file');
  const psk = pskFile ? readPskFile(pskFile) : undefined;
  const tls = flags.has('tls');
  if (tls && !psk) throw new InvalidArgumentError('--tls: TLS-PSK needs the key: give --psk-file too');
  const certificates = readTlsFiles({
    cert: optionalString(flags, 'tls-cert'), key: optionalString(flags, 'tls-key'), ca: optionalString(flags, 'tls-ca'),
  });
  const withCertificates = Object.keys(certificates).length > 0;
  if (withCertificates && tls) throw new InvalidArgumentError('--tls (TLS-PSK) and the --tls-cert/--tls-key/--tls-ca flags exclude each other');
  return { ...(psk ? { psk } : {}), tls, ...(withCertificates ? { tlsCertificates: certificates } : {}) };
}

/** A flag's value when it is one of `allowed`, else a usage error naming them. */
export function oneOf<T extends string>(flags: Flags, name: string, allowed: readonly T[]): T | undefined {
  const value = optionalString(flags, name);
  if (value !== undefined && !allowed.includes(value as T)) {
    throw new InvalidArgumentError(`--${name}: expected ${allowed.join(', ')}, got '${value}'`);
  }
  return value as T | undefined;
}
