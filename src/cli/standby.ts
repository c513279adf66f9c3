// `pagewire standby`: holds a replica of a primary's workload and takes over when the primary falls
// silent: --out then holds the last committed epoch (durable), --on-activate runs, and the last line
// says which epoch, its digest, and how long detection and activation took.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError, StorageError, asPagewireError } from '../errors.js';
import { StandbyClaim } from '../replication/standby-claim.js';
import { Standby, type Activation } from '../replication/standby.js';
import { isLoopback } from '../transport/loopback.js';
import { optionalString, parseFlags, parseHostPort, parsePositiveNumber, requireString } from './args.js';
import { COORDINATOR_FLAGS, readCoordinatorFlags } from './coordinator-flags.js';
import { printJson, roundMs } from './output.js';
import { NO_COORDINATOR_WARNING } from './replicate.js';
import { SECURITY_FLAGS, readSecurityFlags } from './security-flags.js';
import { abortOnSignals } from './signals.js';

export const STANDBY_USAGE = 'pagewire standby --listen HOST:PORT --out FILE [--failover-timeout MS] [--on-activate CMD] ' +
  '[--etcd URL --name N] [--psk-file F [--tls] | --tls-cert F --tls-key F [--tls-ca F] | --insecure] [--json]';

export async function standbyCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    listen: 'string', out: 'string', 'failover-timeout': 'string', 'on-activate': 'string', insecure: 'boolean', json: 'boolean',
    ...COORDINATOR_FLAGS, ...SECURITY_FLAGS,
  });
  const { host, port } = parseHostPort(requireString(flags, 'listen'), 'listen');
  const out = resolve(requireString(flags, 'out'));
  const json = flags.has('json');
  const security = readSecurityFlags(flags);
  if (!security.psk && !security.tlsCertificates?.ca && !flags.has('insecure') && !isLoopback(host)) {
    throw new InvalidArgumentError(`--listen ${host}: anyone who reaches this address could feed --out; give --psk-file ` +
      '(the primary\'s key) or --insecure on a network you trust');
  }
  try {
    accessSync(dirname(out), constants.W_OK);
  } catch {
    throw new StorageError(`--out: cannot write in ${dirname(out)}; choose a file in a writable directory`);
  }
  const coordinator = readCoordinatorFlags(flags);
  const failoverText = optionalString(flags, 'failover-timeout');
  const onActivate = optionalString(flags, 'on-activate');
  if (!coordinator) process.stderr.write(`pagewire standby: ${NO_COORDINATOR_WARNING}\n`);
  const signals = abortOnSignals();
  const standby = new Standby({
    host, port, out, ...security, signal: signals.signal,
    ...(failoverText ? { failoverTimeoutMs: parsePositiveNumber(failoverText, 'failover-timeout') } : {}),
    ...(coordinator ? { claim: new StandbyClaim(coordinator.client, coordinator.name, Standby.copyName(out)) } : {}),
    hooks: onActivate ? { onActivate: (activation) => runActivateCommand(onActivate, activation) } : {},
  });
  standby.on('listening', (a) => process.stderr.write(`listening on ${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}\n`));
  standby.on('refused', (error, remote) => process.stderr.write(`refused ${remote}: ${error.message} (${error.code})\n`));
  standby.on('connected', ({ remote }) => process.stderr.write(`primary ${remote} connected\n`));
  standby.on('synced', ({ epoch, pages }) => process.stderr.write(`sync epoch ${epoch}: ${pages} pages\n`));
  standby.on('lost', (error) => process.stderr.write(`primary lost: ${error.message} (${error.code}); holding the last committed epoch\n`));
  standby.on('primary-alive', () => process.stderr.write('the primary is silent, but etcd shows its lease alive: not activating\n'));
  standby.on('coordinator-unreachable', (error) => process.stderr.write(`the primary is silent, and etcd cannot be asked (${error.message}): ` +
    'not activating without its word that the primary\'s lease is gone\n'));
  try {
    const report = await standby.run();
    if (json) {
      printJson({
        status: 'activated', epoch: report.epoch, digest: report.digest, detectMs: roundMs(report.detectMs),
        activateMs: roundMs(report.activateMs), token: report.token, out: report.out,
      });
    } else {
      process.stdout.write(`activated epoch ${report.epoch} (digest ${report.digest}) into ${report.out}: ` +
        `detected in ${roundMs(report.detectMs)} ms, activated in ${roundMs(report.activateMs)} ms\n`);
    }
    return 0;
  } catch (error) {
    const failure = asPagewireError(error);
    process.stderr.write(`pagewire standby: ${failure.message} (${failure.code})\n`);
    if (json) printJson({ status: 'failed', error: failure.message, errorCode: failure.code });
    return 1;
  } finally {
    signals.dispose();
  }
}

/** --on-activate: a shell command told what it runs from; activation waits for it to exit 0. */
function runActivateCommand(command: string, activation: Activation): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('/bin/sh', ['-c', command], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env, PAGEWIRE_OUT: activation.out, PAGEWIRE_EPOCH: String(activation.epoch), PAGEWIRE_DIGEST: activation.digest,
        PAGEWIRE_TOKEN: String(activation.token),
      },
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`--on-activate exited with ${signal ?? `code ${code}`}`));
    });
  });
}
