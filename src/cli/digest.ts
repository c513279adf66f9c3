import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { parseFlags, parsePositiveNumber, optionalString, splitPositional } from './args.js';
import { fileDigest } from './file-digest.js';
import { printJson } from './output.js';
import { formatDigest, migrationDigest } from '../codec/page-hashes.js';

export const DIGEST_USAGE = 'pagewire digest FILE [FILE...] [--page-size 4096] [--json]';

/**
 * Prints a file's region digest, to check an image against a send or receive report. Several files (a
 * migration's `--image` then its `--disk`s, or `--out` then its `--disk-out`s) give the one digest such a
 * migration reports: the XXH64 of their region digests.
 */
export async function digestCommand(argv: string[]): Promise<number> {
  const { positional: files, flags: flagArgs } = splitPositional(argv);
  if (files.length === 0) throw new InvalidArgumentError(`name the image file: ${DIGEST_USAGE}`);
  const flags = parseFlags(flagArgs, { 'page-size': 'string', json: 'boolean' });
  const pageSizeText = optionalString(flags, 'page-size');
  const pageSize = pageSizeText === undefined ? 4096 : parsePositiveNumber(pageSizeText, 'page-size', true);
  const results = files.map((file) => fileDigest(resolve(file), pageSize));
  const result = results.length === 1 ? results[0]! : {
    digest: formatDigest(migrationDigest(results.map((r) => BigInt(`0x${r.digest}`)))),
    pageSize, pagesTotal: results.reduce((n, r) => n + r.pagesTotal, 0), regions: results.length,
  };
  if (flags.has('json')) printJson({ status: 'completed', ...result });
  else process.stdout.write(`${result.digest}  ${files.join(' ')}\n`);
  return 0;
}
