import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { AbortedError, AuthError, ConnectionError, TimeoutError, type PagewireError } from '../errors.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from './tls-psk.js';

/**
 * Opens a TCP connection (TLS-PSK over it when `tlsKey` is given), failing with a typed error on
 * refusal, a failed TLS handshake, after timeoutMs, or on abort.
 */
export function connectTcp(host: string, port: number, timeoutMs: number, signal?: AbortSignal,
  tlsKey?: Uint8Array): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tlsKey
      ? tlsConnect({ host, port, ...tlsPskOptions(), pskCallback: () => ({ psk: Buffer.from(tlsKey), identity: TLS_PSK_IDENTITY }),
        checkServerIdentity: () => undefined })
      : netConnect({ host, port });
    const settle = (error?: PagewireError) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      if (!error) return resolve(socket);
      socket.destroy();
      reject(error);
    };
    const onAbort = () => settle(new AbortedError('migration aborted while connecting'));
    const timer = setTimeout(() => settle(new TimeoutError(`could not connect to ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(tlsKey ? 'secureConnect' : 'connect', () => settle());
    socket.once('error', (error: Error & { code?: string }) => settle(tlsKey && error.code !== 'ECONNREFUSED'
      ? new AuthError(`TLS-PSK handshake with ${host}:${port} failed: the target does not hold this key or does not use --tls`, { cause: error })
      : new ConnectionError(`cannot connect to ${host}:${port}: ${error.message}`, { cause: error })));
  });
}
