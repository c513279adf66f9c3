// TLS 1.3 with X.509 certificates, the alternative to TLS-PSK when a PKI exists: the target proves its
// identity with a certificate the source's CA list trusts, and with a CA of its own the target demands
// a client certificate too (mutual TLS), which then authenticates the source without a pre-shared key.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions, TlsOptions } from 'node:tls';
import { InvalidArgumentError } from '../errors.js';

/** PEM contents. The target needs cert and key (and ca for mutual TLS); the source needs ca (and cert and key for it). */
export interface TlsCertificates {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/** Reads the PEM files that are given; a missing or unreadable file is a usage error. */
export function readTlsFiles(files: { cert?: string; key?: string; ca?: string }): TlsCertificates {
  const read = (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (cause) {
      throw new InvalidArgumentError(`--tls-${flag}: cannot read ${path}: ${(cause as Error).message}`, { cause });
    }
  };
  const certs: TlsCertificates = {};
  const cert = read('cert', files.cert);
  const key = read('key', files.key);
  const ca = read('ca', files.ca);
  if (cert) certs.cert = cert;
  if (key) certs.key = key;
  if (ca) certs.ca = ca;
  if (!certs.cert !== !certs.key) throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  return certs;
}

export function tlsServerOptions(certs: TlsCertificates): TlsOptions {
  if (!certs.cert || !certs.key) throw new InvalidArgumentError('a TLS target needs a certificate and its key (--tls-cert, --tls-key)');
  return {
    cert: certs.cert, key: certs.key, minVersion: 'TLSv1.3',
    ...(certs.ca ? { ca: certs.ca, requestCert: true, rejectUnauthorized: true } : {}),
  };
}

export function tlsClientOptions(certs: TlsCertificates, host: string): ConnectionOptions {
  if (!certs.ca) throw new InvalidArgumentError('a TLS source needs the CA that signed the target\'s certificate (--tls-ca)');
  return {
    ca: certs.ca, minVersion: 'TLSv1.3', rejectUnauthorized: true,
    // SNI takes host names only; an address is checked against the certificate's IP entries.
    ...(isIP(host) ? {} : { servername: host }),
    ...(certs.cert && certs.key ? { cert: certs.cert, key: certs.key } : {}),
  };
}
