// TLS 1.2 with a pre-shared key (RFC 4279 with AES-GCM): confidentiality and integrity for every frame,
// with the same key file as the authentication and no certificates. Node's TLS 1.3 has no external PSK.
import type { TlsOptions } from 'node:tls';

export const TLS_PSK_IDENTITY = 'pagewire';

export function tlsPskOptions(): Pick<TlsOptions, 'ciphers' | 'minVersion' | 'maxVersion'> {
  return { ciphers: 'PSK-AES256-GCM-SHA384', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' };
}
