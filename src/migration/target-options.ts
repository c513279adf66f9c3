// What the embedder hands a MigrationTarget, checked before it listens: every option (type, range, the
// image's methods, the hooks), the key rule beyond loopback, and the defaults filled in. A wrong value
// is an InvalidArgumentError naming it, never a TypeError from inside a migration.
import { Server } from 'node:net';
import { InvalidArgumentError } from '../errors.js';
import { isLoopback } from '../transport/loopback.js';
import { checkPsk } from '../transport/psk-auth.js';
import { tlsServerOptions } from '../transport/tls-certs.js';
import { MAX_STREAMS } from '../wire/streams.js';
import {
  checkFunction, checkHost, checkSocketPath, checkMs, checkObject, checkOneOf, checkOptionalBoolean, checkOptionalBytes, checkOptionalFunction, checkRange,
  checkSignal, checkTlsContext, definedEntries,
} from '../option-checks.js';
import type { MigrationTargetOptions, TargetHooks } from './target.js';
import type { TargetImage } from '../target/target-image.js';

type Optional = 'signal' | 'hooks' | 'psk' | 'tls' | 'tlsCertificates' | 'insecure' | 'path' | 'server';

/** The options with every default filled in. */
export type TargetSettings = Required<Omit<MigrationTargetOptions, Optional>> & Pick<MigrationTargetOptions, Optional> & { hooks: TargetHooks };

/** Each stream may hold about 100 MiB of frames read ahead and 4 being decoded. */
const DEFAULT_MAX_STREAMS = 16;
const DEFAULT_RESUME_WINDOW_MS = 10_000;

const IMAGE_METHODS: readonly (keyof TargetImage)[] = ['open', 'noteWritten', 'persist', 'commit', 'discard', 'keepInDoubt'];

/** Checks every option and returns them with the defaults filled in; throws InvalidArgumentError naming the option. */
export function targetSettings(options: MigrationTargetOptions): TargetSettings {
  checkObject('options', options);
  // An image, or a function making one per offer (checked when it is called).
  if (typeof options.image !== 'function') {
    checkObject('options.image', options.image);
    for (const method of IMAGE_METHODS) checkFunction(`options.image.${method}`, options.image[method]);
  }
  const filled: TargetSettings = {
    host: '127.0.0.1', port: 0, timeoutMs: 30_000, handshakeTimeoutMs: 5_000, hookTimeoutMs: 30_000, hooks: {},
    maxStreams: DEFAULT_MAX_STREAMS, resumeWindowMs: DEFAULT_RESUME_WINDOW_MS, serve: 'one',
    ...definedEntries(options),
  } as TargetSettings;
  const { path, server } = filled;
  if (path !== undefined) checkSocketPath('options.path', path);
  if (server !== undefined && !(server instanceof Server)) throw new InvalidArgumentError('options.server must be a net.Server (or tls.Server)');
  if (path !== undefined && server !== undefined) throw new InvalidArgumentError('give options.path or options.server, not both');
  if ((path !== undefined || server !== undefined) && (filled.tls || filled.tlsCertificates)) {
    throw new InvalidArgumentError('options.tls and options.tlsCertificates apply to the TCP listener the target makes; with a path or a ' +
      'server of your own, protect the channel yourself (or use psk)');
  }
  checkOneOf('options.serve', filled.serve, ['one', 'many']);
  const { hooks, psk, tls, tlsCertificates, host, insecure } = filled;
  checkObject('options.hooks', hooks);
  checkOptionalFunction('options.hooks.prepare', hooks.prepare);
  checkOptionalFunction('options.hooks.deviceStateReceived', hooks.deviceStateReceived);
  checkOptionalFunction('options.hooks.discard', hooks.discard);
  checkOptionalFunction('options.hooks.onDeviceState', hooks.onDeviceState);
  checkOptionalFunction('options.hooks.resume', hooks.resume);
  checkHost('options.host', host);
  checkRange('options.port', filled.port, 0, 65535);
  checkMs('options.timeoutMs', filled.timeoutMs);
  checkMs('options.handshakeTimeoutMs', filled.handshakeTimeoutMs);
  checkMs('options.hookTimeoutMs', filled.hookTimeoutMs);
  checkMs('options.resumeWindowMs', filled.resumeWindowMs, true);
  checkRange('options.maxStreams', filled.maxStreams, 1, MAX_STREAMS);
  checkOptionalBytes('options.psk', psk);
  if (psk) checkPsk(psk);
  checkOptionalBoolean('options.tls', tls);
  checkOptionalBoolean('options.insecure', insecure);
  checkSignal('options.signal', filled.signal);
  if (tls && !psk) throw new InvalidArgumentError('options.tls needs a pre-shared key (options.psk): TLS-PSK encrypts with it');
  if (tls && tlsCertificates) throw new InvalidArgumentError('options.tls (TLS-PSK) and options.tlsCertificates exclude each other');
  if (tlsCertificates !== undefined) {
    checkObject('options.tlsCertificates', tlsCertificates);
    checkTlsContext('options.tlsCertificates', tlsServerOptions(tlsCertificates));
  }
  // Client certificates a CA of ours signed authenticate the source as well as a key does. A Unix socket
  // is as local as loopback (its file's permissions decide who connects); an embedder's server is its own.
  if (path === undefined && server === undefined && !psk && !tlsCertificates?.ca && !insecure && !isLoopback(host)) {
    throw new InvalidArgumentError(`options.host ${host}: anyone who reaches this address could write the image; give psk ` +
      '(the same key as the source\'s) or tlsCertificates with a ca (to require client certificates), or insecure: true ' +
      'on a network you trust');
  }
  return filled;
}
