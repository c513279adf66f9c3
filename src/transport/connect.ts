import { connect as netConnect, type Socket } from 'node:net';
import { AbortedError, ConnectionError, TimeoutError, type PagewireError } from '../errors.js';

/** Opens a TCP connection, failing with a typed error on refusal, after timeoutMs, or on abort. */
export function connectTcp(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
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
    socket.once('connect', () => settle());
    socket.once('error', (error) => settle(new ConnectionError(`cannot connect to ${host}:${port}: ${error.message}`, { cause: error })));
  });
}
