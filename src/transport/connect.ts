import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { AbortedError, AuthError, ConnectionError, TimeoutError, type PagewireError } from '../errors.js';
import { tlsClientOptions, type TlsCertificates } from './tls-certs.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from './tls-psk.js';

/** TLS on a connection: with the pre-shared key (TLS 1.2 PSK), or with certificates (TLS 1.3). */
export type TlsSetup = { psk: Uint8Array } | { certificates: TlsCertificates };

/**
 * Opens a TCP connection (TLS over it when `tls` is given), failing with a typed error on refusal, a
 * failed TLS handshake, after timeoutMs, or on abort.
 */
export function connectTcp(host: string, port: number, timeoutMs: number, signal?: AbortSignal,
  tls?: TlsSetup): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = !tls
      ? netConnect({ host, port })
      : 'psk' in tls
        ? tlsConnect({ host, port, ...tlsPskOptions(), pskCallback: () => ({ psk: Buffer.from(tls.psk), identity: TLS_PSK_IDENTITY }),
          checkServerIdentity: () => undefined })
        : tlsConnect({ host, port, ...tlsClientOptions(tls.certificates, host) });
    const settle = (error?: PagewireError) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      if (!error) return resolve(socket);
      socket.destroy();
      reject(error);
    };
    const onAbort = () => settle(new AbortedError('migration aborted while connecting', { cause: signal?.reason }));
    const timer = setTimeout(() => settle(new TimeoutError(`could not connect to ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(tls ? 'secureConnect' : 'connect', () => settle());
    // Refused, unreachable or an unknown host is the network's failure, with TLS or without.
    socket.once('error', (error: Error & { syscall?: string }) => settle(!tls || error.syscall === 'connect' || error.syscall === 'getaddrinfo'
      ? new ConnectionError(`cannot connect to ${host}:${port}: ${error.message}`, { cause: error })
      : 'psk' in tls
        ? new AuthError(`TLS-PSK handshake with ${host}:${port} failed: the target does not hold this key or does not use --tls`, { cause: error })
        : new AuthError(`TLS handshake with ${host}:${port} failed (${error.message}): check --tls-ca against the target's ` +
          'certificate, and give --tls-cert/--tls-key if the target asks for one', { cause: error })));
  });
}
