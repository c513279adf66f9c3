// Making file-system changes durable: a rename or a new file is durable only once its directory is.
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StorageError } from '../errors.js';

export async function fsyncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try { await handle.sync(); } finally { await handle.close(); }
  } catch (cause) {
    throw new StorageError(`cannot make the directory ${dir} durable: ${(cause as Error).message}`, { cause });
  }
}

/** Writes a small file whole and durably: to a temp beside it, fsynced, renamed over `path`, its directory fsynced. */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp`;
  const handle = await open(temp, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  await fsyncDirectory(dirname(path));
}
