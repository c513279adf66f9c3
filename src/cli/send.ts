import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { parseRate, parseWorkloadSpec } from '../workload/workload-spec.js';
import { optionalString, parseFlags, parseEndpoint, parsePositiveNumber, parseSize, repeatedStrings, requireString } from './args.js';
import { ProgressLine, printJson, printTable } from './output.js';
import { runSource, sourceJson } from './run-source.js';
import { abortOnSignals } from './signals.js';
import { LZ4_MODES } from '../codec/lz4-policy.js';
import { STALL_POLICIES } from '../migration/convergence.js';
import { MAX_STREAMS } from '../wire/streams.js';
import { SECURITY_FLAGS, oneOf, readSecurityFlags } from './security-flags.js';

function parseStreams(text: string): number {
  const streams = parsePositiveNumber(text, 'streams', true);
  if (streams > MAX_STREAMS) throw new InvalidArgumentError(`--streams: at most ${MAX_STREAMS}, got ${streams}`);
  return streams;
}

export const SEND_USAGE = 'pagewire send --connect HOST:PORT|unix:PATH --image FILE [--disk FILE]... [--workload rate=200MB/s,hot=0.05,seed=1] ' +
  '[--max-downtime MS] [--max-bandwidth MB/s] [--max-rounds N] [--on-stall throttle|stop|fail] [--cache-size 64MiB] ' +
  '[--lz4 adaptive|always|off] ' +
  '[--streams N] [--psk-file F [--tls]] [--tls-ca F [--tls-cert F --tls-key F]] [--json [--sha256]]';

export async function sendCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    connect: 'string', image: 'string', disk: 'strings', workload: 'string', 'max-downtime': 'string', 'max-bandwidth': 'string',
    'max-rounds': 'string', 'cache-size': 'string', streams: 'string', 'on-stall': 'string', lz4: 'string', json: 'boolean',
    sha256: 'boolean', ...SECURITY_FLAGS,
  });
  const endpoint = parseEndpoint(requireString(flags, 'connect'), 'connect');
  if ('port' in endpoint && endpoint.port === 0) throw new InvalidArgumentError('--connect: port 0 is not a port to connect to');
  const imagePath = resolve(requireString(flags, 'image'));
  const diskPaths = repeatedStrings(flags, 'disk').map((path) => resolve(path));
  const json = flags.has('json');
  const security = readSecurityFlags(flags);
  if (security.tlsCertificates && !security.tlsCertificates.ca) {
    throw new InvalidArgumentError('--tls-cert: give --tls-ca too, to check the target\'s certificate');
  }
  const streams = optionalString(flags, 'streams');
  const lz4 = oneOf(flags, 'lz4', LZ4_MODES);
  const onStall = oneOf(flags, 'on-stall', STALL_POLICIES);
  const workloadText = optionalString(flags, 'workload');
  const downtime = optionalString(flags, 'max-downtime');
  const bandwidth = optionalString(flags, 'max-bandwidth');
  const rounds = optionalString(flags, 'max-rounds');
  const cacheSize = optionalString(flags, 'cache-size');
  const signals = abortOnSignals();
  const progress = new ProgressLine();
  try {
    const outcome = await runSource({
      imagePath, diskPaths, endpoint, signal: signals.signal, progress, ...security, sha256: flags.has('sha256'),
      ...(workloadText ? { workload: parseWorkloadSpec(workloadText) } : {}),
      ...(downtime ? { maxDowntimeMs: parsePositiveNumber(downtime, 'max-downtime') } : {}),
      ...(bandwidth ? { maxBandwidthBytesPerSec: parseRate(bandwidth) } : {}),
      ...(rounds ? { maxRounds: parsePositiveNumber(rounds, 'max-rounds', true) } : {}),
      ...(streams ? { streams: parseStreams(streams) } : {}),
      ...(onStall ? { onStall } : {}),
      ...(lz4 ? { lz4 } : {}),
      // 0 turns the page cache (and with it DELTA and DUP) off.
      ...(cacheSize ? { pageCacheBytes: cacheSize.trim() === '0' ? 0 : parseSize(cacheSize, 'cache-size') } : {}),
    });
    const s = outcome.summary;
    if (outcome.error) process.stderr.write(`pagewire send: ${outcome.error.message} (${outcome.error.code})\n`);
    if (json) printJson(sourceJson(outcome));
    else if (!outcome.error) {
      process.stdout.write(`migration ${s.migrationId} completed\n`);
      printTable([
        ['rounds', s.rounds], ['streams', s.streams], ['regions', s.regions], ['throttle', `${s.throttlePercent}%`], ['total time', `${s.totalTimeMs.toFixed(0)} ms`], ['downtime', `${s.downtimeMs.toFixed(1)} ms`],
        ['pages sent', `${s.pagesTransferred} of ${s.pagesTotal}`],
        ['encodings', `${s.zeroPages} zero, ${s.deltaPages} delta, ${s.dupPages} dup, ${s.lz4Pages} lz4, ${s.rawPages} raw`],
        ['bytes sent', s.bytesTransferred], ['digest', s.regionDigest],
        ...(outcome.sha256 ? [['sha256', outcome.sha256] as [string, string]] : []),
      ]);
    }
    return outcome.error ? 1 : 0;
  } finally {
    signals.dispose();
  }
}
