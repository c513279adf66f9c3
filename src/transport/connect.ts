// Opening one connection of a migration: TCP, a Unix socket, or a stream the embedder opens itself (a
// vsock, an in-process pair), with TLS over it when asked.
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { AbortedError, AuthError, ConnectionError, InvalidArgumentError, TimeoutError, type PagewireError } from '../errors.js';
import { tlsClientOptions, type TlsCertificates } from './tls-certs.js';
import { TLS_PSK_IDENTITY, tlsPskOptions } from './tls-psk.js';

/** TLS on a connection: with the pre-shared key (TLS 1.2 PSK), or with certificates (TLS 1.3). */
export type TlsSetup = { psk: Uint8Array } | { certificates: TlsCertificates };

/**
 * Opens one connection of a migration, the embedder's way. `connect` gets an AbortSignal that aborts
 * when the migration stops waiting for it.
 */
export type Endpoint =
  | { host: string; port: number }
  | { path: string }
  | { connect(signal: AbortSignal): Promise<Duplex> | Duplex };

/** Where to connect, as an embedder gives it: exactly one of host and port, path, or connect. */
export interface EndpointOptions {
  /** TCP: the target's host and port. */
  host?: string;
  port?: number;
  /** A Unix domain socket the target listens on. */
  path?: string;
  /** Opens one connection to the target however the embedder likes (a vsock, an in-process pair); called once per stream. */
  connect?(signal: AbortSignal): Promise<Duplex> | Duplex;
}

/**
 * The one endpoint `options` names; InvalidArgumentError unless exactly one is given. The values
 * themselves are checked by the caller (src/migration/source-options.ts).
 */
export function endpointOf(options: EndpointOptions): Endpoint {
  const { host, port, path, connect } = options;
  const given = [host !== undefined || port !== undefined, path !== undefined, connect !== undefined].filter(Boolean).length;
  if (given !== 1) throw new InvalidArgumentError('give exactly one of host and port, path (a Unix socket) or connect');
  if (connect !== undefined) return { connect };
  if (path !== undefined) return { path };
  return { host: host!, port: port! };
}

/** How an endpoint is named in messages. */
export function describeEndpoint(endpoint: Endpoint): string {
  return 'path' in endpoint ? `unix:${endpoint.path}` : 'host' in endpoint ? `${endpoint.host}:${endpoint.port}` : 'the embedder\'s connection';
}

/**
 * Opens a connection to `endpoint` (TLS over it when `tls` is given), failing with a typed error on
 * refusal, a failed TLS handshake, after timeoutMs, or on abort.
 */
export async function openConnection(endpoint: Endpoint, timeoutMs: number, signal?: AbortSignal, tls?: TlsSetup): Promise<Duplex> {
  if (!('connect' in endpoint)) return connectSocket(endpoint, timeoutMs, signal, tls);
  const gaveUp = new AbortController();
  const onAbort = () => gaveUp.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  try {
    const stream = await Promise.race([
      Promise.resolve().then(() => endpoint.connect(gaveUp.signal)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`the embedder's connect() did not give a connection within ${timeoutMs} ms`)), timeoutMs);
        gaveUp.signal.addEventListener('abort', () => reject(new AbortedError('migration aborted while connecting', { cause: signal?.reason })));
      }),
    ]);
    if (!tls) return stream;
    return await connectSocket({ stream }, timeoutMs, signal, tls);
  } catch (error) {
    gaveUp.abort();
    if (error instanceof TimeoutError || error instanceof AbortedError || error instanceof AuthError) throw error;
    throw new ConnectionError(`the embedder's connect() failed: ${(error as Error).message}`, { cause: error });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

function connectSocket(to: { host: string; port: number } | { path: string } | { stream: Duplex }, timeoutMs: number, signal?: AbortSignal,
  tls?: TlsSetup): Promise<Socket> {
  const where = 'stream' in to ? { socket: to.stream } : to;
  const host = 'host' in to ? to.host : 'localhost';
  const name = 'stream' in to ? 'the embedder\'s connection' : describeEndpoint(to);
  return new Promise((resolve, reject) => {
    const socket = !tls
      ? netConnect(where as { host: string; port: number } | { path: string })
      : 'psk' in tls
        ? tlsConnect({ ...where, ...tlsPskOptions(), pskCallback: () => ({ psk: Buffer.from(tls.psk), identity: TLS_PSK_IDENTITY }),
          checkServerIdentity: () => undefined })
        : tlsConnect({ ...where, ...tlsClientOptions(tls.certificates, host) });
    const settle = (error?: PagewireError) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      if (!error) return resolve(socket);
      socket.destroy();
      reject(error);
    };
    const onAbort = () => settle(new AbortedError('migration aborted while connecting', { cause: signal?.reason }));
    const timer = setTimeout(() => settle(new TimeoutError(`could not connect to ${name} within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(tls ? 'secureConnect' : 'connect', () => settle());
    // Refused, unreachable or an unknown host is the network's failure, with TLS or without.
    socket.once('error', (error: Error & { syscall?: string }) => settle(!tls || error.syscall === 'connect' || error.syscall === 'getaddrinfo'
      ? new ConnectionError(`cannot connect to ${name}: ${error.message}`, { cause: error })
      : 'psk' in tls
        ? new AuthError(`TLS-PSK handshake with ${name} failed: the target does not hold this key or does not use --tls`, { cause: error })
        : new AuthError(`TLS handshake with ${name} failed (${error.message}): check --tls-ca against the target's ` +
          'certificate, and give --tls-cert/--tls-key if the target asks for one', { cause: error })));
  });
}
