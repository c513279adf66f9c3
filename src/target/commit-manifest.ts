// Commits several image files as one (docs/PROTOCOL.md, "Several regions"). Before the first rename, a
// manifest listing every rename is made durable beside the first file; the renames follow, then the
// manifest goes. A crash in between leaves the manifest, and rollForward() (FileTargetImage.open() and
// `receive` at start run it) does the renames still pending: the files are never left part old, part new.
import { access, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StorageError } from '../errors.js';
import { fsyncDirectory, writeFileDurably } from './durable-files.js';

/** A temp image and the file it becomes. */
export interface ImageRename {
  from: string;
  to: string;
}

/** Where the manifest of a commit whose first file is `firstOut` lives. */
export function commitManifestPath(firstOut: string): string {
  return join(dirname(firstOut), `.${basename(firstOut)}.pagewire-commit`);
}

/**
 * The commit's first step: once this returns, the commit is decided (a crash after it is rolled forward).
 * Returns the manifest's path; applyCommitManifest() does the renames.
 */
export async function writeCommitManifest(renames: ImageRename[]): Promise<string> {
  const manifest = commitManifestPath(renames[0]!.to);
  try {
    await writeFileDurably(manifest, JSON.stringify({ pagewireCommit: 1, renames }));
  } catch (cause) {
    throw new StorageError(`cannot write the commit manifest ${manifest}: ${(cause as Error).message}; nothing was committed`, { cause });
  }
  return manifest;
}

/**
 * Completes a commit that a crash interrupted, if `firstOut` has a manifest: returns the renames it
 * covered (none without a manifest).
 */
export async function rollForward(firstOut: string): Promise<ImageRename[]> {
  const manifest = commitManifestPath(firstOut);
  let text: string;
  try {
    text = await readFile(manifest, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new StorageError(`cannot read the commit manifest ${manifest}: ${(cause as Error).message}`, { cause });
  }
  const renames = parseManifest(text, manifest);
  await applyCommitManifest(manifest, renames);
  return renames;
}

function parseManifest(text: string, manifest: string): ImageRename[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const renames = (parsed as { pagewireCommit?: unknown; renames?: unknown } | undefined)?.renames;
  const valid = (parsed as { pagewireCommit?: unknown } | undefined)?.pagewireCommit === 1 && Array.isArray(renames) && renames.length > 0 &&
    renames.every((r: unknown) => typeof (r as ImageRename)?.from === 'string' && typeof (r as ImageRename)?.to === 'string');
  if (!valid) throw new StorageError(`the commit manifest ${manifest} is damaged; its images were not committed, check them by hand`);
  return renames as ImageRename[];
}

/** The commit's second step: every rename, then the manifest goes. */
export async function applyCommitManifest(manifest: string, renames: ImageRename[]): Promise<void> {
  for (const { from, to } of renames) {
    try {
      await rename(from, to);
    } catch (cause) {
      // Renamed before the crash: the temp is gone and its file is there.
      const code = (cause as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' || !(await exists(to))) {
        throw new StorageError(`cannot commit ${to}: ${(cause as Error).message}; the commit completes when this target starts again ` +
          `(manifest ${manifest})`, { cause });
      }
    }
  }
  for (const dir of new Set(renames.map(({ to }) => dirname(to)))) await fsyncDirectory(dir);
  await unlink(manifest);
  await fsyncDirectory(dirname(manifest));
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
