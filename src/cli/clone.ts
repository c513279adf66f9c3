// `pagewire clone`: a copy of a snapshot file that shares its blocks where the file system can (a
// reflink), else a sparse copy.
import { performance } from 'node:perf_hooks';
import { cloneSnapshot } from '../snapshot/snapshot-clone.js';
import { oneFileThenFlags, parseFlags, requireString } from './args.js';
import { printJson, roundMs } from './output.js';

export const CLONE_USAGE = 'pagewire clone SNAP --out NEW [--json]';

export async function cloneCommand(argv: string[]): Promise<number> {
  const { file, flags: flagArgs } = oneFileThenFlags(argv, 'snapshot to clone', CLONE_USAGE);
  const flags = parseFlags(flagArgs, { out: 'string', json: 'boolean' });
  const out = requireString(flags, 'out');
  const started = performance.now();
  const clone = await cloneSnapshot(file, out);
  const totalTimeMs = performance.now() - started;
  if (flags.has('json')) printJson({ status: 'completed', path: clone.path, method: clone.method, fileBytes: clone.fileBytes, totalTimeMs: roundMs(totalTimeMs) });
  else process.stdout.write(`cloned ${file} to ${clone.path} (${clone.method}, ${totalTimeMs.toFixed(1)} ms)\n`);
  return 0;
}
