import { resolve } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { parseFlags, parsePositiveNumber, optionalString } from './args.js';
import { fileDigest } from './file-digest.js';
import { printJson } from './output.js';

export const DIGEST_USAGE = 'pagewire digest FILE [--page-size 4096] [--json]';

/** Prints a file's region digest, to check an image against a send or receive report. */
export async function digestCommand(argv: string[]): Promise<number> {
  const [file, ...rest] = argv;
  if (file === undefined || file.startsWith('--')) throw new InvalidArgumentError(`name the image file: ${DIGEST_USAGE}`);
  const flags = parseFlags(rest, { 'page-size': 'string', json: 'boolean' });
  const pageSizeText = optionalString(flags, 'page-size');
  const pageSize = pageSizeText === undefined ? 4096 : parsePositiveNumber(pageSizeText, 'page-size', true);
  const result = fileDigest(resolve(file), pageSize);
  if (flags.has('json')) printJson({ status: 'completed', ...result });
  else process.stdout.write(`${result.digest}  ${file}\n`);
  return 0;
}
