import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { parseRate, parseWorkloadSpec } from '../workload/workload-spec.js';
import { optionalString, parseFlags, parseHostPort, parsePositiveNumber, parseSize, requireString } from './args.js';
import { ProgressLine, printJson, printTable } from './output.js';
import { runSource, sourceJson } from './run-source.js';
import { abortOnSignals } from './signals.js';
import { readPskFile } from '../transport/psk-auth.js';

export const SEND_USAGE = 'pagewire send --connect HOST:PORT --image FILE [--workload rate=200MB/s,hot=0.05,seed=1] ' +
  '[--max-downtime MS] [--max-bandwidth MB/s] [--max-rounds N] [--cache-size 64MiB] [--streams 1] [--psk-file F [--tls]] [--json]';

export async function sendCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    connect: 'string', image: 'string', workload: 'string', 'max-downtime': 'string', 'max-bandwidth': 'string',
    'max-rounds': 'string', 'cache-size': 'string', streams: 'string', tls: 'boolean', 'psk-file': 'string', json: 'boolean',
  });
  const { host, port } = parseHostPort(requireString(flags, 'connect'), 'connect');
  if (port === 0) throw new InvalidArgumentError('--connect: port 0 is not a port to connect to');
  const imagePath = resolve(requireString(flags, 'image'));
  const json = flags.has('json');
  const pskFile = optionalString(flags, 'psk-file');
  const psk = pskFile ? readPskFile(pskFile) : undefined;
  if (flags.has('tls') && !psk) throw new InvalidArgumentError('--tls: TLS-PSK needs the key: give --psk-file too');
  const streams = optionalString(flags, 'streams');
  if (streams !== undefined && parsePositiveNumber(streams, 'streams', true) !== 1) {
    throw new InvalidArgumentError('--streams: this version migrates over one stream; use --streams 1 or leave it out');
  }
  const workloadText = optionalString(flags, 'workload');
  const downtime = optionalString(flags, 'max-downtime');
  const bandwidth = optionalString(flags, 'max-bandwidth');
  const rounds = optionalString(flags, 'max-rounds');
  const cacheSize = optionalString(flags, 'cache-size');
  const signals = abortOnSignals();
  const progress = new ProgressLine();
  try {
    const outcome = await runSource({
      imagePath, host, port, signal: signals.signal, progress, psk, tls: flags.has('tls'),
      ...(workloadText ? { workload: parseWorkloadSpec(workloadText) } : {}),
      ...(downtime ? { maxDowntimeMs: parsePositiveNumber(downtime, 'max-downtime') } : {}),
      ...(bandwidth ? { maxBandwidthBytesPerSec: parseRate(bandwidth) } : {}),
      ...(rounds ? { maxRounds: parsePositiveNumber(rounds, 'max-rounds', true) } : {}),
      // 0 turns the page cache (and with it DELTA and DUP) off.
      ...(cacheSize ? { pageCacheBytes: cacheSize.trim() === '0' ? 0 : parseSize(cacheSize, 'cache-size') } : {}),
    });
    const s = outcome.summary;
    if (outcome.error) process.stderr.write(`pagewire send: ${outcome.error.message} (${outcome.error.code})\n`);
    if (json) printJson(sourceJson(outcome));
    else if (!outcome.error) {
      process.stdout.write(`migration ${s.migrationId} completed\n`);
      printTable([
        ['rounds', s.rounds], ['total time', `${s.totalTimeMs.toFixed(0)} ms`], ['downtime', `${s.downtimeMs.toFixed(1)} ms`],
        ['pages sent', `${s.pagesTransferred} of ${s.pagesTotal}`],
        ['encodings', `${s.zeroPages} zero, ${s.deltaPages} delta, ${s.dupPages} dup, ${s.lz4Pages} lz4, ${s.rawPages} raw`],
        ['bytes sent', s.bytesTransferred], ['sha256', outcome.sha256],
      ]);
    }
    return outcome.error ? 1 : 0;
  } finally {
    signals.dispose();
  }
}
