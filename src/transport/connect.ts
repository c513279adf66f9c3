import { connect as netConnect, type Socket } from 'node:net';
import { ConnectionError, TimeoutError } from '../errors.js';

/** Opens a TCP connection, failing with a typed error on refusal or after timeoutMs. */
export function connectTcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TimeoutError(`could not connect to ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new ConnectionError(`cannot connect to ${host}:${port}: ${error.message}`, { cause: error }));
    });
  });
}
