import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { CapacityError, InvalidArgumentError, StorageError, asPagewireError, type PagewireError } from '../errors.js';
import { rollForward } from '../target/commit-manifest.js';
import { FileTargetImage } from '../target/target-image.js';
import { MigrationTarget, type TargetSummary } from '../migration/target.js';
import { isLoopback } from '../transport/loopback.js';
import { optionalString, parseFlags, parseEndpoint, parsePositiveNumber, parseSize, repeatedStrings, requireString } from './args.js';
import { fileSha256 } from './file-sha256.js';
import { printJson, printTable, roundMs } from './output.js';
import { abortOnSignals } from './signals.js';
import { SECURITY_FLAGS, readSecurityFlags } from './security-flags.js';

export const RECEIVE_USAGE = 'pagewire receive --listen HOST:PORT|unix:PATH --out FILE [--disk-out FILE]... [--psk-file F [--tls] | --insecure] ' +
  '[--tls-cert F --tls-key F [--tls-ca F]] [--max-size SIZE] [--sparse] [--seed SNAP] [--timeout MS] [--resume-window MS] [--json [--sha256]]';

export async function receiveCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    listen: 'string', out: 'string', 'disk-out': 'strings', insecure: 'boolean', json: 'boolean', sha256: 'boolean', 'max-size': 'string', sparse: 'boolean',
    timeout: 'string', 'resume-window': 'string', seed: 'string', ...SECURITY_FLAGS,
  });
  const endpoint = parseEndpoint(requireString(flags, 'listen'), 'listen');
  const out = resolve(requireString(flags, 'out'));
  // Where the source's extra regions (its `--disk` images, in order) go.
  const diskOuts = repeatedStrings(flags, 'disk-out').map((path) => resolve(path));
  const json = flags.has('json');
  const security = readSecurityFlags(flags);
  // The library refuses the same; the CLI says it in terms of its flags, before anything else is opened.
  // A Unix socket is as local as loopback: its file's permissions decide who connects.
  if ('host' in endpoint && !security.psk && !security.tlsCertificates?.ca && !flags.has('insecure') && !isLoopback(endpoint.host)) {
    throw new InvalidArgumentError(`--listen ${endpoint.host}: anyone who reaches this address could write --out; give --psk-file ` +
      '(the same key as the source\'s) or --tls-ca (to require client certificates), or --insecure on a network you trust');
  }
  const maxSize = optionalString(flags, 'max-size');
  const timeout = optionalString(flags, 'timeout');
  const resumeWindow = optionalString(flags, 'resume-window');
  const outs = [out, ...diskOuts];
  if (new Set(outs).size !== outs.length) throw new InvalidArgumentError('--out and --disk-out must name different files');
  for (const [i, path] of outs.entries()) {
    try {
      accessSync(dirname(path), constants.W_OK);
    } catch {
      throw new StorageError(`--${i === 0 ? 'out' : 'disk-out'}: cannot write in ${dirname(path)}; choose a file in a writable directory`);
    }
  }
  // --sparse: the image may be mostly holes, so its size need not be free (a full disk fails a write later).
  // --seed: start from a snapshot (checked now, so a bad one is refused before listening), so that the
  // source sends only the pages that differ from it.
  const seed = optionalString(flags, 'seed');
  const imageOptions = {
    ...(maxSize ? { maxRegionBytes: parseSize(maxSize, 'max-size') } : {}), ...(flags.has('sparse') ? { checkFreeSpace: false } : {}),
    ...(seed === undefined ? {} : { seed: resolve(seed) }),
  };
  const images = outs.map((path) => new FileTargetImage(path, imageOptions));
  const image = ({ region, regions }: { region: number; regions: number }): FileTargetImage => {
    if (regions !== outs.length) {
      throw new CapacityError(`the source moves ${regions} region(s); this receive takes ${outs.length} (--out, and a --disk-out for each extra one)`);
    }
    return images[region]!;
  };
  // A commit of several files that a crash interrupted is completed first: never serve beside a torn set.
  const completed = await rollForward(out);
  if (completed.length > 0) {
    process.stderr.write(`completed an interrupted commit: ${completed.map(({ to }) => to).join(', ')}\n`);
  }
  const signals = abortOnSignals();
  try {
    // The seed is restored before listening, so the handshake (whose round trip the source measures) does not wait for it.
    if (seed !== undefined) for (const [region, each] of images.entries()) await each.prepareSeed(region);
    const target = await MigrationTarget.listen({
      image, ...endpoint, signal: signals.signal, ...security, insecure: flags.has('insecure'),
      ...(timeout ? { timeoutMs: parsePositiveNumber(timeout, 'timeout', true) } : {}),
      ...(resumeWindow ? { resumeWindowMs: resumeWindow.trim() === '0' ? 0 : parsePositiveNumber(resumeWindow, 'resume-window') } : {}),
    });
    if ('path' in endpoint) {
      process.stderr.write(`listening on unix:${endpoint.path}\n`);
    } else {
      const bound = target.address;
      process.stderr.write(`listening on ${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}\n`);
    }
    target.on('refused', (error, remote) => process.stderr.write(`refused ${remote}: ${error.message} (${error.code})\n`));
    target.on('accepted', (hello, remote) => process.stderr.write(
      `migration ${hello.migrationId.toString('hex')} from ${remote}: ${hello.regionSize} bytes in pages of ${hello.pageSize}` +
      `${hello.extraRegions.map((r) => `, then ${r.regionSize} bytes in pages of ${r.pageSize}`).join('')}\n`));
    target.on('resumed', (count, remote) => process.stderr.write(`resumed from ${remote} (resume ${count}): the connections had broken\n`));
    target.on('round', (r) => {
      if (!json) process.stderr.write(`round=${r.round} pages_applied=${r.pagesApplied} bytes=${r.bytesReceived}\n`);
    });
    try {
      const summary = await target.result;
      // Re-reading what was committed costs about 0.8 s per GiB: only on request.
      const sha256 = flags.has('sha256') ? await fileSha256(out) : undefined;
      if (json) {
        printJson(receiveJson(summary, sha256));
      } else {
        process.stdout.write(`migration ${summary.migrationId} committed to ${out}\n`);
        printTable([
          ['rounds', summary.rounds], ['pages applied', summary.pagesApplied],
          ['bytes received', summary.bytesReceived], ['digest', summary.regionDigest],
          ...(sha256 === undefined ? [] : [['sha256', sha256] as [string, string]]),
        ]);
      }
      return 0;
    } catch (error) {
      const failure = asPagewireError(error);
      const m = target.metrics;
      process.stderr.write(`pagewire receive: ${failure.message} (${failure.code})\n`);
      if (json) printJson(receiveFailureJson(failure, m, flags.has('sha256')));
      return 1;
    } finally {
      for (const each of images) each.discard();
    }
  } finally {
    signals.dispose();
    // A seed restored for a migration that never came (or a listen that failed) is removed.
    for (const each of images) each.releaseSeed();
  }
}

/** The receive JSON of the CLI contract, for a committed migration. */
export function receiveJson(summary: TargetSummary, sha256: string | undefined) {
  return {
    status: summary.status, error: null, regions: summary.regions, pageSize: summary.pageSize, pagesTotal: summary.pagesTotal,
    bytesReceived: summary.bytesReceived, rounds: summary.rounds, pagesApplied: summary.pagesApplied, resumes: summary.resumes,
    totalTimeMs: roundMs(summary.totalTimeMs), prepareMs: roundMs(summary.prepareMs), commitMs: roundMs(summary.commitMs),
    migrationId: summary.migrationId, digest: summary.regionDigest,
    ...(sha256 === undefined ? {} : { sha256 }),
  };
}

/** The receive JSON of a failure; `m` is what the target knew of the migration, if one began. */
export function receiveFailureJson(failure: PagewireError, m: TargetSummary | undefined, sha256: boolean) {
  return {
    status: 'failed', error: failure.message, errorCode: failure.code, pageSize: m?.pageSize ?? null,
    pagesTotal: m?.pagesTotal ?? null, bytesReceived: m?.bytesReceived ?? 0,
    ...(m?.inDoubtImage ? { inDoubtImage: m.inDoubtImage } : {}), digest: null, ...(sha256 ? { sha256: null } : {}),
  };
}
